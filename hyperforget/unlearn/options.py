"""Typed options of every unlearning method, and the `unlearn:` section of params.yaml.

Pure pydantic (no torch) so that `hyperforget.config` can mount `UnlearnConfig` without importing
the methods. Defaults are the papers' settings where a paper fixes them, otherwise values that work
on digits and MNIST without per-task tuning. Adding a method = one options model here, one section
field in `UnlearnConfig` (named as the method) and one registry entry in `hyperforget.unlearn`.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from hyperforget.errors import ConfigError


class MethodOptions(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class RetrainOptions(MethodOptions):
    """Training from scratch on D_r; keep the recipe equal to the original's (`train:`) for a fair reference."""

    seeds: int = Field(3, ge=1, le=64, description="models trained, all in one vmapped batch (1: a plain loop)")
    epochs: int = Field(30, ge=1, le=100_000)
    batch_size: int = Field(32, ge=1)
    lr: float = Field(1e-2, gt=0, le=10)
    weight_decay: float = Field(0.0, ge=0)


class FinetuneOptions(MethodOptions):
    """As ∇τ's fine-tuning baseline: ~6 passes of AdamW over D_r, lr decaying linearly to 0.1× (batches of 64)."""

    epochs: int = Field(6, ge=1, le=100_000, description="passes over D_r")
    batch_size: int = Field(64, ge=1)
    lr: float = Field(1e-3, gt=0, le=10, description="AdamW, decayed linearly to lr × lr_end_factor")
    lr_end_factor: float = Field(0.1, gt=0, le=1)


class NegGradOptions(MethodOptions):
    """Plain gradient ascent on D_f; bounded by `steps` because the ascent alone never stops."""

    steps: int = Field(20, ge=1, le=100_000, description="ascent steps (one forget batch each)")
    batch_size: int = Field(64, ge=1)
    lr: float = Field(1e-3, gt=0, le=10, description="Adam")


class NegGradPlusOptions(MethodOptions):
    """Ascent on D_f plus descent on D_r in one loss: (1 − w)·ℓ(B_r) − w·min(ℓ(B_f), cap)."""

    epochs: int = Field(5, ge=1, le=100_000, description="passes over D_r, each retain batch paired with a forget one")
    batch_size: int = Field(64, ge=1)
    lr: float = Field(1e-3, gt=0, le=10, description="Adam")
    forget_weight: float = Field(0.2, ge=0, le=1, description="w: weight of the ascent term")
    forget_loss_cap: float = Field(10.0, gt=0, description="the ascent stops pushing a batch past this mean loss")


class GradTauOptions(MethodOptions):
    """∇τ (Trippa et al. 2024). Two deviations from the paper, on by default because without them ∇τ
    does not remove a class on our small data sets (see gradtau.py); `gradtau_paper` turns both off."""

    alpha0: float | None = Field(None, ge=0, le=1, description="start α; None = 5/3 × forget fraction (paper)")
    lr: float = Field(1e-3, gt=0, le=10, description="AdamW, decayed linearly to lr × lr_end_factor")
    lr_end_factor: float = Field(0.1, gt=0, le=1)
    weight_decay: float = Field(0.01, ge=0, description="AdamW's default, as in the authors' code")
    batch_size: int = Field(256, ge=1)
    epochs: int | None = Field(None, ge=1, le=100_000, description="forget-epochs; None = the paper's E")
    tau_every: int = Field(5, ge=1, description="forget-epochs between recomputations of τ on D_v")
    tau: Literal["auto", "val"] = Field("auto", description="val (paper): mean loss on D_v; auto: that for random "
                                        "subsets, for class requests the forgotten labels' loss on other classes' D_v")
    min_steps: int = Field(500, ge=0, le=1_000_000,
                           description="raise E to at least this many optimiser steps; paper: 0 (E alone)")


class GradTauPaperOptions(GradTauOptions):
    """∇τ exactly as the authors run it: τ = mean loss on D_v, E alone."""

    tau: Literal["auto", "val"] = "val"
    min_steps: int = Field(0, ge=0, le=1_000_000)


class ForsakenOptions(MethodOptions):
    """Neuron masking (Ma et al.) to our specification in papers.md."""

    target_rate: float = Field(0.9, gt=0, le=1, description="stop once the forgetting rate reaches this")
    mask_factor: float = Field(0.0, ge=0, lt=1, description="a chosen neuron's outgoing weights are multiplied by this")
    max_retain_drop: float = Field(0.05, ge=0, le=1, description="stop before D_r accuracy drops by more than this")
    max_neurons: float = Field(0.5, gt=0, le=1, description="fraction of all hidden neurons that may be masked")
    repair_steps: int = Field(50, ge=0, le=100_000, description="Adam steps on D_r after each masking (masks held)")
    batch_size: int = Field(128, ge=1)
    lr: float = Field(1e-3, gt=0, le=10, description="Adam, for the repair steps")


