"""Deletion requests end to end, `request submit` → `closed`, against the retrain path on the same request.

    python bench/request_e2e.py [--params FILE] [--work DIR] [--method M] [--repeats 1] [--cold] [--kinds K ...]
                                [--json FILE]

Why: a request is answered when it is closed (gated, registered, exported to ONNX, certificate signed), not
when its unlearning returns, so this times the whole product path: `deletion.submit` + `deletion.process`,
each with a fresh request id, against the same request answered by `retrain` (one retrain without the data,
gated against the same reference, registered, exported, closed). Kinds, side by side in one run:
- class: one class (default: the params' `forget.classes[0]`), the fast method vs retrain; both read the pool;
- class_set: two classes. The pool holds no retrain without a set, so both paths answer it with
  `evaluation.reference=per_request` and each pays for its own reference (its cache is removed before every
  request); class_set_warm is the same set with that reference already cached (what a pool holding the set
  would give);
- records: `--records` seeded random train records, the record method (`requests.fallback_method` when the
  method is DiHyFo) vs retrain. An answer whose test has no power is re-answered exactly (`retrain`, the
  `unlearned` step's `fallback`); the row says which.
Set-up in --work (default work/request-e2e-<experiment>/): import → prepare → train θ0 (each once), the zoo
and the hypernetwork when a DiHyFo variant answers, then the reference pool, timed: its one-time cost, and
after how many requests it has paid for itself (pool seconds / (retrain path − fast path) seconds). The
project uses the embedded default: sqlite MLflow and ledger under --work, no S3 (the ONNX file stays in the
MLflow run), no `.dvc/` (so a record request's close erases no data: that step is not timed here).
Repeats alternate which path goes first; the table shows medians. `--cold` runs each timed request as a user
does, `hyperforget request submit` and `request process` in fresh processes (imports, MLflow's first use, the
ONNX exporter's start: paid by every request); without it, in this process after an untimed warm-up request.
Writes --json (default bench/results/request_e2e_<experiment>[_cold].json).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from uuid import uuid4

from hyperforget.base.runtime import configure

configure()  # before torch loads (OMP_WAIT_POLICY), as the CLI does

import torch  # noqa: E402
import yaml  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import PARAMS, experiment_raw, work_folder  # noqa: E402

from hyperforget.base.artifacts import Artifacts  # noqa: E402
from hyperforget.base.errors import ConfigError, HyperForgetError  # noqa: E402
from hyperforget.base.io import read_json  # noqa: E402
from hyperforget.config.options import VARIANTS  # noqa: E402
from hyperforget.config.overlays import load_params, parse_overrides  # noqa: E402
from hyperforget.config.params import Params  # noqa: E402
from hyperforget.data.datasets import load_dataset  # noqa: E402
from hyperforget.erasure import deletion  # noqa: E402
from hyperforget.erasure.project_ledger import details, opened  # noqa: E402
from hyperforget.pipeline import answer, stages  # noqa: E402
from hyperforget.pipeline.compare import machine  # noqa: E402
from hyperforget.publish import release  # noqa: E402
from hyperforget.verify import pool as pool_mod  # noqa: E402

RETRAIN = "retrain"
TARGETS = {"class": 20.0, "class_set": 20.0, "class_set_warm": 20.0, "records": 5.0}
ENDPOINT_VARS = ("MLFLOW_TRACKING_URI", "HYPERFORGET_S3_ENDPOINT", "HYPERFORGET_LEDGER_URL",
                 "HYPERFORGET_SIGNING_KEY")  # the bench's project is the embedded default: its own sqlite files


def log(msg: str) -> None:
    print(f"[{datetime.now(UTC):%H:%M:%S}] {msg}", file=sys.stderr, flush=True)


# ---------- set-up ----------


def project(params_file: str, work: Path, sets: list[str]) -> tuple[Params, Artifacts]:
    """The experiment's params written as `work`/params.yaml (data.source absolute), validated."""
    raw = experiment_raw(params_file, overrides=parse_overrides(sets))
    text = yaml.safe_dump(raw, sort_keys=False)
    path = work / "params.yaml"
    if path.exists() and path.read_text() != text:
        raise SystemExit(f"{path} holds other params than {params_file} (+ --set): use another --work")
    work.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return load_params(path), Artifacts.for_params(path)


