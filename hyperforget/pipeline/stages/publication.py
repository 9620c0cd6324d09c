"""Stage `publish` (the pipeline's own request, answered and registered) and the summary `make run` ends with."""

from __future__ import annotations

from hyperforget.base.artifacts import Artifacts
from hyperforget.base.errors import GateFailed
from hyperforget.base.io import jsonable, read_json, write_json, write_text
from hyperforget.config.params import Params
from hyperforget.pipeline import answer as answer_mod
from hyperforget.pipeline.compare import format_table, load_report
from hyperforget.publish import release as publish_mod
from hyperforget.publish import tracking


def publish(params: Params, art: Artifacts) -> answer_mod.Answer:
    """The pipeline's own request (params' forget request, `unlearn.method`), answered and registered;
    `publish/result.json` and `summary.md` hold what it did, the registry version and run go to timings.
    GateFailed (after writing them) when the model failed its gates: the stage fails like the flow."""
    out = answer_mod.answer(params, art, register=True, request_key="pipeline")
    write_json(art.publish / "result.json", jsonable({k: v for k, v in out.to_dict().items()
                                                      if k not in ("registered", "exported")}))
    write_text(art.publish / "summary.md", publish_markdown(out))
    write_json(art.timing("publish"), jsonable({"registered": out.registered, "exported": out.exported}))
    if not out.passed:
        raise GateFailed(f"the {out.request['method']} model for {out.request['request_slug']} failed its gates: "
                         f"{'; '.join(out.gates.reasons)}; it was registered without an alias and not exported")
    return out


def publish_markdown(out: answer_mod.Answer) -> str:
    """The request summary without the registry's volatile facts (version, run id): a DVC output."""
    return publish_mod.summary_markdown(out.request, out.gates, None, None)


def summary(params: Params, art: Artifacts) -> str:
    """What `make run` ends with: the comparison table and where the published model went."""
    parts = []
    if (art.compare / "comparison.json").exists():
        parts.append(format_table(load_report(art.compare, art.timing("compare"))))
    if (art.publish / "result.json").exists() and art.timing("publish").exists():
        r, where = read_json(art.publish / "result.json"), read_json(art.timing("publish"))
        reg, exp = where["registered"], where["exported"]
        parts.append(f"registered: {reg['name']} version {reg['version']} (run {reg['run_id']}) in "
                     f"{tracking.tracking_uri(params, art)}; gates "
                     f"{'passed → alias candidate' if r['gates']['passed'] else 'FAILED → no alias'}")
        parts.append(f"ONNX: {exp['location']} (sha256 {exp['sha256'][:12]}…)" if exp else "ONNX: not exported")
    return "\n\n".join(parts) or "nothing yet: run `dvc repro`"
