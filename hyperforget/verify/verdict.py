"""Honest verification of an unlearned model: what output metrics alone cannot certify (papers.md §5).

Three probes, each compared with the models retrained from scratch without D_f (the reference):
- **LiRA, offline** (Carlini et al. 2022; U-LiRA, Hayes et al. 2024): per example of D_f, a Gaussian
  fitted to φ = log(p_y / (1 − p_y)) over "out" shadow models (retrains that never saw D_f); the model
  under test scores z = (φ − μ) / σ, higher = more likely trained on the example. Its gated `lira_auc`
  is the mean over D_f of Φ(z): the AUC of the model against the out population, 0.5 for a model that
  forgot like a retrain. Beside it: the AUC of its scores against a *held-out* retrain seed's scores,
  and the TPR at 1% FPR with the threshold set on the held-out's scores; on class requests those two
  swing between ~0 and ~1 for two retrain seeds (a per-model offset of the forgotten logit dominates φ),
  so they are reported, not gated (numbers: `VerificationGates`).
  The test is one-sided: a model that pushes D_f further out than a retrain would (over-forgetting,
  SCRUB here) scores AUC < 0.5 and passes it; the output metrics' gaps to retrain see that case.
  Few shadows: with K shadows the per-example variance has K − 1 degrees of freedom, so it is floored
  by the mean variance over all examples (Carlini et al.'s "global variance", their advice below 64
  shadows) and an absolute `lira_min_var`. The reference models are the shadows: 2 in the unit tests
  and the calibration, ≥ 3 recommended (papers.md's retrain reference).
- **Linear probe** (Gao et al. 2026): logistic regression on the penultimate features (`model.features`),
  trained on a class-balanced draw from the validation split (held-out data, forgotten classes included),
  scored on the test split's forgotten classes. Head-only "unlearning" leaves the features, so the probe
  recovers the class (on digits a retrain's features hold most of it too: see `VerificationGates`).
- **Relearn time** (arXiv 2506.01318: even a retrain relearns): Adam, fixed lr, on m examples of D_f as
  one full batch per step, counting steps until the forgotten classes' test accuracy reaches
  `relearn_target`. 0 = the model already classifies them; `relearn_max_steps + 1` = never within budget.
  Only the forgotten examples are shown, so any model eventually predicts the class everywhere: the
  number is a speed to compare with the reference, never an absolute.

Probe and relearn need forgotten *classes*; for random-subset requests they are reported as None and
not gated. Everything here is deterministic given the seed (CPU).

Where the reference comes from: the K ≥ 3 retrains of `evaluation.retrain_seeds` (`shadows_and_held_out`:
the first K − 1 are the shadows and the probe/relearn reference, the last the held-out seed); the request
path caches them as safetensors beside the reference summary (`Artifacts.reference_models`), `compare`
trains them once per run. The checks themselves live in `gates` (`gates.verification_checks`), so the
release gates judge output metrics and verification in one place.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from scipy.special import ndtr
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from torch import nn

from hyperforget.base.errors import ConfigError, DataError
from hyperforget.config.options import VerificationGates, VerificationOptions
from hyperforget.data.datasets import Dataset, ForgetSplit
from hyperforget.models.metrics import accuracy
from hyperforget.models.nets import predict
from hyperforget.verify.gates import verification_checks as gate_checks

_EPS = 1e-9  # float noise never decides a check


# ---------- LiRA ----------


@torch.no_grad()
def true_class_logit(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> np.ndarray:
    """φ = log(p_y / (1 − p_y)) per example, computed stably as z_y − logsumexp_{j≠y} z_j (float64)."""
    logits = predict(model, x).double()
    z_y = logits.gather(1, y[:, None]).squeeze(1)
    others = logits.scatter(1, y[:, None], float("-inf"))
    return (z_y - torch.logsumexp(others, 1)).numpy()


def lira_scores(shadow_models: Sequence[nn.Module], target_model: nn.Module, x: torch.Tensor, y: torch.Tensor,
                min_var: float = 1e-2) -> np.ndarray:
    """Offline LiRA z-scores of `target_model` on (x, y) against "out" shadows (higher = more likely "in").

    Per example: μ, σ² of φ over the shadows (unbiased), σ² floored by the mean σ² over examples and by
    `min_var`; score = (φ_target − μ) / σ, monotone in the one-sided likelihood ratio of the offline attack.
    """
    if len(shadow_models) < 2:
        raise ConfigError(f"LiRA needs at least 2 shadow (retrain) models to fit a variance, got {len(shadow_models)}")
    phis = np.stack([true_class_logit(m, x, y) for m in shadow_models])  # [K, N]
    return _z(true_class_logit(target_model, x, y), phis, min_var)


def _z(phi: np.ndarray, shadow_phis: np.ndarray, min_var: float) -> np.ndarray:
    """`lira_scores` on precomputed φ: target [N], shadows [K, N]."""
    mu, var = shadow_phis.mean(0), shadow_phis.var(0, ddof=1)
    return (phi - mu) / np.sqrt(np.maximum(var, max(float(var.mean()), min_var)))


def auc(positive: np.ndarray, negative: np.ndarray) -> float:
    """P(score of a positive > score of a negative), ties counting ½ (ROC AUC)."""
    labels = np.r_[np.ones(len(positive)), np.zeros(len(negative))]
    return float(roc_auc_score(labels, np.r_[positive, negative]))


def tpr_at_fpr(positive: np.ndarray, negative: np.ndarray, fpr: float = 0.01) -> float:
    """TPR with the threshold set on the negatives: the smallest value among the negatives that at most
    ⌊fpr · n⌋ negatives exceed; a positive counts when it is strictly above it."""
    neg = np.sort(np.asarray(negative, dtype=float))
    allowed = math.floor(fpr * len(neg) + 1e-12)
    threshold = neg[len(neg) - allowed - 1]
    return float((np.asarray(positive) > threshold).mean())


def population_auc(scores: np.ndarray) -> float:
    """Mean over examples of Φ(z): per example, the probability that the scored model's φ exceeds a fresh
    "out" model's under the fitted Gaussian; averaged, the AUC against the out population (0.5 = out)."""
    return float(ndtr(np.asarray(scores, dtype=float)).mean())