def timed(fn, *a) -> tuple[Any, float]:
    t0 = time.perf_counter()
    out = fn(*a)
    return out, time.perf_counter() - t0


def setup(params: Params, art: Artifacts, method: str) -> dict[str, Any]:
    """Build what is missing (data, θ0, zoo + hypernet for DiHyFo, the pool); each stage's seconds this run."""
    done: dict[str, Any] = {}
    if not art.dataset.exists():
        _, done["import_data_s"] = timed(stages.import_data, params, art)
        _, done["prepare_s"] = timed(stages.prepare, params, art)
    if not art.model.exists():
        _, done["train_s"] = timed(stages.train, params, art)
        log(f"θ0 trained in {done['train_s']:.1f} s")
    if method in VARIANTS:
        zoo, done["zoo_s"] = timed(stages.zoo, params, art)
        log(f"zoo: {done['zoo_s']:.1f} s this run ({zoo.get('rows')} rows)")
        _, done[f"hypernet_{method}_s"] = timed(stages.hypernet, params, art, method)
        log(f"hypernet {method}: {done[f'hypernet_{method}_s']:.1f} s this run")
    try:
        pool_mod.load_current(art, params)
        log("pool: current, reused")
    except ConfigError:
        log(f"pool: building ({params.pool.class_retrains} retrains per class, {params.pool.shadows} shadows)")
        _, done["pool_s"] = timed(stages.pool, params, art)
        log(f"pool built in {done['pool_s']:.1f} s")
    refs, done["pool_references_s"] = timed(answer.warm_pool_references, params, art)  # as `hyperforget pool`
    log(f"class references: {refs['classes']} classes, {done['pool_references_s']:.1f} s this run (measured "
        "once per pool; a rerun reads them)")
    pool = pool_mod.load_current(art, params)
    timing = read_json(art.timing("pool")) if art.timing("pool").exists() else {}
    dihyfo = None
    if method in VARIANTS:  # the zoo's and the hypernet's one-time cost, as their stages recorded it
        dihyfo = {s: read_json(art.timing(s)).get("seconds") for s in ("zoo", f"hypernet-{method}")
                  if art.timing(s).exists()}
    build_s = timing.get("seconds", done.get("pool_s"))
    return {"this_run": done, "pool": {"seconds": build_s + done["pool_references_s"], "build_s": build_s,
                                       "references_s": done["pool_references_s"],
                                       "built_units": timing.get("built_units"), "sha256": pool.sha256,
                                       "timing_file": str(art.timing("pool").relative_to(art.root)),
                                       "class_retrains": params.pool.class_retrains, "shadows": params.pool.shadows},
            "dihyfo": dihyfo}


# ---------- one request ----------


def per_request(params: Params) -> Params:
    return params.model_copy(update={"evaluation": params.evaluation.model_copy(update={"reference": "per_request"})})


def drop_reference(params: Params, art: Artifacts, classes: list[int]) -> bool:
    """Remove the per-request reference cached for `classes`, so the next request trains (and pays for) its own."""
    slug = reference_slug(params, classes)
    found = False
    for f in (art.reference(slug), art.reference_models(slug)):
        found |= f.exists()
        f.unlink(missing_ok=True)
    return found


def reference_slug(params: Params, classes: list[int]) -> str:
    return params.forget.model_copy(update={"classes": sorted(classes), "samples": None, "fraction": None}).slug()


def params_file(params: Params, art: Artifacts) -> Path:
    """The file a `--cold` request's CLI reads: the project's params.yaml, or beside it the same params with a
    per-request reference (class sets), in the same project folder."""
    path = art.root / "params.yaml"
    if params.evaluation.reference == "per_request":
        raw = yaml.safe_load(path.read_text())
        raw.setdefault("evaluation", {})["reference"] = "per_request"
        path = art.root / "params-per-request.yaml"
        path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return path


