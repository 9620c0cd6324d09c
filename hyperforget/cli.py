"""The `hyperforget` command: parse options, call a stage, print where results went.

User errors (HyperForgetError) are printed without a traceback and exit with status 1; so does a
request whose model failed its gates (after the gate report). SIGTERM is turned into a normal exit,
so an interrupted command still ends its MLflow runs (as FAILED) and leaves no half-written file.
The project root is the folder of the params file (`--params`): nothing depends on the working directory.
"""

from __future__ import annotations

import json
import logging
import os
import signal
from pathlib import Path
from typing import Annotated
from uuid import uuid4

import typer
from rich.console import Console
from rich.table import Table

from hyperforget.base import records
from hyperforget.base.artifacts import Artifacts
from hyperforget.base.errors import ConfigError, HyperForgetError
from hyperforget.config.options import VARIANTS
from hyperforget.config.overlays import load_params, parse_overrides
from hyperforget.config.params import ForgetConfig, Params
from hyperforget.erasure import certificate, closing, deletion, evidence, ledger_records, project_ledger
from hyperforget.erasure import trueup as trueup_mod
from hyperforget.pipeline import answer, stages
from hyperforget.publish import release as publish
from hyperforget.unlearn import METHODS

HELP = (f"Machine unlearning by sampling weights. Methods: {', '.join(METHODS)}. "
        f"Hypernetwork variants: {', '.join(VARIANTS)}.")
app = typer.Typer(add_completion=False, no_args_is_help=True, help=HELP)
console = Console()

ParamsOpt = Annotated[Path, typer.Option("--params", "-p", help="params file")]
SetOpt = Annotated[list[str] | None, typer.Option("--set", help="override a param: KEY=VALUE (YAML value)")]


def _project(path: Path, sets: list[str] | None = None) -> tuple[Params, Artifacts]:
    return _params(path, sets), Artifacts.for_params(path)


def _params(path: Path, sets: list[str] | None) -> Params:
    return load_params(path, parse_overrides(sets or []))


def _wrote(*items: str) -> None:
    for item in items:
        console.print(f"[green]wrote[/green] {item}")


def per_class_table(title: str, per_class: list[float]) -> Table:
    table = Table(title=title)
    table.add_column("class", justify="right")
    table.add_column("test acc", justify="right")
    for c, acc in enumerate(per_class):
        table.add_row(str(c), f"{acc:.1%}")
    return table


@app.command("import-data")
def import_data(params: ParamsOpt = Path("params.yaml"), set_: SetOpt = None) -> None:
    """Materialise the raw data set files under data.raw_dir (the folder data.dvc tracks)."""
    out = stages.import_data(*_project(params, set_))
    _wrote(f"{out['raw_dir']} ({len(out['files'])} files)")


@app.command()
def prepare(params: ParamsOpt = Path("params.yaml"), set_: SetOpt = None) -> None:
    """Split the raw data into train/val/test tensors and write the dataset card."""
    p, art = _project(params, set_)
    out = stages.prepare(p, art)
    console.print(f"{out['card']['name']}: sizes {out['card']['sizes']}")
    _wrote(out["dataset"], str(art.card))


@app.command()
def train(params: ParamsOpt = Path("params.yaml"), set_: SetOpt = None) -> None:
    """Train the original model on all training data."""
    p, art = _project(params, set_)
    out = stages.train(p, art)
    m = out["metrics"]
    console.print(per_class_table(f"original model: test acc {m['test_acc']:.1%}", m["per_class_test_acc"]))
    _wrote(out["model"], str(art.train_metrics))


@app.command("evaluate-original")
def evaluate_original(params: ParamsOpt = Path("params.yaml"), set_: SetOpt = None) -> None:
    """Metrics of the original model on the configured forget request (the 'before' of unlearning)."""
    out = stages.evaluate_original(*_project(params, set_))
    r = out["report"]
    console.print(f"forget acc {r['forget_acc']:.1%}  retain acc {r['retain_acc']:.1%}  test acc {r['test_acc']:.1%}"
                  f"  MIA {r['mia']:.2f}")
    _wrote(out["metrics"])


@app.command()
def zoo(
    workers: Annotated[int, typer.Option(min=1, help="work units built at once (threads); same zoo for any")] = 2,
    params: ParamsOpt = Path("params.yaml"),
    set_: SetOpt = None,
) -> None:
    """Build the weight zoo: unlearning trajectories and retrains from θ0, sharded, resumable."""
    out = stages.zoo(*_project(params, set_), workers=workers)
    console.print(f"zoo: {out['rows']} checkpoints in {out['shards']} shards ({out['seconds']:.0f} s)")
    _wrote(out["out_dir"])


