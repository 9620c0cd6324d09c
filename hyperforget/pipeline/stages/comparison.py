"""Stage `compare`: rank the methods on the configured request against the retrain reference; and θ0's
metrics on that request (`evaluate-original`, the 'before' of unlearning)."""

from __future__ import annotations

from hyperforget.base.artifacts import Artifacts
from hyperforget.base.io import jsonable, write_json
from hyperforget.config.params import Params
from hyperforget.pipeline import answer as answer_mod
from hyperforget.pipeline.compare import compare as run_compare
from hyperforget.pipeline.compare import write_report
from hyperforget.pipeline.stages.common import track


def compare(params: Params, art: Artifacts, methods: list[str] | None = None) -> dict:
    """Rank methods on the configured request against the retrain reference; write JSON, Markdown, PNG."""
    ctx = answer_mod.context(params, art)
    result = run_compare(params, answer_mod.inputs(params, art, ctx), methods or params.evaluation.methods)
    written = write_report(result, art.compare, art.timing("compare"))
    track(params, art, "compare", {name: m["report"] | m["gaps"] | {"wall_time_s": m["wall_time_s"]}
                                   | {"verification": m["verification"], "gates_passed": m["gates"]["passed"]}
                                   for name, m in result["methods"].items()}, list(written.values()))
    return {"result": result, "written": {k: str(v) for k, v in written.items()}}


def evaluate_original(params: Params, art: Artifacts) -> dict:
    """Metrics of the original model on the configured forget request (the 'before' of unlearning)."""
    ctx = answer_mod.context(params, art)
    report = ctx.report(ctx.original)
    out = art.original_metrics
    write_json(out, jsonable({"request": params.forget.slug(), **report}))
    track(params, art, "evaluate-original", report, [out])
    return {"metrics": str(out), "report": report}
