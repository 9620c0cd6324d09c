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
  recovers the class (on digits a retrain's features hold most of it too: see `VerificationGates`). Beside
  its accuracy, `probe_forget_logit`: probes cross-fitted over validation ∪ test, the log-odds of their mean
  true-class probability on the forgotten classes (`probe.probe_confidence`: the finer statistic, gated by
  `max_probe_logit_excess` where calibrated).
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

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

from hyperforget.base.errors import ConfigError
from hyperforget.config.options import VerificationGates, VerificationOptions
from hyperforget.data.datasets import Dataset, ForgetSplit
from hyperforget.verify.gates import verification_checks as gate_checks
from hyperforget.verify.lira import (
    class_audit,
    log_odds,
    population_auc,
    record_audit,
    tpr_at_fpr,
    true_class_logit,
    z_scores,
)
from hyperforget.verify.probe import confidence_sets, probe_accuracy, probe_confidence, probe_sets
from hyperforget.verify.relearn import relearn_steps


def weights_finite(model: nn.Module) -> bool:
    """False when any parameter is NaN or ±inf: what a diverged unlearning method leaves (nothing to measure)."""
    return all(bool(torch.isfinite(p).all()) for p in model.parameters())


def _unmeasured_lira(n_shadows: int) -> dict[str, float]:
    """`lira_audit`'s keys for a target that cannot be scored (non-finite weights): NaN, which every gate
    fails as "not measured"."""
    nan = float("nan")
    return {"auc": nan, "auc_vs_held_out": nan, "tpr_at_1fpr": nan, "held_out_auc": nan, "n_shadows": n_shadows}


# ---------- all of it ----------


def _summary(values: Sequence[float]) -> dict[str, Any]:
    arr = np.asarray(values, dtype=float)
    return {"mean": float(arr.mean()), "std": float(arr.std()), "values": [float(v) for v in arr]}


def _probe_data(data: Dataset, cfg: VerificationOptions) -> tuple[tuple, tuple]:
    """Both probes' data: `probe_sets` (the accuracy probe) and `confidence_sets` (the cross-fitted one)."""
    return probe_sets(data, cfg.seed, cfg.probe_per_class), confidence_sets(data, cfg.seed, cfg.probe_pool_per_class)


def _class_metrics(model: nn.Module, data: Dataset, split: ForgetSplit, cfg: VerificationOptions,
                   probes: tuple[tuple, tuple]) -> dict[str, float]:
    classes = list(split.classes or ())
    sets, pooled = probes
    out = {"probe_forget_acc": probe_accuracy(model, *sets, classes, cfg.probe_c),
           "probe_forget_logit": probe_confidence(model, *pooled, classes, cfg.probe_c)}
    forgotten = torch.isin(data.y_test, torch.tensor(classes))
    xf, yf = data.x_train[split.forget_idx], data.y_train[split.forget_idx]
    for m in cfg.relearn_m:
        out[f"relearn_steps_m{m}"] = relearn_steps(model, xf, yf, data.x_test[forgotten], data.y_test[forgotten],
                                                   m, cfg.relearn_lr, cfg.relearn_max_steps, cfg.seed,
                                                   cfg.relearn_target)
    return out


def _class_keys(cfg: VerificationOptions) -> list[str]:
    return ["probe_forget_acc", "probe_forget_logit", *(f"relearn_steps_m{m}" for m in cfg.relearn_m)]


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
    probes = _probe_data(data, cfg)
    refs = [_class_metrics(r, data, split, cfg, probes) for r in reference_models]
    return {k: _summary([r[k] for r in refs]) for k in _class_keys(cfg)}


def _shadow_phis(shadows: Sequence[nn.Module], logits: tuple[torch.Tensor, torch.Tensor] | None, data: Dataset,
                 split: ForgetSplit) -> tuple[np.ndarray, np.ndarray]:
    """The membership shadows' φ on D_f and on the test split, [K, |D_f|] and [K, n_test]: from their kept
    logits when given, else by running them."""
    yf = data.y_train[split.forget_idx]
    if logits is not None:
        train, test = logits
        return (np.stack([log_odds(t[split.forget_idx], yf) for t in train]),
                np.stack([log_odds(t, data.y_test) for t in test]))
    xf = data.x_train[split.forget_idx]
    return (np.stack([true_class_logit(m, xf, yf) for m in shadows]),
            np.stack([true_class_logit(m, data.x_test, data.y_test) for m in shadows]))


def _target_phis(model: nn.Module, logits: tuple[torch.Tensor, torch.Tensor] | None, data: Dataset,
                 split: ForgetSplit, unseen: bool) -> tuple[np.ndarray, np.ndarray | None]:
    """φ of the model under test on D_f and (`unseen`) on the test split: from its logits when given."""
    yf = data.y_train[split.forget_idx]
    if logits is not None:
        return log_odds(logits[0][split.forget_idx], yf), log_odds(logits[1], data.y_test) if unseen else None
    return (true_class_logit(model, data.x_train[split.forget_idx], yf),
            true_class_logit(model, data.x_test, data.y_test) if unseen else None)


def verify(model: nn.Module, reference_models: Sequence[nn.Module], held_out_model: nn.Module | None, data: Dataset,
           split: ForgetSplit, cfg: VerificationOptions | None = None,
           reference: dict[str, Any] | None = None, seen: torch.Tensor | None = None,
           shadow_logits: tuple[torch.Tensor, torch.Tensor] | None = None,
           logits: tuple[torch.Tensor, torch.Tensor] | None = None,
           reference_phis: tuple[np.ndarray, np.ndarray] | None = None) -> dict[str, Any]:
    """Every verification metric of `model`, and of the retrain reference as {mean, std, values}.

    `reference_models` (≥ 2 retrains without D_f) are LiRA's shadows and the reference for the probe and
    relearn time; `held_out_model` is one more retrain seed, never a shadow. `reference` is
    `reference_metrics` of the same models when already computed. With `seen` [K, |D_f|] the reference models
    are membership shadows that each saw part of D_f (a record request against the reference pool): LiRA fits
    each record's out population from the shadows that never saw it (`lira.record_audit`), and there is no
    held-out model; `shadow_logits` ([K, n_train, C], [K, n_test, C]), when given, are those shadows' logits
    on the train and test splits (the pool keeps them), so they are not run again; `logits`, `model`'s own on
    the same splits when the caller has them (`answer.unlearn` scored it on them), so LiRA runs no pass of it;
    `reference_phis`, the shadows' φ on D_f [K, |D_f|] and the held-out retrain's [|D_f|] when kept (a pool
    class keeps them: `answer.pool_class_reference`), so no reference model runs either. JSON-able; class
    metrics are None for random-subset requests.
    """
    cfg = cfg or VerificationOptions()
    xf, yf = data.x_train[split.forget_idx], data.y_train[split.forget_idx]
    out: dict[str, Any] = {"relearn_max_steps": cfg.relearn_max_steps, "relearn_m": list(cfg.relearn_m)}
    out["reference"] = reference if reference is not None else reference_metrics(reference_models, data, split, cfg)
    finite = weights_finite(model)  # a diverged method: nothing to measure, every gate on it fails
    if not finite:
        out["weights_not_finite"] = True
    if not finite:
        lira = _unmeasured_lira(len(reference_models))
    elif seen is not None:
        lira = record_audit(*_shadow_phis(reference_models, shadow_logits, data, split), seen.numpy(),
                            *_target_phis(model, logits, data, split, unseen=True), cfg.lira_min_var)
    else:
        phis, held = reference_phis if reference_phis is not None else (
            np.stack([true_class_logit(m, xf, yf) for m in reference_models]), true_class_logit(held_out_model, xf, yf))
        lira = class_audit(phis, held, _target_phis(model, logits, data, split, unseen=False)[0], cfg.lira_min_var)
    out.update({f"lira_{k}": v for k, v in lira.items()})
    if split.classes is None:
        out.update(dict.fromkeys(_class_keys(cfg)))
        return out
    out.update(_class_metrics(model, data, split, cfg, _probe_data(data, cfg)) if finite
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
    loo = [population_auc(z_scores(phis[i], np.delete(phis, i, 0), cfg.lira_min_var)) for i in range(k)]
    out: dict[str, Any] = {"lira_auc": _summary(loo), "lira_tpr_at_1fpr": None}
    if k >= 4:
        tprs = []
        for i in range(k):
            h = (i + 1) % k
            rest = np.delete(phis, [i, h], 0)
            tprs.append(tpr_at_fpr(z_scores(phis[i], rest, cfg.lira_min_var), z_scores(phis[h], rest, cfg.lira_min_var),
                                   0.01))
        out["lira_tpr_at_1fpr"] = _summary(tprs)
    ref = reference if reference is not None else reference_metrics(shadows, data, split, cfg)
    return out | {key: ref.get(key) for key in _class_keys(cfg)}


def verification_checks(result: dict[str, Any], thresholds: VerificationGates | None = None) -> dict[str, dict]:
    """`gates.verification_checks` with the default thresholds when none are given."""
    return gate_checks(result, thresholds or VerificationGates())