@app.command()
def pool(params: ParamsOpt = Path("params.yaml"), set_: SetOpt = None) -> None:
    """Build the reference pool once: per-class retrains and membership shadows every request is verified against;
    then measure what each class request reads beside it (kept under artifacts/requests/, keyed, never stale)."""
    p, art = _project(params, set_)
    out = stages.pool(p, art)
    console.print(f"reference pool: {p.pool.class_retrains} retrains per class, {p.pool.shadows} shadows, "
                  f"{out['built_units']} units built ({out['seconds']:.0f} s); sha256 {out['sha256'][:12]}…")
    refs = answer.warm_pool_references(p, art)
    console.print(f"class references: {refs['classes']} classes measured ({refs['seconds']:.0f} s)")
    _wrote(str(art.pool))


@app.command()
def hypernet(
    variant: Annotated[str, typer.Option(help=" or ".join(VARIANTS))] = "dihyfo2",
    params: ParamsOpt = Path("params.yaml"),
    set_: SetOpt = None,
) -> None:
    """Train the diffusion hypernetwork on the zoo (resumes from its last checkpoint)."""
    if variant not in VARIANTS:
        raise ConfigError(f"--variant {variant!r}: choose one of {', '.join(VARIANTS)}")
    p, art = _project(params, set_)
    out = stages.hypernet(p, art, variant)
    console.print(f"{variant}: {out['step']} steps, final loss {out['final_loss']:.4g}, {out['seconds']:.0f} s, "
                  f"mean prompt-alignment R² {out['mean_r2']:.2f}")
    _wrote(str(art.hypernet(variant)))


@app.command()
def unlearn(
    method: Annotated[str | None, typer.Option(help=f"one of {', '.join(METHODS)} (default: unlearn.method)")] = None,
    register: Annotated[bool, typer.Option(help="gate, register in MLflow, export ONNX, upload to S3")] = False,
    params: ParamsOpt = Path("params.yaml"),
    set_: SetOpt = None,
) -> None:
    """Answer the forget request in params (forget.*) with one method, in a folder of its own
    (artifacts/requests/<request>/<method>/runs/<name>/). Exits 1 if the model fails its gates."""
    p, art = _project(params, set_)
    if method is not None and method not in METHODS:
        raise ConfigError(f"--method {method!r}: choose one of {', '.join(METHODS)}")
    _report(answer.answer(p, art, method, run=f"cli-{uuid4().hex[:12]}", register=register))


@app.command("publish")
def publish_stage(params: ParamsOpt = Path("params.yaml"), set_: SetOpt = None) -> None:
    """The pipeline's own request (DVC stage `publish`): unlearn.method on forget.*, gated, registered,
    exported; writes artifacts/publish/. Exits 1 if the model fails its gates."""
    p, art = _project(params, set_)
    try:
        out = stages.publish(p, art)
    except HyperForgetError:
        if (art.publish / "summary.md").exists():
            console.print((art.publish / "summary.md").read_text(), highlight=False)
        raise
    _report(out)


def _report(out: answer.Answer) -> None:
    r, ref = out.request["report"], out.request["reference"]
    console.print(f"{out.request['method']} on {out.request['request_slug']}: forget acc {r['forget_acc']:.1%} "
                  f"(retrain {ref['forget_acc']['mean']:.1%}), retained test acc {r['test_retained_acc']:.1%} "
                  f"(retrain {ref['test_retained_acc']['mean']:.1%}), MIA {r['mia']:.2f}, "
                  f"{out.request['wall_time_s']:.2f} s")
    _wrote(out.request["model_path"], out.request["report_path"])
    print(out.summary)  # plain: Markdown, not rich markup
    if not out.passed:
        console.print("[bold red]gates failed:[/bold red] " + "; ".join(out.gates.reasons), highlight=False)
        raise SystemExit(1)


@app.command()
def compare(
    methods: Annotated[str | None, typer.Option(help="comma-separated methods (default: evaluation.methods)")] = None,
    params: ParamsOpt = Path("params.yaml"),
    set_: SetOpt = None,
) -> None:
    """Run every method and the retrain reference on the forget request; print and write the table."""
    from hyperforget.pipeline.compare import format_table

    out = stages.compare(*_project(params, set_), methods.split(",") if methods else None)
    print(format_table(out["result"]))  # plain: a wide table must not be re-wrapped at 80 columns
    _wrote(*out["written"].values())


@app.command()
def promote(name: str, version: str, params: ParamsOpt = Path("params.yaml"), set_: SetOpt = None) -> None:
    """Move the `champion` alias to NAME VERSION, only if it passed its gates and its ONNX is shipped."""
    out = publish.promote(name, version, *_project(params, set_))
    console.print(f"{out['name']} version {out['version']} is now @{out['alias']}")


