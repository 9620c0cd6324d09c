"""Typed params: the sections of `params.yaml` as frozen pydantic models, which every stage reads.

Unknown keys and out-of-range values are errors with one message that names the key, the value and
what is allowed. The method and hypernetwork sections are defined in `hyperforget.config.options` (pure
pydantic, like this module) and mounted here, so there is still one validation point (`Params`, reached
through `hyperforget.config.overlays.load_params`). Every key has one source: the retrain recipe is `train:`,
seeds are the top-level `seed` (sections that train something of their own, data/train/zoo/hypernet, keep
theirs), DiHyFo selects by `gates:`.
"""

from __future__ import annotations

import hashlib
import itertools
from collections.abc import Iterable, Sequence
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, StrictInt, model_validator

from hyperforget.base import records
from hyperforget.base.errors import ConfigError
from hyperforget.config.options import (
    CLASS_ONLY,
    HypernetConfig,
    MethodOptions,
    RetrainOptions,
    UnlearnConfig,
    VerificationGates,
    VerificationOptions,
)

DATASETS = {"digits": 10, "mnist": 10, "fashion_mnist": 10, "cifar10": 10}


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class DataConfig(Section):
    name: Literal["digits", "mnist", "fashion_mnist", "cifar10"] = "digits"
    raw_dir: str = "data/raw"
    source: str | None = Field(None, description="directory of original IDX/CIFAR files to import from")
    download: bool = False
    test_fraction: float = Field(0.2, gt=0, lt=1, description="used when the data set has no test split")
    val_fraction: float = Field(0.1, gt=0, lt=1, description="held-out unseen data carved from train")
    seed: int = 0

    @property
    def num_classes(self) -> int:
        return DATASETS[self.name]


class ModelConfig(Section):
    arch: Literal["mlp", "cnn", "lenet"] = "mlp"
    width: int = Field(10, ge=1, le=4096, description="mlp hidden units / cnn channels; lenet has a fixed size")


class TrainConfig(Section):
    epochs: int = Field(40, ge=1)
    batch_size: int = Field(64, ge=1)
    lr: float = Field(1e-2, gt=0, le=10)
    weight_decay: float = Field(0.0, ge=0)
    schedule: Literal["constant", "cosine"] = Field("constant", description="lr per batch: constant, or cosine "
                                                    "decay to 0 over all epochs")
    patience: int = Field(0, ge=0, description="early stop after this many epochs without val gain; 0 = off")
    seed: int = 0


class ForgetConfig(Section):
    """The deletion request. Classes are strict integers: `true` or `"3"` is refused, never read as 1 or 3
    (a deletion request must be exactly what was asked). `samples` is a record-ids file (`hyperforget.base.records`:
    train-split indices and/or record hashes); `load_params` resolves a relative one against the params folder."""

    classes: list[StrictInt] | None = None
    fraction: float | None = Field(None, gt=0, le=0.9)
    samples: str | None = Field(None, min_length=1, description="file of record ids, one per line")
    seed: int = 0

    @model_validator(mode="after")
    def _one_kind(self) -> ForgetConfig:
        if sum(v is not None for v in (self.classes, self.fraction, self.samples)) != 1:
            raise ValueError("give exactly one of forget.classes (a list of classes), forget.fraction or "
                             "forget.samples (a file of record ids)")
        problem = None if self.classes is None else self.classes_problem(self.classes)
        if problem:
            raise ValueError(f"forget.classes {problem}")
        return self

    @staticmethod
    def classes_problem(classes: Sequence[int]) -> str | None:
        """Why a list of classes is no deletion request, in one line naming the item (None when it is one):
        empty, a negative class, a class named twice (refused, not merged: a request is exactly what was asked)."""
        if not classes:
            return "is empty: name at least one class to forget, e.g. [3]"
        at: dict[int, list[int]] = {}
        for i, c in enumerate(classes, 1):
            if c < 0:
                return f"item {i} is {c}, a negative class: a class is a non-negative integer"
            at.setdefault(c, []).append(i)
        times = {2: "twice", 3: "three times"}
        repeated = [f"class {c} {times.get(len(i), f'{len(i)} times')} (items {', '.join(map(str, i))})"
                    for c, i in at.items() if len(i) > 1]
        return f"names {'; '.join(repeated)}: name each class once" if repeated else None

    def slug(self) -> str:
        if self.classes is not None:
            return "classes-" + "-".join(str(c) for c in sorted(self.classes))
        if self.samples is not None:  # names the record set (its ids' sha256), not the file
            return f"samples-{records.file_digest(self.samples)[:12]}"
        return f"random-{round(self.fraction * 100)}pct-seed{self.seed}"