def cli_request(params: Params, art: Artifacts, rid: str, method: str, classes: list[int] | None,
                samples: list[int] | None, threads: int) -> str | None:
    """`hyperforget request submit` then `hyperforget request process`, each a fresh process, as a user (or a
    flow run on the process worker) runs them; None, or the failure's last lines."""
    pf = params_file(params, art)
    if classes:
        scope = ["--classes", ",".join(map(str, classes))]
    else:
        ids = art.root / f"{rid}.ids"
        ids.write_text("".join(f"{i}\n" for i in samples or []))
        scope = ["--samples", str(ids)]
    cli = [sys.executable, "-m", "hyperforget", "request"]
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    for argv in (["submit", *scope, "--id", rid, "--requester", "bench/request_e2e.py"], ["process", rid, "--method",
                                                                                            method]):
        done = subprocess.run([*cli, *argv, "--params", str(pf)], capture_output=True, text=True, env=env)
        if done.returncode:
            return f"`hyperforget request {argv[0]}` exited {done.returncode}: " + (done.stderr or done.stdout)[-600:]
    return None


def request(params: Params, art: Artifacts, kind: str, path: str, method: str, repeat: int,
            classes: list[int] | None = None, samples: list[int] | None = None, cold: bool = False,
            threads: int = 2) -> dict[str, Any]:
    """Submit and process one request, in this process or (`cold`) through the CLI in fresh processes; its wall
    time from submit to closed (or to its failure) and what it did."""
    cached = classes is not None and art.reference(reference_slug(params, classes)).exists()
    rid = f"e2e-{kind}-{path}-{repeat}-{uuid4().hex[:6]}"
    error = None
    t0 = time.perf_counter()
    if cold:
        error = cli_request(params, art, rid, method, classes, samples, threads)
    else:
        deletion.submit(params, art, classes=classes, samples=samples, requester="bench/request_e2e.py",
                        request_id=rid)
        try:
            deletion.process(params, art, rid, method=method)
        except HyperForgetError as e:  # a failed gate (or another refusal): the request is `failed`, timed to here
            error = f"{type(e).__name__}: {e}"
    seconds = time.perf_counter() - t0
    with opened(params, art, None) as led:
        state = led.get(rid).state
        steps = details(led, rid)
    unlearned = steps.get("unlearned", {})
    gates = steps.get("verified", {}).get("gates")
    if gates is None and unlearned.get("report_path"):  # failed: the verdict from the report it was gated on
        gates = release.gate(read_json(art.root / unlearned["report_path"]), params).to_dict()
    timing = {}
    if unlearned.get("report_path"):
        tpath = (art.root / unlearned["report_path"]).with_name("timing.json")
        timing = {k: v for k, v in read_json(tpath).items() if k != "info"} if tpath.exists() else {}
    final = unlearned.get("method", method)
    source = unlearned.get("reference_source") or {}
    fallback = unlearned.get("fallback")
    trained_ref = source.get("retrains", 0) if source.get("kind") == "per_request" and not cached else 0
    trained = (unlearned.get("options") or {}).get("seeds", 1) if final == RETRAIN else 0
    power = unlearned.get("power") or {}
    exact = final == RETRAIN
    row = {
        "kind": kind, "path": path, "repeat": repeat, "request_id": rid, "requested_method": method,
        "method": final, "seconds": seconds, "state": state, "closed": state == "closed",
        "gates_passed": None if gates is None else bool(gates["passed"]),
        "gate_reasons": [] if gates is None else gates["reasons"],
        "fallback": fallback,
        "no_power_fallback": bool(fallback and fallback.get("to") == RETRAIN and not power.get("has_power")),
        "gate_fallback": bool(fallback and fallback.get("to") == RETRAIN and power.get("has_power")),
        "power": power, "answer": "exact" if exact else ("powered" if power.get("has_power") else "unpowered"),
        "reference": source.get("kind"), "reference_retrains_trained": trained_ref,
        "models_trained": trained_ref + trained,
        "timing": timing, "registered": steps.get("published", {}).get("registered"),
        "exported": bool(steps.get("published", {}).get("exported")), "error": error}
    if kind != "records" or classes:
        row["classes"] = classes
    else:
        row["n_records"] = len(samples or [])
    log(f"{kind:15s} {path:7s} {final:12s} {seconds:8.2f} s  {state:8s} gates "
        f"{'pass' if row['gates_passed'] else 'FAIL'}  {row['answer']}"
        f"{'  (no power → retrain)' if row['no_power_fallback'] else ''}"
        f"{'  (gates failed → retrain)' if row['gate_fallback'] else ''}  models trained {row['models_trained']}")
    return row


