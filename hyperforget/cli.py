"""The `hyperforget` command: parse options, call a stage, print where results went.

User errors (HyperForgetError) are printed without a traceback and exit with status 1.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Annotated

import typer
import yaml
from rich.console import Console
from rich.table import Table

from hyperforget import stages
from hyperforget.config import Params, load_params
from hyperforget.errors import ConfigError, HyperForgetError

app = typer.Typer(add_completion=False, no_args_is_help=True, help="Machine unlearning by sampling weights.")
console = Console()

ParamsOpt = Annotated[Path, typer.Option("--params", "-p", help="params file")]
SetOpt = Annotated[list[str] | None, typer.Option("--set", help="override a param: KEY=VALUE (YAML value)")]


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
    out = stages.import_data(_params(params, set_))
    _wrote(f"{out['raw_dir']} ({len(out['files'])} files)")


@app.command()
def prepare(params: ParamsOpt = Path("params.yaml"), set_: SetOpt = None) -> None:
    """Split the raw data into train/val/test tensors and write the dataset card."""
    out = stages.prepare(_params(params, set_))
    console.print(f"{out['card']['name']}: sizes {out['card']['sizes']}")
    _wrote(out["dataset"], str(stages.paths()["card"]))


@app.command()
def train(params: ParamsOpt = Path("params.yaml"), set_: SetOpt = None) -> None:
    """Train the original model on all training data."""
    out = stages.train(_params(params, set_))
    m = out["metrics"]
    console.print(per_class_table(f"original model: test acc {m['test_acc']:.1%}", m["per_class_test_acc"]))
    _wrote(out["model"], str(stages.paths()["train_metrics"]))


@app.command()
def evaluate(params: ParamsOpt = Path("params.yaml"), set_: SetOpt = None) -> None:
    """Metrics of the original model on the configured forget request."""
    out = stages.evaluate(_params(params, set_))
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
    from hyperforget import hyperstages

    out = hyperstages.zoo_stage(_params(params, set_), workers=workers)
    console.print(f"zoo: {out['rows']} checkpoints in {out['shards']} shards ({out['seconds']:.0f} s)")
    _wrote(out["out_dir"])


@app.command()
def hypernet(
    variant: Annotated[str, typer.Option(help="dihyfo1 or dihyfo2")] = "dihyfo2",
    params: ParamsOpt = Path("params.yaml"),
    set_: SetOpt = None,
) -> None:
    """Train the diffusion hypernetwork on the zoo (resumes from its last checkpoint)."""
    from hyperforget import hyperstages

    out = hyperstages.hypernet_stage(_params(params, set_), variant)
    console.print(f"{variant}: {out['step']} steps, final loss {out['final_loss']:.4g}, {out['seconds']:.0f} s, "
                  f"mean prompt-alignment R² {out['mean_r2']:.2f}")
    _wrote(str(hyperstages.hypernet_dir(variant)))


@app.command()
def unlearn(
    method: Annotated[str | None, typer.Option(help="method name (default: unlearn.method)")] = None,
    register: Annotated[bool, typer.Option(help="gate, register in MLflow, export ONNX, upload to S3")] = False,
    params: ParamsOpt = Path("params.yaml"),
    set_: SetOpt = None,
) -> None:
    """Answer the forget request in params (forget.*) with one method."""
    p = _params(params, set_)
    out = stages.unlearn(p, method)
    r, ref = out["report"], out["reference"]
    console.print(f"{out['method']} on {out['request_slug']}: forget acc {r['forget_acc']:.1%} "
                  f"(retrain {ref['forget_acc']['mean']:.1%}), retained test acc {r['test_retained_acc']:.1%} "
                  f"(retrain {ref['test_retained_acc']['mean']:.1%}), MIA {r['mia']:.2f}, "
                  f"{out['wall_time_s']:.2f} s")
    _wrote(out["model_path"], out["report_path"])
    if register:
        published = stages.publish(p, out)
        console.print(published["summary"], highlight=False)
        _wrote(published["result_path"])


@app.command()
def compare(
    methods: Annotated[str | None, typer.Option(help="comma-separated methods (default: evaluation.methods)")] = None,
    params: ParamsOpt = Path("params.yaml"),
    set_: SetOpt = None,
) -> None:
    """Run every method and the retrain reference on the forget request; print and write the table."""
    from hyperforget.evaluate import format_table

    out = stages.compare(_params(params, set_), methods.split(",") if methods else None)
    print(format_table(out["result"]))  # plain: a wide table must not be re-wrapped at 80 columns
    _wrote(*out["written"].values())


@app.command()
def promote(name: str, version: str, params: ParamsOpt = Path("params.yaml")) -> None:
    """Move the `champion` alias to NAME VERSION, only if that version passed its gates."""
    from hyperforget import publish

    out = publish.promote(name, version, load_params(params))
    console.print(f"{out['name']} version {out['version']} is now @{out['alias']}")


@app.command()
def fetch(
    ref: Annotated[str, typer.Argument(help="NAME@ALIAS or NAME/VERSION")],
    out: Annotated[Path, typer.Option("--out", help="folder to write the ONNX file into")] = Path("."),
    params: ParamsOpt = Path("params.yaml"),
) -> None:
    """Download the ONNX model of a registry version (S3 via boto3), verified against its sha256 tag."""
    from hyperforget import publish

    path = publish.fetch(ref, out, load_params(params))
    _wrote(f"{path} (sha256 verified)")


@app.command()
def export(name: str, version: str, params: ParamsOpt = Path("params.yaml")) -> None:
    """(Re-)export a gated registry version to ONNX and upload it to S3 when configured."""
    from hyperforget import publish

    out = publish.export_and_upload(name, version, load_params(params))
    _wrote(f"{out['location']} (sha256 {out['sha256']})")


@app.command()
def summary(params: ParamsOpt = Path("params.yaml")) -> None:
    """Print the comparison table and where the registered models and ONNX files are."""
    print(stages.summary(load_params(params)))  # plain: a wide table must not be re-wrapped at 80 columns


def main() -> None:
    logging.basicConfig(level=os.environ.get("HYPERFORGET_LOG", "INFO"), format="%(message)s")
    for chatty in ("onnxscript", "onnx_ir"):  # the ONNX optimiser narrates every pass at INFO
        logging.getLogger(chatty).setLevel(logging.WARNING)
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    try:
        app()
    except HyperForgetError as e:
        console.print(f"[bold red]error:[/bold red] {e}", highlight=False)
        raise SystemExit(1) from None


if __name__ == "__main__":
    main()