@app.command()
def fetch(
    ref: Annotated[str, typer.Argument(help="NAME@ALIAS or NAME/VERSION")],
    out: Annotated[Path, typer.Option("--out", help="folder to write the ONNX file into")] = Path("."),
    params: ParamsOpt = Path("params.yaml"),
    set_: SetOpt = None,
) -> None:
    """Download the ONNX model of a registry version (S3 via boto3), verified against its sha256 tag."""
    path = publish.fetch(ref, out, *_project(params, set_))
    _wrote(f"{path} (sha256 verified)")


@app.command()
def export(name: str, version: str, params: ParamsOpt = Path("params.yaml"), set_: SetOpt = None) -> None:
    """Finish (or redo) a gated version: ONNX export, MLflow Model, S3 upload, verify; then `candidate` moves.
    The repair for a version an outage left without its ONNX."""
    out = publish.export_and_upload(name, version, *_project(params, set_))
    _wrote(f"{out['location']} (sha256 {out['sha256']})")


@app.command()
def summary(params: ParamsOpt = Path("params.yaml"), set_: SetOpt = None) -> None:
    """Print the comparison table and where the registered models and ONNX files are."""
    print(stages.summary(*_project(params, set_)))  # plain: a wide table must not be re-wrapped at 80 columns


params_app = typer.Typer(no_args_is_help=True, help="Params and experiment files (configs/*.yaml, `extends:`).")
app.add_typer(params_app, name="params")


@params_app.command("flags")
def params_flags(experiment: Annotated[Path, typer.Argument(help="an experiment file, e.g. configs/mnist-lenet.yaml")]
                 ) -> None:
    """Print the experiment as `dvc exp run` flags (`-S KEY=VALUE ...`, one shell line), after validating it:
    `dvc exp run $(hyperforget params flags configs/mnist-lenet.yaml)` (make run-mnist). On an error nothing
    is printed to stdout, the error goes to stderr, and the exit status is 1."""
    from hyperforget.config.overlays import dvc_flags

    try:
        load_params(experiment)
        flags = dvc_flags(experiment)
    except ConfigError as e:
        typer.echo(f"error: {e}", err=True)
        raise typer.Exit(1) from None
    typer.echo(flags)


request_app = typer.Typer(no_args_is_help=True, help="Deletion requests: submit, process, track, retire, and "
                          "verify their certificates (the ledger: requests.ledger_url or HYPERFORGET_LEDGER_URL).")
app.add_typer(request_app, name="request")


def _scope(rec: ledger_records.RequestRecord) -> str:
    return (f"classes {','.join(map(str, rec.classes))}" if rec.scope_kind == "classes"
            else f"{rec.n_records} records (ids sha256 {rec.ids_sha256[:12]}…)")


def _outcome(out: closing.Outcome) -> None:
    if out.new_public_key:
        console.print(f"[yellow]created the signing key[/yellow] (keep it safe; certificates are checked against it)."
                      f" Public key: {out.new_public_key}", highlight=False, soft_wrap=True)
    print(out.summary)  # plain: Markdown, not rich markup
    for m in out.pending:
        console.print(f"  pending: {m['name']} version {m['version']} (original {str(m.get('original'))[:12]}…)",
                      highlight=False, soft_wrap=True)
    console.print(f"request {out.request_id}: [bold]{out.state}[/bold]", highlight=False, soft_wrap=True)


def _parse_classes(text: str) -> list[int]:
    """`--classes 3,5` → [3, 5]. Strict, as a deletion request must be exactly what was asked: each item is a
    non-negative integer in the ASCII digits 0-9 (`int()` would also read '٣' as 3), none empty, none twice;
    ConfigError, one line, naming the item otherwise."""
    how = "give comma-separated classes, e.g. --classes 3,5"
    if not text.strip():
        raise ConfigError(f"--classes {text!r} is empty: {how}")
    items = [item.strip() for item in text.split(",")]
    for i, item in enumerate(items, 1):
        if not item:
            raise ConfigError(f"--classes {text!r}: item {i} is empty; {how}")
        if not (item.isascii() and item.isdigit()):
            raise ConfigError(f"--classes {text!r}: item {i}, {item!r}, is not a class number (a non-negative "
                              f"integer in the digits 0-9); {how}")
    classes = [int(item) for item in items]
    problem = ForgetConfig.classes_problem(classes)
    if problem:
        raise ConfigError(f"--classes {text!r} {problem}")
    return classes