def warm_export(art: Artifacts) -> None:
    """First-use costs of the export step (onnx, onnxruntime, mlflow.onnx imports; the exporter) on θ0."""
    import tempfile

    import mlflow.onnx  # noqa: F401

    from hyperforget.models.nets import load_model
    from hyperforget.publish.onnx import export_onnx

    model, spec = load_model(art.model)
    x = load_dataset(art.prepare).x_test[:64]
    with tempfile.TemporaryDirectory() as tmp:
        export_onnx(model, spec, Path(tmp) / "model.onnx", x[:8], x)


# ---------- the run ----------


def kinds(params: Params, art: Artifacts, args: argparse.Namespace) -> list[dict[str, Any]]:
    single = args.classes or [(params.forget.classes or [3])[0]]
    data = load_dataset(art.prepare)
    n = len(data.y_train)
    gen = torch.Generator().manual_seed(args.seed if args.seed is not None else params.seed)
    ids = sorted(torch.randperm(n, generator=gen)[:args.records].tolist())
    set_params = per_request(params)
    plan = [{"kind": "class", "params": params, "classes": single},
            {"kind": "class_set", "params": set_params, "classes": args.class_set, "cold": True},
            {"kind": "class_set_warm", "params": set_params, "classes": args.class_set, "cold": False},
            {"kind": "records", "params": params, "samples": ids}]
    return [k for k in plan if k["kind"] in args.kinds]


def measure(params: Params, art: Artifacts, args: argparse.Namespace, method: str) -> list[dict[str, Any]]:
    rows = []
    plan = kinds(params, art, args)
    for r in range(args.repeats):
        for k in plan:
            order = ("fast", "retrain") if r % 2 == 0 else ("retrain", "fast")
            for path in order:
                if k["kind"].startswith("class_set"):
                    if k["cold"]:
                        drop_reference(k["params"], art, k["classes"])
                    elif not art.reference(reference_slug(k["params"], k["classes"])).exists():
                        continue  # nothing cached (the cold request failed before training it)
                rows.append(request(k["params"], art, k["kind"], path, method if path == "fast" else RETRAIN, r,
                                    classes=k.get("classes"), samples=k.get("samples"), cold=args.cold,
                                    threads=args.threads))
    return rows


def breakdown(rows: list[dict[str, Any]]) -> dict[str, float]:
    """Medians of where a request's seconds went: the reference (pool read or per-request retrains), the
    method, verification (with the power test), and the rest (submit, scope, registry, ONNX export, ledger,
    certificate; with a no-power fallback also the first method's answer)."""
    parts = {"reference_s": "reference_s", "method_s": "wall_time_s", "verify_s": "verify_s"}
    out = {k: statistics.median(r["timing"].get(v, 0.0) for r in rows) for k, v in parts.items()}
    out["rest_s"] = statistics.median(r["seconds"] - sum(r["timing"].get(v, 0.0) for v in parts.values())
                                      for r in rows)
    return out


