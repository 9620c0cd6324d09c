"""Unlearning metrics: accuracies (overall, per class, worst retained class), the loss-based
membership-inference attack, the forgetting rate, and gaps to the retrained reference.

Definitions follow papers.md ("Shared evaluation"). The MIA is the simple standard attack: a
logistic regression on per-sample cross-entropy and softmax entropy, fitted to tell retain-train
samples (members) from test samples (non-members); it is applied to the forget set.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import StratifiedKFold
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from torch import nn

from hyperforget.base.errors import DataError
from hyperforget.data.datasets import Dataset, ForgetSplit
from hyperforget.models.nets import ModelSpec, batched_logits, generated_part, param_layout, predict, unflatten

SCALAR_KEYS = ("forget_acc", "retain_acc", "test_acc", "test_retained_acc", "test_forgotten_acc",
               "worst_retained_acc", "mia", "mia_attack_acc")


def accuracy(logits: torch.Tensor, y: torch.Tensor) -> float:
    return (logits.argmax(1) == y).float().mean().item() if len(y) else float("nan")


def per_class_accuracy(logits: torch.Tensor, y: torch.Tensor, num_classes: int) -> list[float]:
    """Accuracy of each class (NaN for a class with no samples)."""
    hit = logits.argmax(1) == y
    return [hit[y == c].float().mean().item() if (y == c).any() else float("nan") for c in range(num_classes)]


@torch.no_grad()
def class_metrics(spec: ModelSpec, weights: torch.Tensor, x: torch.Tensor, y: torch.Tensor,
                  chunk: int = 64, cut: str = "all") -> tuple[torch.Tensor, torch.Tensor]:
    """Per-class mean cross-entropy and accuracy [R, C] of R flat weight vectors, vmapped in chunks. With a
    `cut` (hypernet.generate), the vectors hold only the generated layers and x is the frozen part's features."""
    template = spec.build().to("meta")
    layout = param_layout(template) if cut == "all" else generated_part(template, cut).layout
    onehot = F.one_hot(y, spec.num_classes).float()
    counts = onehot.sum(0)
    if (counts == 0).any():
        raise DataError(f"classes {(counts == 0).nonzero().flatten().tolist()} have no samples in a split")
    losses, accs = [], []
    for w in weights.float().split(chunk):
        logits = batched_logits(template, unflatten(w, layout), x, shared=True, cut=cut)  # [r, B, C]
        ce = -logits.log_softmax(-1).gather(-1, y.expand(len(w), -1)[..., None]).squeeze(-1)
        losses.append(ce @ onehot / counts)
        accs.append((logits.argmax(-1) == y).float() @ onehot / counts)
    return torch.cat(losses), torch.cat(accs)


def attack_features(logits: torch.Tensor, y: torch.Tensor) -> np.ndarray:
    """Per-sample [cross-entropy, softmax entropy]: what the loss-based MIA sees."""
    loss = F.cross_entropy(logits, y, reduction="none")
    logp = F.log_softmax(logits, 1)
    entropy = -(logp.exp() * logp).sum(1)
    return torch.stack([loss, entropy], 1).double().numpy()


