"""Unlearning methods behind one interface (`method.Method`), in a plain registry: name → Method.

A new method is one module plus one entry in `METHODS` and one options section in
`hyperforget.config.options.UnlearnConfig` (retrain has none: its recipe is `train:`).
"""

from __future__ import annotations

from typing import Any

import torch
from pydantic import BaseModel, ValidationError

from hyperforget.base.errors import ConfigError, Diverged
from hyperforget.config import options as o
from hyperforget.unlearn import (
    dihyfo,
    eu_k,
    finetune,
    forsaken,
    gradtau,
    head_finetune,
    neggrad,
    retrain,
    salun,
    scrub,
    ssd,
)
from hyperforget.unlearn.method import Method, UnlearnInputs, UnlearnResult

__all__ = ["METHODS", "get_method", "run_method"]

METHODS: dict[str, Method] = {
    "retrain": Method(retrain.run, o.RetrainOptions, "retrain from scratch on D_r (the reference)"),
    "finetune": Method(finetune.run, o.FinetuneOptions, "fine-tune on D_r only"),
    "neggrad": Method(neggrad.run, o.NegGradOptions, "gradient ascent on D_f, fixed number of steps"),
    "neggrad_plus": Method(neggrad.run_plus, o.NegGradPlusOptions, "ascent on D_f + descent on D_r"),
    "gradtau": Method(gradtau.run, o.GradTauOptions, "∇τ: adaptive ascent to the unseen-data loss + descent"),
    "gradtau_paper": Method(gradtau.run, o.GradTauPaperOptions, "∇τ exactly as its authors run it"),
    "forsaken": Method(forsaken.run, o.ForsakenOptions, "mask neurons until the forgetting-rate target"),
    "ssd": Method(ssd.run, o.SSDOptions, "selective synaptic dampening (Fisher importance ratio)"),
    "dihyfo1": Method(dihyfo.run, o.DiHyFo1Options, "sample from the hypernet prompted with forget/retain loss"),
    "dihyfo2": Method(dihyfo.run, o.DiHyFo2Options, "sample from the hypernet prompted with per-class losses"),
    "retrieval": Method(dihyfo.run, o.RetrievalOptions, "DiHyFo-1 on the zoo's rows nearest its prompts, no hypernet"),
    "salun": Method(salun.run, o.SalUnOptions, "SalUn: random wrong labels on D_f through a forget-saliency mask"),
    "scrub": Method(scrub.run, o.ScrubOptions, "SCRUB: teacher-student, KL ascent on D_f, KL + CE descent on D_r"),
    "head_finetune": Method(head_finetune.run, o.HeadFinetuneOptions, "weak control: only the head, random labels"),
    "eu_k": Method(eu_k.run, o.EUkOptions, "EU-k: the last k layers re-initialised, trained on D_r's frozen features"),
}


def get_method(name: str) -> Method:
    if name not in METHODS:
        raise ConfigError(f"unknown unlearning method {name!r}; known methods: {', '.join(METHODS)}")
    return METHODS[name]


def run_method(name: str, inputs: UnlearnInputs, options: BaseModel | dict[str, Any] | None = None) -> UnlearnResult:
    """Run one method on a request; `options` is its options model, a dict of fields, or None (defaults).

    Methods work on a deep copy: `inputs.original` is never modified. A method whose weights end non-finite
    (measured: SCRUB's ascent on LeNet class 5 with the digits-sized lr) raises `Diverged` before anything is
    written or judged, naming the options to lower, instead of failing later inside a metric.
    """
    method = get_method(name)
    if options is None or isinstance(options, dict):
        try:
            options = method.options(**(options or {}))
        except ValidationError as e:
            raise ConfigError(f"invalid options for unlearning method {name}: {e}") from None
    elif not isinstance(options, method.options):
        raise ConfigError(f"unlearning method {name} takes {method.options.__name__}, got {type(options).__name__}")
    result = method.run(inputs, options)
    result.method = name
    values = [p.detach() for p in result.model.parameters()]
    bad = sum(int((~torch.isfinite(v)).sum()) for v in values)
    if bad:
        section = "train" if name == "retrain" else f"unlearn.{name}"
        raise Diverged(f"unlearning method {name} diverged: {bad} of {sum(v.numel() for v in values)} weights are NaN "
                       f"or infinite after it ran with {options.model_dump()}; nothing was written. Lower its learning "
                       f"rate or its steps (`{section}` in params.yaml) and run it again")
    return result
