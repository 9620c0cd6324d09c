"""The `hyperforget` command: parse options, call a stage, print where results went.

User errors (HyperForgetError) are printed without a traceback and exit with status 1; so does a
request whose model failed its gates (after the gate report). SIGTERM is turned into a normal exit,
so an interrupted command still ends its MLflow runs (as FAILED) and leaves no half-written file.
The project root is the folder of the params file (`--params`): nothing depends on the working directory.
"""

from __future__ import annotations

import logging
import os
import signal
from pathlib import Path
from typing import Annotated
from uuid import uuid4

import typer
import yaml
from rich.console import Console
from rich.table import Table

from hyperforget import answer, publish, stages
from hyperforget.artifacts import Artifacts
from hyperforget.config import Params, load_params
from hyperforget.errors import ConfigError, HyperForgetError
from hyperforget.options import VARIANTS
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
    overrides = {}
    for item in sets or []:
        key, sep, value = item.partition("=")
        if not sep:
            raise ConfigError(f"--set {item!r}: expected KEY=VALUE, e.g. --set forget.classes=[3]")
        overrides[key] = yaml.safe_load(value)
    return load_params(path, overrides)


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
    from hyperforget.evaluate import format_table

    out = stages.compare(*_project(params, set_), methods.split(",") if methods else None)
    print(format_table(out["result"]))  # plain: a wide table must not be re-wrapped at 80 columns
    _wrote(*out["written"].values())


@app.command()
def promote(name: str, version: str, params: ParamsOpt = Path("params.yaml")) -> None:
    """Move the `champion` alias to NAME VERSION, only if it passed its gates and its ONNX is shipped."""
    out = publish.promote(name, version, *_project(params))
    console.print(f"{out['name']} version {out['version']} is now @{out['alias']}")


@app.command()
def fetch(
    ref: Annotated[str, typer.Argument(help="NAME@ALIAS or NAME/VERSION")],
    out: Annotated[Path, typer.Option("--out", help="folder to write the ONNX file into")] = Path("."),
    params: ParamsOpt = Path("params.yaml"),
) -> None:
    """Download the ONNX model of a registry version (S3 via boto3), verified against its sha256 tag."""
    path = publish.fetch(ref, out, *_project(params))
    _wrote(f"{path} (sha256 verified)")


@app.command()
def export(name: str, version: str, params: ParamsOpt = Path("params.yaml")) -> None:
    """Finish (or redo) a gated version: ONNX export, MLflow Model, S3 upload, verify; then `candidate` moves.
    The repair for a version an outage left without its ONNX."""
    out = publish.export_and_upload(name, version, *_project(params))
    _wrote(f"{out['location']} (sha256 {out['sha256']})")


@app.command()
def summary(params: ParamsOpt = Path("params.yaml")) -> None:
    """Print the comparison table and where the registered models and ONNX files are."""
    print(stages.summary(*_project(params)))  # plain: a wide table must not be re-wrapped at 80 columns


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
        console.print(f"[bold red]error:[/bold red] {e}", highlight=False)
        raise SystemExit(1) from None


if __name__ == "__main__":
    main()
