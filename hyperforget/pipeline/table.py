"""The pipeline in one table: each stage's command, the params it reads, its data dependencies and outputs.

Why a table: `dvc.yaml` (what `dvc repro` runs) and the Prefect `build` flow (which caches each stage
by the params it reads and the code it runs) must agree, and a hand copy drifted. `dvc.yaml` is checked
against `dvc_stages()` by a unit test, and the flow takes its cache keys from `STAGES`. A stage's code
dependencies are never listed by hand: they are the import closure of its module (`code_files`, from
grimp's import graph, which import-linter also reads), so a module a stage runs cannot be missed and a
module it does not run never re-runs it. Params are listed as DVC does: a whole section, or a dotted key
when a stage reads only that key of a section (publish names its model by data.name and model.arch).
`tracking:` only says where runs are logged, never what a stage writes, so only publish, whose registry
lives there, lists it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

from hyperforget.base.artifacts import Artifacts
from hyperforget.config.options import VARIANTS

_ART = Artifacts(Path("/project"))  # only to spell paths relative to the root
PACKAGE = "hyperforget"


def rel(path: Path) -> str:
    return path.relative_to(_ART.root).as_posix()


DATASET, MODEL, ZOO, POOL = rel(_ART.dataset), rel(_ART.model), rel(_ART.zoo), rel(_ART.pool)
HYPERNETS = [rel(_ART.hypernet(v)) for v in VARIANTS]


@cache
def _graph():
    import grimp  # the import graph costs a second: built only when a stage's code is asked for

    return grimp.build_graph(PACKAGE, cache_dir=None)


def _file(module: str) -> str:
    """`hyperforget.a.b` → `hyperforget/a/b.py`, or `hyperforget/a/b/__init__.py` for a package."""
    parts = module.split(".")
    if Path(__file__).resolve().parents[2].joinpath(*parts).is_dir():
        return "/".join([*parts, "__init__.py"])
    return "/".join(parts) + ".py"


def code_files(module: str) -> list[str]:
    """The source files a stage module runs: itself, every module it imports directly or indirectly, and the
    `__init__.py` of each package on the way (Python runs those first), relative to the project root."""
    graph = _graph()
    modules = {module, *graph.find_upstream_modules(module)}
    for m in list(modules):
        parts = m.split(".")
        modules.update(".".join(parts[:i]) for i in range(1, len(parts)))
    return sorted(_file(m) for m in modules)


@dataclass(frozen=True)
class Stage:
    """One DVC stage. `outs` are cached by DVC; `uncached` outs and `plots` are small files kept out of the
    cache (cache: false). `metrics` are cached: artifacts/ is git-ignored, so an experiment run with
    `dvc exp run --temp` (make run-mnist) can only show its metrics in `dvc exp show` from the DVC cache.
    `foreach` makes it a DVC foreach stage over those items."""

    name: str
    cmd: str
    module: str
    params: list[str]
    data: list[str]
    outs: list[str] = field(default_factory=list)
    uncached: list[str] = field(default_factory=list)
    metrics: list[str] = field(default_factory=list)
    plots: list[str] = field(default_factory=list)
    foreach: list[str] | None = None

    @property
    def deps(self) -> list[str]:
        """The data it reads, then the code it runs (`code_files` of its module)."""
        return [*self.data, *code_files(self.module)]

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


_STAGE = "hyperforget.pipeline.stages."

STAGES: list[Stage] = [
    Stage("prepare", "hyperforget prepare", _STAGE + "dataset", ["data"], ["data/raw"],
          outs=[DATASET, f"{DATASET}.sha256"], uncached=[rel(_ART.card)]),
    Stage("train", "hyperforget train", _STAGE + "original", ["model", "train"], [DATASET],
          outs=[MODEL, f"{MODEL}.sha256"], metrics=[rel(_ART.train_metrics)]),
    Stage("zoo", "hyperforget zoo", _STAGE + "zoo_build", ["train", "zoo", "hypernet.generate"], [DATASET, MODEL],
          outs=[ZOO]),
    Stage("pool", "hyperforget pool", _STAGE + "reference_pool", ["train", "pool"], [DATASET, MODEL], outs=[POOL]),
    Stage("hypernet", "hyperforget hypernet --variant ${item}", _STAGE + "hypernets", ["seed", "zoo", "hypernet"],
          [DATASET, MODEL, ZOO], outs=[rel(_ART.base / "hypernet") + "/${item}"], foreach=list(VARIANTS)),
    Stage("compare", "hyperforget compare", _STAGE + "comparison",
          ["seed", "train", "forget", "evaluation", "unlearn", "gates"], [DATASET, MODEL, ZOO, *HYPERNETS],
          uncached=[rel(_ART.compare / "comparison.json")], metrics=[rel(_ART.compare / "headline.json")],
          plots=[rel(_ART.compare / "per_class.png")]),
    Stage("publish", "hyperforget publish", _STAGE + "publication",
          ["seed", "data.name", "model.arch", "train", "forget", "evaluation", "pool", "unlearn", "gates", "tracking",
           "storage"],
          [DATASET, MODEL, ZOO, POOL, *HYPERNETS],
          uncached=[rel(_ART.publish / "result.json"), rel(_ART.publish / "summary.md")]),
]


def stage(name: str) -> Stage:
    return next(s for s in STAGES if s.name == name)


def dvc_stages() -> dict[str, Any]:
    """The `stages:` mapping dvc.yaml must hold."""
    return {s.name: s.dvc() for s in STAGES}
