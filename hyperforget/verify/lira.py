"""Offline LiRA on the forget set (Carlini et al. 2022; U-LiRA, Hayes et al. 2024; papers.md §5): per
example, a Gaussian fitted to φ = log(p_y / (1 − p_y)) over "out" shadow models (retrains that never saw
D_f), the model under test scored as z = (φ − μ) / σ. How the verdict reads these: `hyperforget.verify.verdict`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch
from scipy.special import ndtr
from scipy.stats import rankdata
from sklearn.metrics import roc_auc_score
from torch import nn

from hyperforget.base.errors import ConfigError
from hyperforget.models.nets import predict


@torch.no_grad()
def true_class_logit(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> np.ndarray:
    """φ = log(p_y / (1 − p_y)) per example of `model` on (x, y) (`log_odds` of its logits)."""
    return log_odds(predict(model, x), y)


def log_odds(logits: torch.Tensor, y: torch.Tensor) -> np.ndarray:
    """φ = log(p_y / (1 − p_y)) per row of `logits`, computed stably as z_y − logsumexp_{j≠y} z_j (float64)."""
    logits = logits.double()
    z_y = logits.gather(1, y[:, None]).squeeze(1)
    others = logits.scatter(1, y[:, None], float("-inf"))
    return (z_y - torch.logsumexp(others, 1)).numpy()


def z_scores(phi: np.ndarray, shadow_phis: np.ndarray, min_var: float) -> np.ndarray:
    """Offline LiRA z-scores of a target from φ (`log_odds`): its own [N] against "out" shadows' [K, N] (higher =
    more likely "in"). Per example: μ, σ² of φ over the shadows (unbiased), σ² floored by the mean σ² over
    examples and by `min_var`; z = (φ_target − μ) / σ, monotone in the one-sided likelihood ratio of the offline
    attack."""
    mu, var = shadow_phis.mean(0), shadow_phis.var(0, ddof=1)
    return (phi - mu) / np.sqrt(np.maximum(var, max(float(var.mean()), min_var)))


def auc(positive: np.ndarray, negative: np.ndarray) -> float:
    """P(score of a positive > score of a negative), ties counting ½ (ROC AUC)."""
    labels = np.r_[np.ones(len(positive)), np.zeros(len(negative))]
    return float(roc_auc_score(labels, np.r_[positive, negative]))


def auc_lower_bound(positive: np.ndarray, negative: np.ndarray, z: float = 1.645) -> float:
    """One-sided lower confidence bound (95% at z = 1.645) of `auc(positive, negative)`, from DeLong's variance of
    the Mann–Whitney statistic (DeLong et al. 1988): each positive's share of negatives below it and each
    negative's share of positives above it (ties ½), var = var_pos / n + var_neg / m. NaN with fewer than 2 of
    either side (no variance to estimate). Why: a record request's power check asks whether θ0 *surely* fails
    the record LiRA test, not whether its one noisy AUC landed above the limit (a retrain's does, by chance, as
    often as the false-rejection rate)."""
    pos, neg = np.asarray(positive, dtype=float), np.asarray(negative, dtype=float)
    n, m = len(pos), len(neg)
    if n < 2 or m < 2:
        return float("nan")
    ranks = rankdata(np.r_[pos, neg])
    below = (ranks[:n] - rankdata(pos)) / m  # per positive: share of negatives under it
    above = 1 - (ranks[n:] - rankdata(neg)) / n  # per negative: share of positives over it
    se = math.sqrt(below.var(ddof=1) / n + above.var(ddof=1) / m)
    return float(below.mean() - z * se)


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
    phis = np.stack([true_class_logit(m, x_forget, y_forget) for m in shadows]) if shadows else np.zeros((0, 0))
    return class_audit(phis, true_class_logit(held_out_retrain, x_forget, y_forget),
                       true_class_logit(target, x_forget, y_forget), min_var)


def class_audit(shadow_phis: np.ndarray, held_out_phi: np.ndarray, target_phi: np.ndarray,
                min_var: float = 1e-2) -> dict[str, float]:
    """`lira_audit` from φ (`log_odds`) on D_f: the shadows' [K, N], the held-out retrain's and the target's [N]
    (a caller that has the target's logits already, `verdict.verify`, runs nothing)."""
    if len(shadow_phis) < 2:
        raise ConfigError(f"LiRA needs at least 2 shadow (retrain) models to fit a variance, got {len(shadow_phis)}")
    s_target = z_scores(target_phi, shadow_phis, min_var)
    s_held = z_scores(held_out_phi, shadow_phis, min_var)
    return {"auc": population_auc(s_target), "auc_vs_held_out": auc(s_target, s_held),
            "tpr_at_1fpr": tpr_at_fpr(s_target, s_held, 0.01), "held_out_auc": population_auc(s_held),
            "n_shadows": len(shadow_phis)}


def out_z_scores(phi: np.ndarray, shadow_phis: np.ndarray, out: np.ndarray, min_var: float) -> np.ndarray:
    """`z_scores` where each example has its own "out" shadows: `out` [K, N] marks the shadows that never saw
    example n (the reference pool's membership shadows); μ, σ² per example over those only (≥ 2 each)."""
    w = out.astype(float)
    n = w.sum(0)
    if (n < 2).any():
        raise ConfigError(f"per-record LiRA needs ≥ 2 shadows that never saw each record; {int((n < 2).sum())} "
                          "records have fewer (raise pool.shadows)")
    mu = (shadow_phis * w).sum(0) / n
    var = (((shadow_phis - mu) ** 2) * w).sum(0) / (n - 1)
    return (phi - mu) / np.sqrt(np.maximum(var, max(float(var.mean()), min_var)))


def record_audit(phis: np.ndarray, unseen_phis: np.ndarray, seen: np.ndarray, target_phis: np.ndarray,
                 target_unseen_phis: np.ndarray, min_var: float = 1e-2) -> dict[str, float]:
    """`lira_audit` for a record request against K membership shadows, from φ (`log_odds`): the shadows' on D_f
    (`phis` [K, N]) and on data nobody trained on (`unseen_phis` [K, M]: the test split), the target's on both.
    `seen` [K, N] says which shadow trained on which record of D_f. Per record, the shadows that never saw it
    are its out population (z as in `z_scores`).

    The gated `auc` compares the target's z on D_f with its z on data nobody trained on (`x_unseen`: the test
    split, where every shadow is out): the probability that a deleted record looks more "member" than an unseen
    example, 0.5 when D_f is treated like unseen data. Why not Φ(z) alone as for classes: the shadows train on
    half the data, so any full-data model (a true retrain included) is more confident on unseen examples than
    they are and would score above 0.5; comparing with its own unseen examples cancels that offset. The
    held-out check does the same for each record's last out shadow, scored against the rest. `auc_low` is the
    gated AUC's lower 95% bound (`auc_lower_bound`), which the power check reads."""
    out = ~np.asarray(seen, dtype=bool)
    s_target = out_z_scores(target_phis, phis, out, min_var)
    u_target = z_scores(target_unseen_phis, unseen_phis, min_var)
    cols = np.arange(out.shape[1])
    held = out.shape[0] - 1 - np.argmax(out[::-1], axis=0)  # each record's last out shadow
    rest = out.copy()
    rest[held, cols] = False
    s_held = out_z_scores(phis[held, cols], phis, rest, min_var)
    h = out.shape[0] - 1  # the unseen side of the held-out check: the last shadow against the others
    u_held = z_scores(unseen_phis[h], unseen_phis[:h], min_var)
    return {"auc": auc(s_target, u_target), "auc_low": auc_lower_bound(s_target, u_target),
            "auc_vs_held_out": auc(s_target, s_held),
            "tpr_at_1fpr": tpr_at_fpr(s_target, u_target, 0.01), "held_out_auc": auc(s_held, u_held),
            "population_auc": population_auc(s_target), "n_shadows": len(phis),
            "min_out_per_record": int(out.sum(0).min()), "records": len(s_target), "unseen": len(u_target)}