class EvaluationConfig(Section):
    methods: list[str] = ["retrain", "finetune", "neggrad", "neggrad_plus", "gradtau", "forsaken", "ssd"]
    retrain_seeds: int = Field(3, ge=3, le=64, description="retrain reference: the first K − 1 are LiRA's shadows "
                               "and the probe/relearn reference, the last the held-out retrain (verification)")
    mia_splits: int = Field(10, ge=2)
    verification: VerificationOptions = VerificationOptions()
    reference: Literal["pool", "per_request"] = Field(
        "pool", description="where a request's retrain reference comes from: the reference pool built once "
        "(`hyperforget pool`), or `retrain_seeds` retrains trained for this request (slow; reported as such)")


class PoolConfig(Section):
    """The reference pool (`hyperforget.verify.pool`), trained once per (data, θ0, recipe) with θ0's `train:`
    recipe: `class_retrains` true retrains without each class (a class request's reference: the first K − 1
    are LiRA's shadows and the probe/relearn reference, the last the held-out retrain) and `shadows` models
    each trained on a seeded half of the training set, in complementary pairs, so every record is "out" of
    exactly half of them (a record request's per-example LiRA)."""

    class_retrains: int = Field(4, ge=3, le=64, description="true retrains without each class")
    shadows: int = Field(16, ge=6, le=256, description="membership shadows on seeded halves (even: in pairs); ≥ 6: "
                         "per-record LiRA fits each record on ≥ 2 of its out shadows after holding one out")
    seed: int = Field(0, ge=0, le=99)

    @model_validator(mode="after")
    def _pairs(self) -> PoolConfig:
        if self.shadows % 2:
            raise ValueError(f"pool.shadows must be even (complementary halves come in pairs), got {self.shadows}")
        return self


SET_SIZES = (2, 3)  # sizes of the random class sets (zoo requests, held-out and tuning sets)


def draw_class_sets(num_classes: int, count: int, seed: int, salt: str,
                    exclude: Iterable[Sequence[int]] = ()) -> list[tuple[int, ...]]:
    """`count` distinct sorted class sets, sizes alternating 2, 3, 2, … (one size left: that one).

    A seeded draw without replacement that no library version can change: every candidate set of a size
    is ranked by sha256(salt, seed, set) and taken in that order, skipping `exclude`. Different salts give
    independent lists (held-out sets, zoo requests, tuning sets) from the same seed.
    """
    banned = {tuple(sorted(s)) for s in exclude}
    pools = {k: sorted((c for c in itertools.combinations(range(num_classes), k) if c not in banned),
                       key=lambda c: hashlib.sha256(f"{salt}:{seed}:{list(c)}".encode()).hexdigest())
             for k in SET_SIZES}
    out: list[tuple[int, ...]] = []
    while len(out) < count:
        size = SET_SIZES[len(out) % len(SET_SIZES)]
        pool = pools[size] or next((p for p in pools.values() if p), None)
        if pool is None:
            raise ConfigError(f"only {len(out)} class sets of sizes {SET_SIZES} are left for {salt} sets "
                              f"({num_classes} classes, {len(banned)} excluded); {count} were asked for")
        out.append(pool.pop(0))
    return out


