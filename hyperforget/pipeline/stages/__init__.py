"""Pipeline stages as plain functions over validated params and the project's `Artifacts`, one module per stage.

The CLI (and so `dvc repro`) and the Prefect `build` flow call exactly these, so a stage run by DVC
and the same stage run by Prefect write the same files and the same MLflow run. Each stage reads its
inputs from the artifact layout, writes its outputs there atomically and returns a JSON-able summary
(paths and metrics, never tensors). Outputs DVC hashes hold no volatile facts (wall times, run ids,
registry versions): those go to MLflow and `Artifacts.timing(stage)`, so an identical rerun changes
nothing DVC or git can see. Why one module per stage: a stage's code dependencies are the import closure
of its module (`hyperforget.pipeline.table`), so a module holds only what its stage runs. This package
re-exports the stage functions, so callers write `stages.prepare(params, art)`.
"""

from hyperforget.pipeline.stages.comparison import compare, evaluate_original
from hyperforget.pipeline.stages.dataset import import_data, prepare
from hyperforget.pipeline.stages.hypernets import ALIGNMENT_SETS, alignment_requests, hypernet
from hyperforget.pipeline.stages.original import train
from hyperforget.pipeline.stages.publication import publish, publish_markdown, summary
from hyperforget.pipeline.stages.reference_pool import pool, pool_finish, pool_plan, pool_unit
from hyperforget.pipeline.stages.zoo_build import zoo, zoo_finish, zoo_plan, zoo_unit

__all__ = ["ALIGNMENT_SETS", "alignment_requests", "compare", "evaluate_original", "hypernet", "import_data",
           "pool", "pool_finish", "pool_plan", "pool_unit", "prepare", "publish", "publish_markdown", "summary",
           "train", "zoo", "zoo_finish", "zoo_plan", "zoo_unit"]