def lira_audit(shadows: Sequence[nn.Module], held_out_retrain: nn.Module, target: nn.Module,
               x_forget: torch.Tensor, y_forget: torch.Tensor, min_var: float = 1e-2) -> dict[str, float]:
    """Per-example LiRA on D_f: how well it tells `target` from models that never saw D_f.

    - `auc`: AUC of `target` against the out population the shadows fit (`population_auc`);
    - `auc_vs_held_out`: AUC of the target's scores against the held-out retrain's scores;
    - `tpr_at_1fpr`: TPR at 1% FPR, the threshold set on the held-out retrain's scores;
    - `held_out_auc`: the held-out retrain's own `auc`, a check on the shadows (it should pass the gate).
    Why `auc` is the gated one: for class requests φ on D_f is dominated by a per-model offset (how far
    a model that never saw the class pushes its logit down), so two retrain seeds' score sets barely
    overlap and `auc_vs_held_out` between them lands anywhere in [0, 1] (see `VerificationGates`).
    """
    s_target = lira_scores(shadows, target, x_forget, y_forget, min_var)
    s_held = lira_scores(shadows, held_out_retrain, x_forget, y_forget, min_var)
    return {"auc": population_auc(s_target), "auc_vs_held_out": auc(s_target, s_held),
            "tpr_at_1fpr": tpr_at_fpr(s_target, s_held, 0.01), "held_out_auc": population_auc(s_held),
            "n_shadows": len(shadows)}


def weights_finite(model: nn.Module) -> bool:
    """False when any parameter is NaN or ±inf: what a diverged unlearning method leaves (nothing to measure)."""
    return all(bool(torch.isfinite(p).all()) for p in model.parameters())


def _unmeasured_lira(n_shadows: int) -> dict[str, float]:
    """`lira_audit`'s keys for a target that cannot be scored (non-finite weights): NaN, which every gate
    fails as "not measured"."""
    nan = float("nan")
    return {"auc": nan, "auc_vs_held_out": nan, "tpr_at_1fpr": nan, "held_out_auc": nan, "n_shadows": n_shadows}


# ---------- linear probe ----------


def _balanced_draw(y: torch.Tensor, per_class: int | None, gen: torch.Generator) -> torch.Tensor:
    classes = y.unique().tolist()
    n = min(int((y == c).sum()) for c in classes)
    n = n if per_class is None else min(n, per_class)
    picks = []
    for c in classes:
        idx = (y == c).nonzero().flatten()
        picks.append(idx[torch.randperm(len(idx), generator=gen)[:n]])
    return torch.cat(picks).sort().values


