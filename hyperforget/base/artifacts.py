"""Where every file of a project lives: one object built from an explicit project root, passed down.

Why one object: the stages, the request path, the flows and the benchmarks must agree on every path,
and none of them may depend on the working directory (two flow runs in one process, with different
roots, must not interfere). So no module computes a path of another stage: each asks `Artifacts`.
A relative path from params (data.raw_dir, a sqlite tracking URI) is resolved against `root` too.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from hyperforget.base.errors import ConfigError

PARAMS_FILE = "params.yaml"
EXTENDS = "extends"  # an experiment file's top-level key: the params file it overlays (hyperforget.config.overlays)
_SLUG = re.compile(r"[^A-Za-z0-9._-]+")


def params_chain(params_path: str | Path) -> list[tuple[Path, dict[str, Any]]]:
    """The params files `params_path` stands on, as (absolute path, raw mapping), from it to the base: a file
    with a top-level `extends: FILE` (FILE relative to the file that names it) overlays FILE; the base, the
    last, names none and is the project's params file. A missing or unreadable file, or a cycle, is a
    ConfigError that names the file and the `extends` that led to it."""
    chain: list[tuple[Path, dict[str, Any]]] = []
    path, named_by = Path(params_path).resolve(), None
    while True:
        where = f" (extends of {named_by})" if named_by else ""
        if any(path == seen for seen, _ in chain):
            raise ConfigError(f"{chain[0][0]}: `extends` loops back to {path}{where}; the last file of the chain "
                              f"must be the project's {PARAMS_FILE}, with no `{EXTENDS}` key")
        if not path.is_file():
            hint = "; the path is relative to the file that names it" if named_by else \
                "; pass --params PATH or run from the project root"
            raise ConfigError(f"params file {path} not found{where}{hint}")
        try:
            raw = yaml.safe_load(path.read_text()) or {}
        except yaml.YAMLError as e:
            raise ConfigError(f"{path} is not valid YAML: {e}") from None
        if not isinstance(raw, dict):
            raise ConfigError(f"{path} must hold a mapping of sections, got {type(raw).__name__}")
        chain.append((path, raw))
        if EXTENDS not in raw:
            return chain
        parent = raw[EXTENDS]
        if not isinstance(parent, str) or not parent.strip():
            raise ConfigError(f"{path}: `{EXTENDS}` must name a params file (a path relative to {path.name}, "
                              f"e.g. ../{PARAMS_FILE}), got {parent!r}")
        path, named_by = (path.parent / parent).resolve(), path


@dataclass(frozen=True)
class Artifacts:
    """The layout under `<root>/artifacts/` (and the project files beside it)."""

    root: Path

    def __post_init__(self) -> None:
        object.__setattr__(self, "root", Path(self.root).resolve())

    @classmethod
    def for_params(cls, params_path: str | Path) -> Artifacts:
        """The project whose params file is `params_path`: its folder is the project root, or for an experiment
        file (`extends: FILE`, see `params_chain`) the folder of the base params file its chain ends in."""
        path = Path(params_path)
        return cls((params_chain(path)[-1][0] if path.is_file() else path.resolve()).parent)

    def resolve(self, path: str | Path) -> Path:
        """A project-relative path (as params write them) made absolute under `root`."""
        p = Path(path)
        return p if p.is_absolute() else self.root / p

    @property
    def params(self) -> Path:
        return self.root / PARAMS_FILE

    @property
    def base(self) -> Path:
        return self.root / "artifacts"

    # prepare
    @property
    def prepare(self) -> Path:
        return self.base / "prepare"

    @property
    def dataset(self) -> Path:
        return self.prepare / "dataset.safetensors"

    @property
    def card(self) -> Path:
        return self.prepare / "dataset_card.json"

    # train
    @property
    def train(self) -> Path:
        return self.base / "train"

    @property
    def model(self) -> Path:
        return self.train / "model.safetensors"

    @property
    def train_metrics(self) -> Path:
        return self.train / "metrics.json"

    # zoo and hypernetworks
    @property
    def zoo(self) -> Path:
        return self.base / "zoo"

    def hypernet(self, variant: str) -> Path:
        return self.base / "hypernet" / variant

    @property
    def pool(self) -> Path:
        """The reference pool (`hyperforget.verify.pool`): retrains and membership shadows every request reads."""
        return self.base / "pool"

    # evaluation
    @property
    def original_metrics(self) -> Path:
        """θ0's metrics on the configured request (`hyperforget evaluate-original`)."""
        return self.base / "original" / "metrics.json"

    @property
    def original_outputs(self) -> Path:
        """θ0's logits (and frozen-part features) on the train and test splits, kept for every request
        (`hyperforget.models.outputs`)."""
        return self.base / "original" / "outputs.safetensors"

    @property
    def compare(self) -> Path:
        return self.base / "compare"

    # requests and what leaves the project
    @property
    def requests(self) -> Path:
        return self.base / "requests"

    def request(self, slug: str, method: str, run: str | None = None) -> Path:
        """One request's folder: `requests/<slug>/<method>/` (the pipeline's), or `.../runs/<run>/` for an
        ad-hoc or concurrent one, so two requests never write the same file."""
        out = self.requests / _safe(slug) / _safe(method)
        return out / "runs" / _safe(run) if run is not None else out

    def reference(self, slug: str) -> Path:
        """The cached retrain reference of a request (shared by every method answering it)."""
        return self.requests / _safe(slug) / "reference.json"

    def verification_reference(self, slug: str) -> Path:
        """What every answer to a request is verified against beside the reference models: their probe and
        relearn numbers and θ0's verification (the power check), measured once per request and keyed by what
        determines them (`answer.reference_verification`)."""
        return self.requests / _safe(slug) / "verification_reference.json"

    def pool_reference(self, slug: str) -> Path:
        """A class request's output reference read from the pool: its K retrains' metrics summarised and θ0's own
        metrics, each a full pass over the data per model, keyed by the pool, the class and the evaluator
        (`answer.pool_class_reference`); the pool stage fills it for every class."""
        return self.requests / _safe(slug) / "pool_reference.json"

    def reference_models(self, slug: str) -> Path:
        """The retrained models behind `reference(slug)` (safetensors, one file; LiRA's shadows and the
        held-out retrain of verification), keyed like it."""
        return self.requests / _safe(slug) / "reference_models.safetensors"

    @property
    def timings(self) -> Path:
        """Volatile facts (wall times, run ids, registry versions): kept out of every DVC output, so an
        identical rerun leaves `dvc.lock` and `git status` unchanged; MLflow records them too."""
        return self.base / "timings"

    def timing(self, stage: str) -> Path:
        return self.timings / f"{_safe(stage)}.json"

    @property
    def publish(self) -> Path:
        return self.base / "publish"

    @property
    def export(self) -> Path:
        return self.base / "export"

    def exported(self, name: str, version: str | int) -> Path:
        return self.export / _safe(name) / str(version)

    # deletion requests (hyperforget.erasure.deletion, hyperforget.erasure.trueup)
    def deletion(self, request_id: str) -> Path:
        """A request's own files: `ids.txt`, the resolved record ids it deletes (checked against the ledger)."""
        return self.base / "deletion" / _safe(request_id)

    def certificate(self, request_id: str) -> Path:
        """A closed request's signed certificate (certificate.json, certificate.md) and the files it names."""
        return self.base / "certificates" / _safe(request_id)

    @property
    def trueup(self) -> Path:
        """Models retrained from scratch without every closed request (`hyperforget trueup`)."""
        return self.base / "trueup"


def _safe(part: str) -> str:
    """One path component: a run name or slug can never climb out of its folder."""
    cleaned = _SLUG.sub("-", str(part)).strip(".-")
    if not cleaned:
        raise ValueError(f"{part!r} is not usable as a folder name")
    return cleaned