def _balanced(a: np.ndarray, b: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    n = min(len(a), len(b))
    return a[rng.choice(len(a), n, replace=False)], b[rng.choice(len(b), n, replace=False)]


@dataclass
class MembershipAttack:
    """Logistic regression on loss + entropy, fitted on members vs non-members of equal size."""

    clf: object

    @classmethod
    def fit(cls, members: np.ndarray, nonmembers: np.ndarray, seed: int = 0) -> MembershipAttack:
        m, n = _balanced(members, nonmembers, np.random.default_rng(seed))
        x = np.concatenate([m, n])
        y = np.concatenate([np.ones(len(m)), np.zeros(len(n))])
        return cls(make_pipeline(StandardScaler(), LogisticRegression()).fit(x, y))

    def is_member(self, features: np.ndarray) -> np.ndarray:
        return self.clf.predict(features).astype(bool)


def attack_accuracy(a: np.ndarray, b: np.ndarray, splits: int = 10, seed: int = 0) -> float:
    """Mean held-out accuracy of a logistic regression telling `a` from `b` (equal-size subsamples);
    0.5 means the two sets are indistinguishable by these features (∇τ's evaluation)."""
    rng = np.random.default_rng(seed)
    a, b = _balanced(a, b, rng)
    if len(a) < splits:
        return float("nan")
    x = np.concatenate([a, b])
    y = np.concatenate([np.ones(len(a)), np.zeros(len(b))])
    scores = []
    for tr, te in StratifiedKFold(splits, shuffle=True, random_state=seed).split(x, y):
        clf = make_pipeline(StandardScaler(), LogisticRegression()).fit(x[tr], y[tr])
        scores.append(clf.score(x[te], y[te]))
    return float(np.mean(scores))


def forgetting_rate(member_before: np.ndarray, member_after: np.ndarray) -> dict[str, float]:
    """Forsaken's forgetting rate over D_f, with one fixed attack judging before and after.

    FR = (B_a − B_b) / A_b, clipped to [0, 1]; beside it the per-sample version
    #{member before ∧ non-member after} / #{member before}.
    """
    a_b = int(member_before.sum())
    if a_b == 0:
        return {"forgetting_rate": float("nan"), "forgetting_rate_per_sample": float("nan")}
    b_b = int((~member_before).sum())
    b_a = int((~member_after).sum())
    fr = min(1.0, max(0.0, (b_a - b_b) / a_b))
    per_sample = float((member_before & ~member_after).sum() / a_b)
    return {"forgetting_rate": fr, "forgetting_rate_per_sample": per_sample}


@dataclass
class Evaluator:
    """Evaluates models on one request; holds the fixed attack fitted on the original model."""

    data: Dataset
    split: ForgetSplit
    fixed_attack: MembershipAttack
    member_before: np.ndarray
    mia_splits: int = 10
    seed: int = 0

    @classmethod
    def for_original(cls, original: nn.Module, data: Dataset, split: ForgetSplit, mia_splits: int = 10,
                     seed: int = 0) -> Evaluator:
        return cls.for_original_logits(predict(original, data.x_train), predict(original, data.x_test), data, split,
                                       mia_splits, seed)

    @classmethod
    def for_original_logits(cls, train_logits: torch.Tensor, test_logits: torch.Tensor, data: Dataset,
                            split: ForgetSplit, mia_splits: int = 10, seed: int = 0) -> Evaluator:
        """`for_original` from θ0's logits on the train and test splits (`models.outputs` keeps them)."""
        y = data.y_train
        retain = attack_features(train_logits[split.retain_idx], y[split.retain_idx])
        attack = MembershipAttack.fit(retain, attack_features(test_logits, data.y_test), seed)
        member = attack.is_member(attack_features(train_logits[split.forget_idx], y[split.forget_idx]))
        return cls(data, split, attack, member, mia_splits, seed)

    def report(self, model: nn.Module) -> dict:
        return self.report_logits(predict(model, self.data.x_train), predict(model, self.data.x_test))

    def report_logits(self, train_logits: torch.Tensor, test_logits: torch.Tensor) -> dict:
        """`report` of the model whose logits on the train and test splits these are (the reference pool keeps
        its membership shadows' logits, so a record request scores none of them)."""
        d, s = self.data, self.split
        f, r = s.forget_idx, s.retain_idx
        per_class = per_class_accuracy(test_logits, d.y_test, d.num_classes)
        retained = s.retained_classes(d.num_classes)
        out = {
            "forget_acc": accuracy(train_logits[f], d.y_train[f]),
            "retain_acc": accuracy(train_logits[r], d.y_train[r]),
            "test_acc": accuracy(test_logits, d.y_test),
            "per_class_test_acc": per_class,
        }
        if s.classes is not None:
            kept = torch.isin(d.y_test, torch.tensor(retained))
            out["test_retained_acc"] = accuracy(test_logits[kept], d.y_test[kept])
            out["test_forgotten_acc"] = accuracy(test_logits[~kept], d.y_test[~kept])
            same_class_test = ~kept
        else:  # a record request: D_f is a handful of records, and its count sets how far its rates spread
            out["test_retained_acc"] = out["test_acc"]
            out["test_forgotten_acc"] = float("nan")
            out["forget_records"] = len(f)
            same_class_test = torch.ones_like(d.y_test, dtype=torch.bool)
        worst = min(retained, key=lambda c: per_class[c] if not math.isnan(per_class[c]) else 2.0)
        out["worst_retained_class"], out["worst_retained_acc"] = worst, per_class[worst]
        feats = {
            "retain": attack_features(train_logits[r], d.y_train[r]),
            "forget": attack_features(train_logits[f], d.y_train[f]),
            "test": attack_features(test_logits, d.y_test),
        }
        own = MembershipAttack.fit(feats["retain"], feats["test"], self.seed)
        out["mia"] = float(own.is_member(feats["forget"]).mean())
        out["mia_attack_acc"] = attack_accuracy(feats["forget"][:, :1], feats["test"][same_class_test.numpy()][:, :1],
                                                self.mia_splits, self.seed)
        out.update(forgetting_rate(self.member_before, self.fixed_attack.is_member(feats["forget"])))
        return out


def summarise(reports: Sequence[dict]) -> dict[str, dict[str, float]]:
    """Mean and standard deviation of every scalar metric over several models (e.g. retrain seeds)."""
    out = {}
    for key in (*SCALAR_KEYS, "forgetting_rate"):
        vals = np.array([r[key] for r in reports if key in r], dtype=float)
        if len(vals):
            out[key] = {"mean": float(np.nanmean(vals)) if not np.isnan(vals).all() else float("nan"),
                        "std": float(np.nanstd(vals)) if not np.isnan(vals).all() else float("nan")}
    return out


def gaps(report: dict, reference: dict[str, dict[str, float]]) -> dict[str, float]:
    """|metric − reference mean| per scalar metric, and their mean as `avg_gap`."""
    out = {}
    for key in SCALAR_KEYS:
        if key in report and key in reference and not math.isnan(report[key]) \
                and not math.isnan(reference[key]["mean"]):
            out[f"gap_{key}"] = abs(report[key] - reference[key]["mean"])
    out["avg_gap"] = float(np.mean(list(out.values()))) if out else float("nan")
    return out