def probe_sets(data: Dataset, seed: int, per_class: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor,
                                                                  torch.Tensor]:
    """Class-balanced probe sets: train = `per_class` examples per class from the validation split (capped by
    its rarest class), test = the test split balanced to its rarest class. Forgotten classes included."""
    gen = torch.Generator().manual_seed(seed)
    tr = _balanced_draw(data.y_val, per_class, gen)
    te = _balanced_draw(data.y_test, None, gen)
    if len(data.y_val[tr].unique()) < data.num_classes:
        raise DataError("the validation split lacks some classes; the probe needs every class in it")
    return data.x_val[tr], data.y_val[tr], data.x_test[te], data.y_test[te]


@torch.no_grad()
def _features(model: nn.Module, x: torch.Tensor) -> np.ndarray:
    model.eval()
    return model.features(x).double().numpy()


def probe_accuracy(model: nn.Module, x_probe_train: torch.Tensor, y_probe_train: torch.Tensor,
                   x_probe_test: torch.Tensor, y_probe_test: torch.Tensor, classes: Sequence[int],
                   c: float = 1.0) -> float:
    """Accuracy on the `classes` of the probe test set of a standardised logistic regression fitted on
    `model.features` of the probe train set."""
    probe = make_pipeline(StandardScaler(), LogisticRegression(C=c, max_iter=2000))
    probe.fit(_features(model, x_probe_train), y_probe_train.numpy())
    keep = torch.isin(y_probe_test, torch.tensor(list(classes)))
    if not keep.any():
        raise DataError(f"the probe test set has no examples of classes {list(classes)}")
    pred = probe.predict(_features(model, x_probe_test[keep]))
    return float((pred == y_probe_test[keep].numpy()).mean())


# ---------- relearn time ----------


def relearn_steps(model: nn.Module, x_f: torch.Tensor, y_f: torch.Tensor, x_eval: torch.Tensor,
                  y_eval: torch.Tensor, m: int, lr: float, max_steps: int, seed: int, target: float = 0.5) -> int:
    """Adam steps (fixed lr, one full batch of m examples drawn from (x_f, y_f)) on a copy of `model` until
    its accuracy on (x_eval, y_eval) reaches `target`: 0 if it already does, `max_steps + 1` if never."""
    if m > len(y_f):
        raise DataError(f"relearning needs m = {m} forget examples but D_f has {len(y_f)}; lower relearn_m")
    if len(y_eval) == 0:
        raise DataError("relearning needs test examples of the forgotten classes to measure accuracy on")
    pick = torch.randperm(len(y_f), generator=torch.Generator().manual_seed(seed))[:m]
    xb, yb = x_f[pick], y_f[pick]
    work = copy.deepcopy(model)
    opt = torch.optim.Adam(work.parameters(), lr=lr)
    for step in range(max_steps + 1):
        if accuracy(predict(work, x_eval), y_eval) >= target - _EPS:
            return step
        if step == max_steps:
            break
        work.train()
        opt.zero_grad(set_to_none=True)
        nn.functional.cross_entropy(work(xb), yb).backward()
        opt.step()
    return max_steps + 1


# ---------- all of it ----------


def _summary(values: Sequence[float]) -> dict[str, Any]:
    arr = np.asarray(values, dtype=float)
    return {"mean": float(arr.mean()), "std": float(arr.std()), "values": [float(v) for v in arr]}


def _class_metrics(model: nn.Module, data: Dataset, split: ForgetSplit, cfg: VerificationOptions,
                   sets: tuple[torch.Tensor, ...]) -> dict[str, float]:
    classes = list(split.classes or ())
    out = {"probe_forget_acc": probe_accuracy(model, *sets, classes, cfg.probe_c)}
    forgotten = torch.isin(data.y_test, torch.tensor(classes))
    xf, yf = data.x_train[split.forget_idx], data.y_train[split.forget_idx]
    for m in cfg.relearn_m:
        out[f"relearn_steps_m{m}"] = relearn_steps(model, xf, yf, data.x_test[forgotten], data.y_test[forgotten],
                                                   m, cfg.relearn_lr, cfg.relearn_max_steps, cfg.seed,
                                                   cfg.relearn_target)
    return out


def _class_keys(cfg: VerificationOptions) -> list[str]:
    return ["probe_forget_acc", *(f"relearn_steps_m{m}" for m in cfg.relearn_m)]


def shadows_and_held_out(retrains: Sequence[nn.Module]) -> tuple[list[nn.Module], nn.Module]:
    """The retrain reference split into roles: the first K − 1 are LiRA's shadows and the probe/relearn
    reference, the last is the held-out retrain (never a shadow). K ≥ 3 (`evaluation.retrain_seeds`)."""
    if len(retrains) < 3:
        raise ConfigError(f"verification needs at least 3 retrained models (2 shadows + 1 held-out), got "
                          f"{len(retrains)}; set evaluation.retrain_seeds ≥ 3")
    return list(retrains[:-1]), retrains[-1]