def summarise(rows: list[dict[str, Any]], pool_s: float | None, dihyfo_s: float | None) -> dict[str, Any]:
    out = {}
    for kind in dict.fromkeys(r["kind"] for r in rows):
        fast = [r for r in rows if r["kind"] == kind and r["path"] == "fast"]
        slow = [r for r in rows if r["kind"] == kind and r["path"] == "retrain"]
        if not fast or not slow:
            continue
        f, s = statistics.median(r["seconds"] for r in fast), statistics.median(r["seconds"] for r in slow)
        ratio = s / f
        saved = s - f
        uses_pool = kind in ("class", "records")
        target = TARGETS[kind]
        closed = all(r["closed"] for r in fast)
        entry = {"fast_method": fast[0]["requested_method"], "fast_methods_used": sorted({r["method"] for r in fast}),
                 "fast_s": f, "retrain_s": s, "ratio": ratio, "target": target,
                 "met": bool(ratio >= target and closed), "shortfall": None if ratio >= target else target / ratio,
                 "fast_closed": closed, "retrain_closed": all(r["closed"] for r in slow),
                 "fast_gates_passed": [r["gates_passed"] for r in fast],
                 "retrain_gates_passed": [r["gates_passed"] for r in slow],
                 "fast_answer": sorted({r["answer"] for r in fast}),
                 "fast_no_power_fallback": [r["no_power_fallback"] for r in fast],
                 "fast_gate_fallback": [r["gate_fallback"] for r in fast],
                 "fast_models_trained": statistics.median(r["models_trained"] for r in fast),
                 "retrain_models_trained": statistics.median(r["models_trained"] for r in slow),
                 "repeats": len(fast), "reference": fast[0]["reference"],
                 "fast_breakdown_s": breakdown(fast), "retrain_breakdown_s": breakdown(slow)}
        if uses_pool and pool_s:  # None: the fast path saves nothing, or does not close (nothing to pay back)
            pays = saved > 0 and closed
            entry["break_even_requests"] = pool_s / saved if pays else None
            if dihyfo_s and kind == "class" and fast[0]["requested_method"] in VARIANTS:
                entry["break_even_requests_with_zoo_hypernet"] = (pool_s + dihyfo_s) / saved if pays else None
        out[kind] = entry
    return out