@request_app.command("submit")
def request_submit(
    samples: Annotated[Path | None, typer.Option(help="file of record ids: per line, a train-split index or "
                                                 "sha256:<hex> of a record")] = None,
    classes: Annotated[str | None, typer.Option(help="comma-separated classes, e.g. 3,5")] = None,
    requester: Annotated[str, typer.Option(help="who asked (name, e-mail, ticket)")] = "unknown",
    request_id: Annotated[str | None, typer.Option("--id", help="request id (default: a new one); submitting "
                                                   "the same id and scope again changes nothing")] = None,
    params: ParamsOpt = Path("params.yaml"),
    set_: SetOpt = None,
) -> None:
    """Record a deletion request (state `received`, due in requests.deadline_days) after checking its ids."""
    if (samples is None) == (classes is None):
        raise ConfigError("give the records to delete: --samples FILE or --classes 3,5 (one of them)")
    wanted = None if classes is None else _parse_classes(classes)
    rec = deletion.submit(*_project(params, set_), classes=wanted, samples=samples, requester=requester,
                          request_id=request_id)
    console.print(f"request [bold]{rec.request_id}[/bold] {rec.state}: {_scope(rec)}, from {rec.requester}; "
                  f"due {rec.due_at:%Y-%m-%d %H:%M} UTC", highlight=False, soft_wrap=True)


@request_app.command("process")
def request_process(
    request_id: str,
    method: Annotated[str | None, typer.Option(help="default: unlearn.method (record-level requests fall back to "
                                               "requests.fallback_method when it is DiHyFo)")] = None,
    params: ParamsOpt = Path("params.yaml"),
    set_: SetOpt = None,
) -> None:
    """Scope, unlearn, verify, publish and (when every model in scope is answered) close a request, with its
    certificate. The same steps as the Prefect `unlearn` flow, without Prefect; safe to run again."""
    _outcome(deletion.process(*_project(params, set_), request_id, method))


@request_app.command("list")
def request_list(
    overdue: Annotated[bool, typer.Option(help="only requests past their due date and not closed")] = False,
    params: ParamsOpt = Path("params.yaml"),
    set_: SetOpt = None,
) -> None:
    """Every request (oldest first) with its state and due date."""
    rows, now = project_ledger.list_requests(*_project(params, set_), overdue=overdue), project_ledger.now()
    table = Table(title=f"{'overdue ' if overdue else ''}deletion requests ({len(rows)})")
    for col in ("id", "state", "since", "scope", "requester", "submitted", "due"):
        table.add_column(col)
    for r in rows:
        late = r.state != "closed" and r.due_at < now
        table.add_row(r.request_id, r.state, f"{r.state_at:%Y-%m-%d %H:%M}", _scope(r), r.requester,
                      f"{r.submitted_at:%Y-%m-%d}", f"{r.due_at:%Y-%m-%d}" + (" OVERDUE" if late else ""))
    Console(width=200).print(table)


@request_app.command("show")
def request_show(request_id: str, params: ParamsOpt = Path("params.yaml"), set_: SetOpt = None) -> None:
    """One request: its scope, every transition with its time and detail, and its notes (retirements, true-ups)."""
    out = project_ledger.show(*_project(params, set_), request_id)
    print(json.dumps(out, indent=2, sort_keys=True, ensure_ascii=False))


@request_app.command("retire")
def request_retire(
    name: str,
    version: str,
    request_id: Annotated[str, typer.Option("--request", help="the request whose scope holds the version")],
    reason: Annotated[str, typer.Option(help="why it may stay without an unlearned successor")] = "",
    params: ParamsOpt = Path("params.yaml"),
    set_: SetOpt = None,
) -> None:
    """Take a version in a request's scope out of service (aliases removed, tagged retired); the request
    closes when nothing else in its scope is pending."""
    _outcome(closing.retire(*_project(params, set_), request_id, name, version, reason))


@request_app.command("verify")
def request_verify(
    cert: Annotated[Path, typer.Argument(help="certificate.json (the files it names beside it)")],
    public_key: Annotated[str | None, typer.Option(help="expected signer, base64 (default: this project's key, "
                                                   "when it has one)")] = None,
    params: ParamsOpt = Path("params.yaml"),
    set_: SetOpt = None,
) -> None:
    """Check a certificate: signature (and signer), bytes, the sha256 of every file it names and of its ids.
    Exits 1 naming each problem."""
    if public_key is None and params.exists():
        p, art = _project(params, set_)
        public_key = evidence.project_public_key(art.resolve(p.requests.signing_key))
    problems = evidence.verify_certificate(cert, public_key)
    if problems:
        for problem in problems:
            console.print(f"[bold red]invalid:[/bold red] {problem}", highlight=False, soft_wrap=True)
        raise SystemExit(1)
    signer = json.loads(cert.read_text())["signature"]["public_key"]
    console.print(f"[green]valid[/green]: {cert} (signed by {certificate.fingerprint(signer)}"
                  f"{', the expected key' if public_key else '; no expected key given: signer not pinned'})",
                  highlight=False, soft_wrap=True)


