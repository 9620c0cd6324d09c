"""The pipeline in one table: each stage's command, the params it reads, its dependencies and outputs.

Why a table: `dvc.yaml` (what `dvc repro` runs) and the Prefect `build` flow (which caches each stage
by the params it reads) must agree, and a hand copy drifted. `dvc.yaml` is checked against
`dvc_stages()` by a unit test, and the flow takes its cache keys from `STAGES`. Every stage depends on
its own code, so changing a stage re-runs it. Params are listed as DVC does: a whole section, or a
dotted key when a stage reads only that key of a section (publish names its model by data.name and
model.arch). `tracking:` only says where runs are logged, never what a stage writes, so only publish,
whose registry lives there, lists it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hyperforget.artifacts import Artifacts
from hyperforget.options import VARIANTS

_ART = Artifacts(Path("/project"))  # only to spell paths relative to the root


def rel(path: Path) -> str:
    return path.relative_to(_ART.root).as_posix()


STAGE_CODE = "hyperforget/stages.py"
DATASET, MODEL, ZOO = rel(_ART.dataset), rel(_ART.model), rel(_ART.zoo)
HYPERNETS = [rel(_ART.hypernet(v)) for v in VARIANTS]
METHOD_CODE = ["hyperforget/unlearn", "hyperforget/hypernet", "hyperforget/objectives.py", "hyperforget/metrics.py",
               "hyperforget/answer.py", "hyperforget/gates.py", "hyperforget/verification.py"]


@dataclass(frozen=True)
class Stage:
    """One DVC stage. `outs` are cached by DVC; `uncached` outs and `plots` are small files kept out of the
    cache (cache: false). `metrics` are cached: artifacts/ is git-ignored, so an experiment run with
    `dvc exp run --temp` (make run-mnist) can only show its metrics in `dvc exp show` from the DVC cache.
    `foreach` makes it a DVC foreach stage over those items."""

    name: str
    cmd: str
    params: list[str]
    deps: list[str]
    outs: list[str] = field(default_factory=list)
    uncached: list[str] = field(default_factory=list)
    metrics: list[str] = field(default_factory=list)
    plots: list[str] = field(default_factory=list)
    foreach: list[str] | None = None

    @property
    def sections(self) -> list[str]:
        """The params sections (or top-level keys) the stage reads, for cache keys."""
        return sorted({p.split(".")[0] for p in self.params})

    def dvc(self) -> dict[str, Any]:
        """This stage as dvc.yaml spells it."""
        body: dict[str, Any] = {"cmd": self.cmd, "deps": self.deps, "params": self.params}
        outs = [*self.outs, *({p: {"cache": False}} for p in self.uncached)]
        for key, values in (("outs", outs), ("metrics", list(self.metrics)),
                            ("plots", [{p: {"cache": False}} for p in self.plots])):
            if values:
                body[key] = values
        return {"foreach": self.foreach, "do": body} if self.foreach else body


STAGES: list[Stage] = [
    Stage("prepare", "hyperforget prepare", ["data"],
          ["data/raw", "hyperforget/data.py", STAGE_CODE],
          outs=[DATASET, f"{DATASET}.sha256"], uncached=[rel(_ART.card)]),
    Stage("train", "hyperforget train", ["model", "train"],
          [DATASET, "hyperforget/models.py", "hyperforget/train.py", STAGE_CODE],
          outs=[MODEL, f"{MODEL}.sha256"], metrics=[rel(_ART.train_metrics)]),
    Stage("zoo", "hyperforget zoo", ["train", "zoo", "hypernet.generate"],
          [DATASET, MODEL, "hyperforget/zoo.py", "hyperforget/features.py", "hyperforget/train.py",
           "hyperforget/objectives.py", STAGE_CODE],
          outs=[ZOO]),
    Stage("hypernet", "hyperforget hypernet --variant ${item}", ["seed", "zoo", "hypernet"],
          [DATASET, MODEL, ZOO, "hyperforget/hypernet", STAGE_CODE],
          outs=[rel(_ART.base / "hypernet") + "/${item}"], foreach=list(VARIANTS)),
    Stage("compare", "hyperforget compare", ["seed", "train", "forget", "evaluation", "unlearn", "gates"],
          [DATASET, MODEL, ZOO, *HYPERNETS, *METHOD_CODE, "hyperforget/evaluate.py", "hyperforget/tables.py",
           STAGE_CODE],
          uncached=[rel(_ART.compare / "comparison.json")], metrics=[rel(_ART.compare / "headline.json")],
          plots=[rel(_ART.compare / "per_class.png")]),
    Stage("publish", "hyperforget publish",
          ["seed", "data.name", "model.arch", "train", "forget", "evaluation", "unlearn", "gates", "tracking",
           "storage"],
          [DATASET, MODEL, ZOO, *HYPERNETS, *METHOD_CODE, "hyperforget/publish.py", "hyperforget/registry.py",
           "hyperforget/export.py", STAGE_CODE],
          uncached=[rel(_ART.publish / "result.json"), rel(_ART.publish / "summary.md")]),
]


def stage(name: str) -> Stage:
    return next(s for s in STAGES if s.name == name)


def dvc_stages() -> dict[str, Any]:
    """The `stages:` mapping dvc.yaml must hold."""
    return {s.name: s.dvc() for s in STAGES}