class ZooConfig(Section):
    """The weight zoo: unlearning trajectories from θ0 for each request in the zoo's request set.

    Requests: every single class, the explicit `pairs`, then `class_sets` random sets of size 2–3 (seeded
    by `seed`). The `holdout_sets` held-out sets (size 2–3, seeded by `holdout_seed`, a list of their own)
    never enter the zoo, the hypernetwork's training or any tuning: the zoo build and hypernet training
    refuse rows of them (ConfigError), and an explicit pair that is one of them is a params error.
    """

    pairs: list[list[int]] = Field([], description="class pairs added to the single-class requests")
    class_sets: int = Field(0, ge=0, le=1000, description="random class sets of size 2-3 added to the requests "
                            "(drawn from zoo.seed, never a held-out set)")
    holdout_sets: int = Field(24, ge=0, le=1000, description="held-out class sets of size 2-3 (drawn from "
                              "holdout_seed): never in the zoo, the hypernet's training or tuning")
    holdout_seed: int = Field(0, ge=0, description="seed of the held-out list (independent of zoo.seed)")
    trajectories: int = Field(16, ge=0, le=100_000, description="trajectories per request, one vmapped batch; 0 = "
                              "none: the zoo holds θ0 and the retrained endpoints only (retrain-shaped targets)")
    steps: int = Field(300, ge=1, le=1_000_000, description="optimiser steps per trajectory")
    save_every: int = Field(30, ge=1, description="keep every k-th step as a checkpoint")
    batch_size: int = Field(64, ge=1, description="forget and retain batch size of the trajectories")
    lr: tuple[float, float] = Field((2e-3, 1e-2), description="log-uniform range of trajectory Adam learning rates")
    forget_weight: tuple[float, float] = Field((0.02, 0.2), description="uniform range of ascent weights")
    retrain_seeds: int = Field(3, ge=0, le=1024, description="retrained-from-scratch members per request")
    level_retrains: int = Field(0, ge=0, le=64, description="true retrains per single class kept only as the "
                                "validation loss they leave on it: DiHyFo's level target where the zoo's rows are "
                                "partial (head_retrain endpoints sit shallower than a retrain); 0 = none")
    shard_rows: int = Field(512, ge=1, description="checkpoints per safetensors shard")
    seed: int = 0

    @model_validator(mode="after")
    def _ranges(self) -> ZooConfig:
        for name in ("lr", "forget_weight"):
            lo, hi = getattr(self, name)
            if not 0 < lo <= hi:
                raise ValueError(f"zoo.{name} must be a range (low, high) with 0 < low <= high, got {(lo, hi)}")
        for pair in self.pairs:
            if len(pair) != 2 or pair[0] == pair[1]:
                raise ValueError(f"zoo pairs must hold two different classes, got {pair}")
        if self.trajectories == 0 == self.retrain_seeds:
            raise ValueError("zoo.trajectories and zoo.retrain_seeds are both 0: the zoo would hold θ0 alone; "
                             "set either above 0")
        if self.save_every > self.steps:
            raise ValueError(f"zoo.save_every ({self.save_every}) exceeds zoo.steps ({self.steps}): "
                             "nothing would be saved")
        return self

    def held_out(self, num_classes: int) -> list[tuple[int, ...]]:
        """The held-out class sets: a fixed, seeded list (`holdout_sets`, `holdout_seed`)."""
        return draw_class_sets(num_classes, self.holdout_sets, self.holdout_seed, "holdout")

    def random_sets(self, num_classes: int) -> list[tuple[int, ...]]:
        """The zoo's `class_sets` random requests: never a held-out set or an explicit pair."""
        return draw_class_sets(num_classes, self.class_sets, self.seed, "zoo",
                               exclude=[*self.held_out(num_classes), *self.pairs])

    def tuning_sets(self, num_classes: int, count: int, seed: int = 0) -> list[tuple[int, ...]]:
        """Sets neither in the zoo nor held out: where settings (sampling steps, prompts) may be tuned."""
        return draw_class_sets(num_classes, count, seed, "tuning",
                               exclude=[*self.held_out(num_classes), *self.random_sets(num_classes), *self.pairs])


class GatesConfig(VerificationGates):
    """Output gates (below) and the verification gates inherited from `options.VerificationGates` (their
    defaults and calibration live there): one `gates:` section, every key with one source."""

    max_forget_acc: float = Field(0.05, ge=0, le=1)
    max_retain_drop: float = Field(0.05, ge=0, le=1, description="retained test acc ≥ retrain mean − this")
    max_mia: float = Field(0.5, ge=0, le=1, description="fraction of D_f the MIA calls 'member'")
    max_forget_excess: float = Field(0.05, ge=0, le=1, description="forget acc may exceed retrain's mean by this")
    max_mia_excess: float = Field(0.05, ge=0, le=1, description="MIA may exceed retrain's mean by this")