@request_app.command("audit")
def request_audit(
    public_key: Annotated[str | None, typer.Option(help="check against this public key, base64 (default: the "
                                                   "project's ledger key)")] = None,
    params: ParamsOpt = Path("params.yaml"),
    set_: SetOpt = None,
) -> None:
    """Verify the whole ledger: every row's hash and signature, every history's links and legal moves. Prints a
    digest of every history's last row (keep it elsewhere: only such an anchor shows a deleted tail); exits 1
    naming the first bad row."""
    report = project_ledger.audit(*_project(params, set_), public_key=public_key)
    if report.problems:
        more = f" ({len(report.problems) - 1} more problems)" if len(report.problems) > 1 else ""
        console.print(f"[bold red]the ledger {report.url} does not verify:[/bold red] first bad row: "
                      f"{report.problems[0]}{more}", highlight=False, soft_wrap=True)
        raise SystemExit(1)
    signer = certificate.fingerprint(report.public_key) if report.public_key else "no key yet (empty)"
    console.print(f"[green]the ledger {report.url} verifies[/green]: {report.requests} requests, {report.rows} rows, "
                  f"signed by {signer}{'' if report.pinned else ' (signer not pinned)'}; digest {report.digest}",
                  highlight=False, soft_wrap=True)


@request_app.command("record-hashes")
def request_record_hashes(
    out: Annotated[Path, typer.Option("--out", help="file to write: `index sha256:<hex>` per train record")],
    params: ParamsOpt = Path("params.yaml"),
    set_: SetOpt = None,
) -> None:
    """The hash of every train record (as the certificate's record_hash defines it), to find a record's id."""
    _wrote(f"{deletion.write_record_hashes(*_project(params, set_), out)} ({records.RECORD_HASH})")


@app.command("trueup")
def trueup_cmd(
    force: Annotated[bool, typer.Option(help="retrain even if no request closed since the last true-up")] = False,
    promote: Annotated[bool, typer.Option(help="move `champion` to the exact model when it passes")] = True,
    params: ParamsOpt = Path("params.yaml"),
    set_: SetOpt = None,
) -> None:
    """Retrain from scratch without every closed request's records, gate, register `<data>-<arch>-trueup`,
    export, and move `champion` to it when it passes (the Prefect `trueup` flow does the same)."""
    out = trueup_mod.trueup(*_project(params, set_), force=force, promote=promote)
    if out.get("skipped"):
        console.print(f"nothing to true up: {out['skipped']}", soft_wrap=True)
        return
    reg, gates = out["registered"], out["gates"]
    console.print(f"{reg['name']} version {reg['version']}: retrained without {out['excluded_records']} records of "
                  f"{len(out['all_closed'])} closed requests; newly covered: {', '.join(out['requests']) or 'none'}",
                  highlight=False, soft_wrap=True)
    for name, check in gates["checks"].items():
        console.print(f"  {'PASS' if check['passed'] else 'FAIL'} {name}: {check['detail']}", highlight=False,
                      soft_wrap=True)
    if not gates["passed"]:
        console.print("[bold red]gates failed:[/bold red] " + "; ".join(gates["reasons"]), highlight=False,
                      soft_wrap=True)
        raise SystemExit(1)
    console.print(f"champion → version {reg['version']}" if out["champion"] else "champion not moved (--no-promote)")


def _terminate(signum: int, frame: object) -> None:
    """SIGTERM → SystemExit: context managers run, so MLflow runs end FAILED and temp files go."""
    raise SystemExit(128 + signum)


def main() -> None:
    logging.basicConfig(level=os.environ.get("HYPERFORGET_LOG", "INFO"), format="%(message)s")
    for chatty in ("onnxscript", "onnx_ir"):  # the ONNX optimiser narrates every pass at INFO
        logging.getLogger(chatty).setLevel(logging.WARNING)
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    signal.signal(signal.SIGTERM, _terminate)
    try:
        app()
    except HyperForgetError as e:
        # soft_wrap: one line however narrow the terminal, so the error reads (and greps) as one
        console.print(f"[bold red]error:[/bold red] {e}", highlight=False, soft_wrap=True)
        raise SystemExit(1) from None


if __name__ == "__main__":
    main()
