"""DiHyFo per class: both variants against retrain, ∇τ and the retrieval baselines, with the gate pass rate
and the memorisation distances, for one experiment file (configs/README.md): by default G.pt's 784→10→10 MLP
on MNIST's t10k file split 8k/2k (configs/mnist-t10k.yaml); params.yaml for digits; configs/mnist-lenet.yaml for
LeNet-5 on MNIST-60k (`make mnist-table`).

    python bench/dihyfo_mnist.py [--params configs/mnist-t10k.yaml] [--source DIR] [--work DIR]
                                 [--classes 0 1 ... 9] [--set KEY=VALUE ...]
                                 [--methods gradtau,salun,scrub,head_finetune,...]

Runs the library stages on the project folder --work (default work/<experiment>/, or $HYPERFORGET_WORK/
<experiment>/; the params it ran with in --work/params.yaml, its own artifacts/, reused by a rerun; the
working directory is never changed) and prints one Markdown
table: a row per class and model, Δ = retained test acc − retrain mean, pass = gate pass rate among the
K samples, NN/spacing = distance to the nearest zoo checkpoint over the zoo's median nearest-neighbour
spacing, R² = prompt alignment over 20 prompts. A second table gives, per class and model, the verification
(LiRA AUC and TPR@1%FPR on D_f, linear probe and relearn steps on the forgotten class, the retrain reference
as mean ± std) and every gate's verdict with the failing checks named (`hyperforget.pipeline.tables`). `--methods`
adds baselines beside ∇τ (default: ∇τ only). Per-request JSON lands in --work/artifacts/compare/.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import os
import time
from pathlib import Path

import yaml

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # shared CPUs: idle OpenMP threads must not spin

import torch
from _common import CONFIGS, experiment_raw, run_pipeline, work_folder

from hyperforget.base.artifacts import Artifacts
from hyperforget.base.io import write_text
from hyperforget.config.options import VARIANTS
from hyperforget.config.overlays import load_params, parse_overrides, parse_params
from hyperforget.config.params import Params
from hyperforget.pipeline.compare import load_report, machine
from hyperforget.pipeline.tables import verification_rows
from hyperforget.studies.hypernet_report import comparison_folder, dihyfo_comparison, generalisation_report

INPUTS_JSON = "inputs.json"  # beside a class's comparison: the `built_inputs` it was computed from
HEADER = ["class", "model", "forget acc", "retained test acc", "Δ retrain", "worst retained", "MIA", "pass",
          "NN/spacing", "R²", "time s"]


def fmt(v, spec=".3f"):
    return "–" if v is None else format(v, spec)


def table_rows(c: int, result: dict) -> list[list[str]]:
    ref = result["retrain"]["summary"]
    base = ref["test_retained_acc"]["mean"]
    rows = [[str(c), f"retrain ({result['settings']['retrain_seeds']} seeds)", fmt(ref["forget_acc"]["mean"]),
             fmt(base), "0", fmt(ref["worst_retained_acc"]["mean"]), fmt(ref["mia"]["mean"]), "", "", "",
             fmt(result["timing"]["t_retrain_s"], ".2f")]]
    for name, m in result["methods"].items():
        r, info = m["report"], m["info"]
        honest = result["honesty"].get(name, {})
        rows.append([str(c), name, fmt(r["forget_acc"]), fmt(r["test_retained_acc"]),
                     fmt(r["test_retained_acc"] - base, "+.3f"),
                     f"{fmt(r['worst_retained_acc'])} ({r['worst_retained_class']})", fmt(r["mia"]),
                     fmt(info.get("pass_rate"), ".2f"), fmt(honest.get("distance_ratio"), ".2f"),
                     fmt(honest.get("alignment", {}).get("r2"), ".2f"), fmt(m["wall_time_s"], ".2f")])
    return rows


def add_setup_args(ap: argparse.ArgumentParser) -> None:
    ap.add_argument("--params", default=str(CONFIGS / "mnist-t10k.yaml"), help="experiment file (configs/*.yaml, "
                    "or params.yaml for digits; default configs/mnist-t10k.yaml)")
    ap.add_argument("--source", default=None, help="folder of the data set's files (default: the experiment's "
                    "data.source)")
    ap.add_argument("--work", default=None, help="project folder (default work/<experiment file's name>, or "
                    "$HYPERFORGET_WORK/<name>)")
    ap.add_argument("--set", action="append", default=[], help="param override KEY=VALUE (YAML value)")
    ap.add_argument("--threads", type=int, default=1, help="torch threads (1: tiny MLPs; 2: LeNet)")


def setup(args: argparse.Namespace) -> tuple[Params, Artifacts]:
    """The experiment file (--params: the repository's params.yaml + its overlays) + --source and the command
    line's overrides, written as the work folder's params.yaml; returns them and that project's `Artifacts`
    (nothing changes directory)."""
    raw = experiment_raw(args.params, args.source, parse_overrides(args.set))
    parse_params(raw, f"{args.params} + bench overrides")  # refuse bad overrides before writing anything
    art = Artifacts(Path(args.work) if args.work else work_folder(Path(args.params).stem))
    art.root.mkdir(parents=True, exist_ok=True)
    write_text(art.params, yaml.safe_dump(raw, sort_keys=False, allow_unicode=True))
    params = load_params(art.params)
    torch.set_num_threads(args.threads)  # tiny models: one thread beats two contended ones
    logging.basicConfig(level=logging.WARNING)
    return params, art


def built_inputs(art: Artifacts) -> dict[str, str]:
    """What a class comparison is computed from, beyond params: θ0's checksum and each hypernetwork's
    checkpoint record (its files' names and the zoo data's hash), hashed."""
    theta0 = Path(f"{art.model}.sha256").read_text().split()[0]
    return {"theta0": theta0, **{v: hashlib.sha256((art.hypernet(v) / "checkpoint.json").read_bytes()).hexdigest()
                                 for v in VARIANTS}}


def saved_comparison(params: Params, art: Artifacts, c: int, methods: tuple[str, ...],
                     inputs: dict[str, str]) -> dict | None:
    """Class c's comparison saved in this project by an earlier run, if it used the same seed, retrain seeds,
    MIA splits, gates and verification options, holds every method asked for and was computed from the same
    θ0 and hypernetworks (`inputs`, as `built_inputs` gives them, recorded beside it as inputs.json); else None
    (recompute). Lets a long per-class run be resumed class by class (each LeNet class costs its true
    retrains)."""
    out = comparison_folder(art, [c])
    if not (out / "comparison.json").exists():
        return None
    recorded_file = out / INPUTS_JSON
    recorded = json.loads(recorded_file.read_text()) if recorded_file.exists() else None
    if recorded is not None and recorded != inputs:
        print(f"class {c}: recomputed (θ0 or a hypernetwork was rebuilt since): {out}", flush=True)
        return None
    result, ev = load_report(out, out / "timing.json"), params.evaluation
    s = result["settings"]
    same = (s["seed"] == params.seed and s["retrain_seeds"] == ev.retrain_seeds and s["mia_splits"] == ev.mia_splits
            and type(params.gates)(**s["gates"]) == params.gates
            and type(ev.verification)(**result["verification"]["options"]) == ev.verification
            and set(methods) <= set(result["methods"]))
    unrecorded = " (saved before inputs.json was recorded: θ0 and hypernets unchecked)" if recorded is None else ""
    print(f"class {c}: {'reused' + unrecorded if same else 'recomputed (other settings)'}: {out}", flush=True)
    return result if same else None


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_setup_args(ap)
    ap.add_argument("--classes", type=int, nargs="*", default=list(range(10)))
    ap.add_argument("--skip-held-out", action="store_true", help="no held-out-set report (each costs retrains)")
    ap.add_argument("--methods", default="gradtau", help="baselines beside DiHyFo, comma-separated (registry names)")
    ap.add_argument("--reuse", action="store_true", help="take a class's saved comparison from --work when it "
                    "was made with the same settings, gates, methods, θ0 and hypernetworks (delete "
                    "artifacts/compare to redo it)")
    args = ap.parse_args()
    params, art = setup(args)
    t0 = time.perf_counter()
    built = run_pipeline(params, art)
    t_build = time.perf_counter() - t0
    rows, checks = [], []
    methods = tuple(args.methods.split(","))
    inputs = built_inputs(art)  # θ0 and the hypernets stay as run_pipeline left them for the whole run
    for c in args.classes:
        result = saved_comparison(params, art, c, methods, inputs) if args.reuse else None
        if result is None:
            result = dihyfo_comparison(params, art, [c], methods=methods)
            write_text(comparison_folder(art, [c]) / INPUTS_JSON, json.dumps(inputs, indent=2))
        rows += table_rows(c, result)
        header, body = verification_rows(result)
        checks += [[str(c), *row] for row in body]
    t_compare = time.perf_counter() - t0 - t_build
    general = {"pairs": []} if args.skip_held_out else generalisation_report(params, art)

    mach = machine()
    print(f"# DiHyFo per class on {params.data.name} ({mach['cpu']}, {mach['cores']} cores, torch "
          f"{mach['torch']} with {mach['torch_threads']} thread)\n")
    print(f"zoo: {built['zoo']['rows']} checkpoints in {built['zoo']['seconds']:.0f} s; hypernets: " + ", ".join(
        f"{v} {built[v]['seconds']:.0f} s (loss {built[v]['final_loss']:.4f}, held-out R² {built[v]['mean_r2']:.2f})"
        for v in ("dihyfo1", "dihyfo2")) + f"; build {t_build:.0f} s, comparisons {t_compare:.0f} s\n")
    print("| " + " | ".join(HEADER) + " |\n|" + "---|" * len(HEADER))
    for row in rows:
        print("| " + " | ".join(row) + " |")
    if checks:
        print("\nVerification against the retrain reference and the gates (params' `gates:`):\n")
        print("| class | " + " | ".join(header) + " |\n|" + "---|" * (len(header) + 1))
        for row in checks:
            print("| " + " | ".join(row) + " |")
    if general["pairs"]:
        print("\nHeld-out pairs (never in the zoo):\n\n| pair | variant | forget acc | retained test acc | retrain | "
              "pass | R² |\n|---|---|---|---|---|---|---|")
        for g in general["pairs"]:
            print(f"| {g['pair']} | {g['variant']} | {fmt(g['forget_acc'])} | {fmt(g['test_retained_acc'])} | "
                  f"{fmt(g['retrain_test_retained_acc'])} | {fmt(g['pass_rate'], '.2f')} | {fmt(g['r2'], '.2f')} |")


if __name__ == "__main__":
    main()