class TrackingConfig(Section):
    uri: str = Field("sqlite:///mlruns.db", description="overridden by MLFLOW_TRACKING_URI")
    experiment_prefix: str = "hyperforget"
    artifact_root: str = "mlartifacts"


class StorageConfig(Section):
    bucket: str = "hyperforget"
    prefix: str = "models"


class RequestsConfig(Section):
    """Deletion requests (`hyperforget request ...`): policy, and where the ledger and the signing key live."""

    fallback_method: str = Field("gradtau", description="answers what the configured method refuses "
                                 "(DiHyFo: record-level requests)")
    exact_on_gate_failure: bool = Field(True, description="an approximate answer that fails its gates is followed, "
                                        "in the same run, by the exact one (a retrain without the data); off: the "
                                        "request ends failed and waits for an operator")
    deadline_days: int = Field(30, ge=1, le=3660, description="a request is due this many days after submission")
    ledger_url: str = Field("sqlite:///ledger.db", min_length=1, description="SQLAlchemy URL; a relative sqlite "
                            "path is under the project root; HYPERFORGET_LEDGER_URL overrides")
    signing_key: str = Field(".hyperforget/signing_key.pem", min_length=1, description="Ed25519 key (PEM) for "
                             "certificates, created on first use; HYPERFORGET_SIGNING_KEY overrides")

    @model_validator(mode="after")
    def _fallback_answers_records(self) -> RequestsConfig:
        names = UnlearnConfig.method_names()
        if self.fallback_method not in names:
            raise ValueError(f"requests.fallback_method {self.fallback_method!r} is not a method; choose one of "
                             f"{', '.join(n for n in names if n not in CLASS_ONLY)}")
        if self.fallback_method in CLASS_ONLY:
            raise ValueError(f"requests.fallback_method cannot be {self.fallback_method}: DiHyFo answers class "
                             "requests only, and the fallback must answer record-level ones (e.g. gradtau)")
        return self


class Params(Section):
    seed: int = 0
    data: DataConfig = DataConfig()
    model: ModelConfig = ModelConfig()
    train: TrainConfig = TrainConfig()
    forget: ForgetConfig = ForgetConfig(classes=[3])
    evaluation: EvaluationConfig = EvaluationConfig()
    unlearn: UnlearnConfig = UnlearnConfig()
    zoo: ZooConfig = ZooConfig()
    pool: PoolConfig = PoolConfig()
    hypernet: HypernetConfig = HypernetConfig()
    gates: GatesConfig = GatesConfig()
    tracking: TrackingConfig = TrackingConfig()
    storage: StorageConfig = StorageConfig()
    requests: RequestsConfig = RequestsConfig()

    def method_options(self, name: str, seeds: int = 1) -> MethodOptions:
        """A method's options: its `unlearn:` section, or for retrain the `train:` recipe with `seeds` models."""
        if name == "retrain":
            t = self.train
            return RetrainOptions(seeds=seeds, epochs=t.epochs, batch_size=t.batch_size, lr=t.lr,
                                  weight_decay=t.weight_decay, schedule=t.schedule)
        return self.unlearn.options_for(name)

    @model_validator(mode="after")
    def _forget_fits_data(self) -> Params:
        n = self.data.num_classes
        classes = self.forget.classes
        for pair in self.zoo.pairs:
            if max(pair) >= n or min(pair) < 0:
                raise ValueError(f"zoo pair {pair} out of range: {self.data.name} has classes 0..{n - 1}")
        try:
            held = set(self.zoo.held_out(n))
            self.zoo.random_sets(n)
        except ConfigError as e:
            raise ValueError(f"zoo.class_sets + zoo.holdout_sets: {e}") from None
        for pair in self.zoo.pairs:
            if tuple(sorted(pair)) in held:
                raise ValueError(f"zoo.pairs {pair} is a held-out set (zoo.holdout_sets/holdout_seed): held-out "
                                 "sets never enter the zoo; remove it or change zoo.holdout_seed")
        if classes is not None:
            bad = [c for c in classes if c >= n]
            if bad:
                raise ValueError(f"forget.classes {bad} out of range: {self.data.name} has classes 0..{n - 1}")
            if len(set(classes)) >= n:
                raise ValueError(f"forget.classes names all {n} classes: at least one class must be retained")
        return self
