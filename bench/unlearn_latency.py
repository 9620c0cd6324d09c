"""Time from request to unlearned weights: DiHyFo (both variants) vs ∇τ vs retrain, side by side in one run.

    python bench/unlearn_latency.py [--params params.yaml] [--work DIR] [--classes 3 5 8] [--repeats 3] [--set K=V]
        [--methods retrain gradtau eu_k dihyfo1 dihyfo2] [--json FILE]

Builds (or reuses) the pipeline in the project folder --work as bench/dihyfo_mnist.py does, then times
every method on every class, rotating the method order each repeat so background load hits all alike.
Two clocks per method: `unlearn` is the method's own wall_time_s (DiHyFo: prompt + K samples + validation
scoring; retrain: one seed, plain training loop, as a user would retrain), `end-to-end` also counts loading
the hypernetwork and the zoo's loss index. Prints medians and the speed-up t_retrain / t_method with the
machine named; on a fresh --work folder also the one-time costs (frozen-part features, zoo, each hypernet)
and the number of requests after which they have paid for themselves against one retrain seed.

MNIST-60k, LeNet-5, DiHyFo generating the last block + head (a fresh --work; ~15–25 min on 2 cores):

    python bench/unlearn_latency.py --params configs/mnist-lenet.yaml --work work/mnist-lenet-latency \\
        --threads 2 --classes 3 --repeats 1

The same with DiHyFo generating fc1–fc3 (the settings that pass the gates on MNIST's 10k split), against EU-3 (issue
#23's speed targets: ≥ 50× a retrain, ≥ 5× EU-k), DiHyFo-1 only:

    python bench/unlearn_latency.py --params configs/mnist-lenet-dense.yaml --threads 2 --classes 3 5 8 \\
        --repeats 1 --methods retrain eu_k dihyfo1 --json bench/results/unlearn_latency_mnist_lenet_dense.json
"""

from __future__ import annotations

import argparse
import math
import statistics
import sys
import time
from datetime import UTC, datetime

from _common import PARAMS, run_pipeline
from dihyfo_mnist import add_setup_args, setup

from hyperforget.base.io import write_json
from hyperforget.config.params import ForgetConfig
from hyperforget.data.datasets import forget_split, load_dataset
from hyperforget.models.nets import load_model
from hyperforget.pipeline.compare import machine
from hyperforget.unlearn import run_method
from hyperforget.unlearn.method import UnlearnInputs

METHODS = ("retrain", "gradtau", "dihyfo1", "dihyfo2")
VARIANTS = ("dihyfo1", "dihyfo2")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_setup_args(ap)
    ap.set_defaults(params=str(PARAMS))  # digits
    ap.add_argument("--classes", type=int, nargs="*", default=[3, 5, 8])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--methods", nargs="+", default=list(METHODS), help="retrain first (the speed-ups' base); "
                    "the DiHyFo variants named here are the only hypernetworks trained")
    ap.add_argument("--json", default=None, help="write every time and the medians there")
    args = ap.parse_args()
    methods = tuple(args.methods)
    if methods[0] != "retrain":
        raise SystemExit("--methods must start with retrain: every speed-up is against one retrain seed")
    params, art = setup(args)
    fresh = not (art.zoo / "zoo.json").exists()  # one-time costs (zoo, hypernets) are measured when built here
    variants = tuple(v for v in VARIANTS if v in methods)
    started = datetime.now(UTC).isoformat()
    built = run_pipeline(params, art, variants)
    data, (model, spec) = load_dataset(art.prepare), load_model(art.model)
    options = {m: params.method_options(m) for m in methods}  # retrain: one seed, the `train:` recipe
    clocks: dict[str, dict[str, list[float]]] = {m: {"unlearn": [], "end-to-end": []} for m in methods}
    for r in range(args.repeats):
        for c in args.classes:
            inputs = UnlearnInputs(model, spec, data, forget_split(data, ForgetConfig(classes=[c])), params.seed,
                                   art, params.gates)
            for m in methods[r % len(methods):] + methods[: r % len(methods)]:
                t0 = time.perf_counter()
                result = run_method(m, inputs, options[m])
                clocks[m]["end-to-end"].append(time.perf_counter() - t0)
                clocks[m]["unlearn"].append(result.wall_time_s)

    med = {m: {k: statistics.median(v) for k, v in c.items()} for m, c in clocks.items()}
    mach = machine()
    print(f"{params.data.name}, classes {args.classes} × {args.repeats} repeats, interleaved; "
          f"{mach['cpu']}, {mach['cores']} cores, torch {mach['torch']} ({mach['torch_threads']} thread)")
    print(f"{'method':10} {'unlearn s':>10} {'speed-up':>9} {'end-to-end s':>13} {'speed-up':>9}")
    for m in methods:
        u, e = med[m]["unlearn"], med[m]["end-to-end"]
        print(f"{m:10} {u:10.3f} {med['retrain']['unlearn'] / u:8.1f}× {e:13.3f} "
              f"{med['retrain']['end-to-end'] / e:8.1f}×")
    payload = {"command": "python bench/unlearn_latency.py " + " ".join(sys.argv[1:]), "started": started,
               "finished": datetime.now(UTC).isoformat(), "machine": mach, "params": args.params,
               "generate": params.hypernet.generate, "classes": args.classes, "repeats": args.repeats,
               "clocks": clocks, "median_s": med,
               "speedup_vs_retrain": {m: med["retrain"]["unlearn"] / med[m]["unlearn"] for m in methods},
               "one_time_s": None}
    if not fresh:
        print("one-time costs: not measured (the zoo in --work was reused; use a fresh --work folder)")
    else:
        once = {"features": built["zoo"].get("features_s", 0.0), "zoo": built["zoo"]["seconds"],
                **{f"hypernet {v}": built[v]["seconds"] for v in variants}}
        payload["one_time_s"] = once
        print(f"one-time costs beyond θ0 (hypernet.generate: {params.hypernet.generate}; the zoo time includes its "
              "features): " + ", ".join(f"{k} {v:.1f} s" for k, v in once.items()))
        for v in variants:
            cost = once["zoo"] + once[f"hypernet {v}"]
            saved = med["retrain"]["unlearn"] - med[v]["end-to-end"]
            print(f"{v}: zoo + its hypernet {cost:.0f} s, saves {saved:.1f} s per request over one retrain seed → "
                  f"paid for itself after {math.ceil(cost / saved) if saved > 0 else 'never'} requests")
    if args.json:
        write_json(args.json, payload)


if __name__ == "__main__":
    main()