class SSDOptions(MethodOptions):
    """Selective Synaptic Dampening (Foster et al. 2023): the paper's α = 10, λ = 1; see ssd.py on batches."""

    alpha: float = Field(10.0, gt=0, description="selection: dampen where imp_f > α · imp_full")
    lam: float = Field(1.0, gt=0, description="dampening: β = min(λ · imp_full / imp_f, 1)")
    batch_size: int = Field(32, ge=1, description="batches of the importance estimates; authors: 64")
    passes: int = Field(8, ge=1, le=1000, description="shuffled passes averaged per estimate; authors: 1")


class DiHyFoOptions(MethodOptions):
    """DiHyFo: K samples from the diffusion hypernetwork, the best that passes the gates on the validation
    split is kept. The gate fields mirror `gates:` (a method sees only its own options). Class requests only."""

    variant: Literal["dihyfo1", "dihyfo2"] = "dihyfo2"
    k: int = Field(16, ge=1, le=4096, description="candidates sampled in one batch")
    sample_steps: int | None = Field(None, ge=1, le=1000, description="DDIM steps; None = the hypernet's setting")
    hi_pct: float = Field(95, ge=0, le=100, description="forget classes prompted at this percentile of the zoo")
    lo_pct: float = Field(5, ge=0, le=100, description="retained classes prompted at this percentile")
    prompt_levels: int = Field(4, ge=1, le=64, description="prompts from the zoo median to hi/lo_pct sharing the K "
                               "samples; 1 = hi/lo_pct only")
    seed: int = Field(0, ge=0, description="added to the request's seed for the sampling noise")
    hypernet_dir: str | None = Field(None, description="None = artifacts/hypernet/<variant>")
    zoo_dir: str = "artifacts/zoo"
    max_forget_acc: float = Field(0.05, ge=0, le=1, description="gate: forget-class val accuracy at most this")
    max_retain_drop: float = Field(0.05, ge=0, le=1, description="gate: retained val acc ≥ the original's − this")

    @model_validator(mode="after")
    def _percentiles(self) -> DiHyFoOptions:
        if self.lo_pct > self.hi_pct:
            raise ValueError(f"lo_pct ({self.lo_pct}) must not exceed hi_pct ({self.hi_pct})")
        return self

    @property
    def hypernet_path(self) -> str:
        return self.hypernet_dir or f"artifacts/hypernet/{self.variant}"


class DiHyFo1Options(DiHyFoOptions):
    """DiHyFo-1: conditioned on the forget/retain loss pair and the forget mask."""

    variant: Literal["dihyfo1"] = "dihyfo1"


class DiHyFo2Options(DiHyFoOptions):
    """DiHyFo-2: conditioned on the full per-class loss vector."""

    variant: Literal["dihyfo2"] = "dihyfo2"


class UnlearnConfig(MethodOptions):
    """The `unlearn:` section: the method to run and one options section per method (named as it)."""

    method: str = "gradtau"
    retrain: RetrainOptions = RetrainOptions()
    finetune: FinetuneOptions = FinetuneOptions()
    neggrad: NegGradOptions = NegGradOptions()
    neggrad_plus: NegGradPlusOptions = NegGradPlusOptions()
    gradtau: GradTauOptions = GradTauOptions()
    gradtau_paper: GradTauPaperOptions = GradTauPaperOptions()
    forsaken: ForsakenOptions = ForsakenOptions()
    ssd: SSDOptions = SSDOptions()
    dihyfo1: DiHyFo1Options = DiHyFo1Options()
    dihyfo2: DiHyFo2Options = DiHyFo2Options()

    @classmethod
    def method_names(cls) -> list[str]:
        return [name for name in cls.model_fields if name != "method"]

    @field_validator("method")
    @classmethod
    def _known(cls, value: str) -> str:
        if value not in cls.method_names():
            raise ValueError(f"unknown method {value!r}; choose one of {', '.join(cls.method_names())}")
        return value

    def options_for(self, name: str) -> MethodOptions:
        if name not in self.method_names():
            raise ConfigError(f"unknown method {name!r}; choose one of {', '.join(self.method_names())}")
        return getattr(self, name)
