"""What every stage shares: its MLflow run and the project's data folders made absolute."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from hyperforget.base.artifacts import Artifacts
from hyperforget.base.io import write_json
from hyperforget.config.params import DataConfig, Params
from hyperforget.publish import runs


def track(params: Params, art: Artifacts, stage: str, metrics: dict, files: list[Path] = (), parent: Any = None
          ) -> None:
    """One MLflow run for this stage execution: flattened params, metrics (per-class too), artifacts."""
    with runs.start_stage_run(params, art, stage, parent=parent) as run:
        run.log_metrics(metrics)
        run.log_artifacts([f for f in files if Path(f).exists()], stage)


def keep_build_timing(art: Artifacts, name: str, built: bool, timing: dict[str, Any]) -> None:
    """Write what building `name` cost, unless this run built nothing and an earlier run's cost is on file: a second
    `dvc repro`, or a bench reusing the project, would otherwise replace the build's seconds with its own."""
    if built or not art.timing(name).exists():
        write_json(art.timing(name), timing)


def data_config(params: Params, art: Artifacts) -> DataConfig:
    """`data:` with its folders made absolute under the project root."""
    source = str(art.resolve(params.data.source)) if params.data.source else None
    return params.data.model_copy(update={"raw_dir": str(art.resolve(params.data.raw_dir)), "source": source})