def table(summary: dict[str, Any]) -> str:
    lines = ["| kind | fast method | fast s | retrain path s | ratio | target | met | fast verdict | answer |",
             "|---|---|---:|---:|---:|---:|---|---|---|"]
    for kind, e in summary.items():
        verdict = ", ".join("pass" if g else "FAIL" for g in e["fast_gates_passed"])
        lines.append(f"| {kind} | {'/'.join(e['fast_methods_used'])} | {e['fast_s']:.2f} | {e['retrain_s']:.2f} | "
                     f"{e['ratio']:.1f}× | {e['target']:.0f}× | {'yes' if e['met'] else 'no'} | {verdict} | "
                     f"{', '.join(e['fast_answer'])} |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--params", default=str(PARAMS), help="experiment file (default: params.yaml, digits)")
    ap.add_argument("--set", action="append", default=[], help="param override KEY=VALUE (YAML value)")
    ap.add_argument("--work", type=Path, default=None, help="project folder (default: work/request-e2e-<experiment>)")
    ap.add_argument("--method", default=None, help="the fast method (default: the params' unlearn.method)")
    ap.add_argument("--classes", type=lambda s: [int(c) for c in s.split(",")], default=None,
                    help="the single class (default: the params' forget.classes[0])")
    ap.add_argument("--class-set", type=lambda s: [int(c) for c in s.split(",")], default=[3, 5])
    ap.add_argument("--kinds", nargs="+", default=list(TARGETS), choices=list(TARGETS),
                    help="the request kinds to time (default: all; a cold class set trains its own reference)")
    ap.add_argument("--records", type=int, default=100, help="record request size (seeded random train ids)")
    ap.add_argument("--seed", type=int, default=None, help="seed of the record ids (default: the params' seed)")
    ap.add_argument("--repeats", type=int, default=1, help="rounds; odd rounds time the retrain path first")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--cold", action="store_true", help="every timed request through the CLI, `hyperforget request "
                    "submit` then `request process`, each a fresh process (what a user, or a flow run on the process "
                    "worker, waits for: imports and the exporter's start included)")
    ap.add_argument("--no-warmup", action="store_true", help="skip the untimed warm-up request")
    ap.add_argument("--json", type=Path, default=None)
    ap.add_argument("--summarise", type=Path, default=None, metavar="JSON",
                    help="recompute the summary of a JSON this bench wrote (in place) and print its table")
    args = ap.parse_args()
    if args.summarise:
        rec = json.loads(args.summarise.read_text())
        rec["summary"] = summarise(rec["requests"], rec["setup"]["pool"]["seconds"], rec.get("dihyfo_one_time_s"))
        args.summarise.write_text(json.dumps(rec, indent=2, default=str) + "\n")
        print(table(rec["summary"]))
        return
    started, w0 = datetime.now(UTC), time.perf_counter()
    for var in ENDPOINT_VARS:
        os.environ.pop(var, None)
    torch.set_num_threads(args.threads)
    stem = Path(args.params).stem if Path(args.params).resolve() != PARAMS.resolve() else "digits"
    work = (args.work or work_folder(f"request-e2e-{stem}")).resolve()
    params, art = project(args.params, work, args.set)
    method = args.method or params.unlearn.method
    log(f"project {work}: {params.data.name} {params.model.arch}, fast method {method}, {args.threads} threads")
    built = setup(params, art, method)
    warmup = None
    if not args.no_warmup:  # imports (MLflow, ONNX), the signing key, the registry: first-use costs, untimed
        n = load_dataset(art.prepare).num_classes
        single = args.classes or [(params.forget.classes or [3])[0]]
        warm = next(c for c in range(n) if c not in single + args.class_set)
        log(f"warm-up request (class {warm}, untimed)")
        warmup = request(params, art, "warmup", "fast", method, 0, classes=[warm])
        if not warmup["exported"]:  # failed its gates, so nothing was exported: warm the ONNX path on θ0
            _, warmup["onnx_warmup_s"] = timed(warm_export, art)
            log(f"warm-up ONNX export of θ0: {warmup['onnx_warmup_s']:.1f} s (untimed)")
    rows = measure(params, art, args, method)
    dihyfo_s = sum(v for v in built["dihyfo"].values() if v) if built["dihyfo"] else None
    summary = summarise(rows, built["pool"]["seconds"], dihyfo_s)
    print(f"\n{params.data.name} {params.model.arch}, {args.threads} threads, median of {args.repeats}; pool "
          f"{built['pool']['seconds']:.1f} s one-time\n" + table(summary))
    for kind, e in summary.items():
        if "break_even_requests" in e:
            be = e["break_even_requests"]
            print(f"{kind}: the pool has paid for itself after {be:.1f} requests" if be else
                  f"{kind}: the fast path saves nothing or does not close, so the pool never pays for itself")
    stamp = datetime.now(UTC)
    record = {"command": "python bench/request_e2e.py " + " ".join(sys.argv[1:]), "started": started.isoformat(),
              "finished": stamp.isoformat(), "wall_s": time.perf_counter() - w0, "machine": machine(),
              "loadavg_1min_end": os.getloadavg()[0], "dataset": params.data.name, "arch": params.model.arch,
              "params": args.params, "work": str(work), "method": method,
              "record_method": params.requests.fallback_method if method in VARIANTS else method,
              "repeats": args.repeats, "threads": args.threads, "cold": args.cold, "kinds": args.kinds,
              "setup": built,
              "dihyfo_one_time_s": dihyfo_s,
              "summary": summary, "requests": rows, "warmup": warmup}
    out = args.json or Path(__file__).parent / "results" / (f"request_e2e_{stem.replace('-', '_')}"
                                                            f"{'_cold' if args.cold else ''}.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(record, indent=2, default=str) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