def reference_metrics(reference_models: Sequence[nn.Module], data: Dataset, split: ForgetSplit,
                      cfg: VerificationOptions | None = None) -> dict[str, Any]:
    """The reference's probe and relearn numbers, {mean, std, values} per key (None for random-subset
    requests): computed once and passed to `verify` for every model scored against the same references."""
    cfg = cfg or VerificationOptions()
    if split.classes is None:
        return dict.fromkeys(_class_keys(cfg))
    sets = probe_sets(data, cfg.seed, cfg.probe_per_class)
    refs = [_class_metrics(r, data, split, cfg, sets) for r in reference_models]
    return {k: _summary([r[k] for r in refs]) for k in _class_keys(cfg)}


def verify(model: nn.Module, reference_models: Sequence[nn.Module], held_out_model: nn.Module, data: Dataset,
           split: ForgetSplit, cfg: VerificationOptions | None = None,
           reference: dict[str, Any] | None = None) -> dict[str, Any]:
    """Every verification metric of `model`, and of the retrain reference as {mean, std, values}.

    `reference_models` (≥ 2 retrains without D_f) are LiRA's shadows and the reference for the probe and
    relearn time; `held_out_model` is one more retrain seed, never a shadow. `reference` is
    `reference_metrics` of the same models when already computed. JSON-able; class metrics are None for
    random-subset requests.
    """
    cfg = cfg or VerificationOptions()
    xf, yf = data.x_train[split.forget_idx], data.y_train[split.forget_idx]
    out: dict[str, Any] = {"relearn_max_steps": cfg.relearn_max_steps, "relearn_m": list(cfg.relearn_m)}
    out["reference"] = reference if reference is not None else reference_metrics(reference_models, data, split, cfg)
    finite = weights_finite(model)  # a diverged method: nothing to measure, every gate on it fails
    if not finite:
        out["weights_not_finite"] = True
    lira = (lira_audit(reference_models, held_out_model, model, xf, yf, cfg.lira_min_var) if finite
            else _unmeasured_lira(len(reference_models)))
    out.update({f"lira_{k}": v for k, v in lira.items()})
    if split.classes is None:
        out.update(dict.fromkeys(_class_keys(cfg)))
        return out
    out.update(_class_metrics(model, data, split, cfg, probe_sets(data, cfg.seed, cfg.probe_per_class)) if finite
               else dict.fromkeys(_class_keys(cfg), float("nan")))
    return out


def retrain_row(retrains: Sequence[nn.Module], data: Dataset, split: ForgetSplit,
                cfg: VerificationOptions | None = None, reference: dict[str, Any] | None = None) -> dict[str, Any]:
    """What retrained models score on each verification metric, {mean, std, values} per key: the retrain
    row of a comparison, beside which every method's numbers are read.

    - `lira_auc`: leave-one-out, each of the K retrains scored against the other K − 1 as shadows;
    - `lira_tpr_at_1fpr`: retrain i under test, retrain i + 1 (mod K) held out, the other K − 2 the shadows;
      needs K ≥ 4 (2 shadows), else None;
    - probe and relearn: the reference the gates use (`shadows_and_held_out`: the first K − 1 retrains).
    """
    cfg = cfg or VerificationOptions()
    shadows, _ = shadows_and_held_out(retrains)
    xf, yf = data.x_train[split.forget_idx], data.y_train[split.forget_idx]
    phis = np.stack([true_class_logit(m, xf, yf) for m in retrains])
    k = len(retrains)
    loo = [population_auc(_z(phis[i], np.delete(phis, i, 0), cfg.lira_min_var)) for i in range(k)]
    out: dict[str, Any] = {"lira_auc": _summary(loo), "lira_tpr_at_1fpr": None}
    if k >= 4:
        tprs = []
        for i in range(k):
            h = (i + 1) % k
            rest = np.delete(phis, [i, h], 0)
            tprs.append(tpr_at_fpr(_z(phis[i], rest, cfg.lira_min_var), _z(phis[h], rest, cfg.lira_min_var), 0.01))
        out["lira_tpr_at_1fpr"] = _summary(tprs)
    ref = reference if reference is not None else reference_metrics(shadows, data, split, cfg)
    return out | {key: ref.get(key) for key in _class_keys(cfg)}


def verification_checks(result: dict[str, Any], thresholds: VerificationGates | None = None) -> dict[str, dict]:
    """`gates.verification_checks` with the default thresholds when none are given."""
    return gate_checks(result, thresholds or VerificationGates())
