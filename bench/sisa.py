"""SISA's price and its speed: the ensemble's accuracy against the single model, and the exact answer to a record
request against one retrain, side by side in one run (hyperforget.unlearn.sisa; issue #22).

    python bench/sisa.py --params configs/mnist-lenet.yaml --threads 2 --shards 4 8 16 --slices 4 \
        --records 1 10 100 --draws 3 --json bench/results/sisa_mnist_lenet.json
    python bench/sisa.py --params configs/mnist-t10k-lenet.yaml --threads 2 --shards 4 8 --slices 4 \
        --records 1 10 100 --draws 3 --json bench/results/sisa_mnist_t10k_lenet.json

Trains θ0 with the experiment's recipe (the single model SISA replaces), then per layout trains the SISA
constituents (each stage on its slices, `sisa.stage_recipe`) and answers record requests of each size (random
training records, `--draws` draws, each against the freshly built state) and one class request (`--class`), each
timed and scored (the ensemble's test accuracy after it). One true retrain on D_r per record size (the first draw's,
the recipe's plain loop, as a user would retrain the single model) is timed between the layouts' requests, so
both clocks see the same load; × retrain is the median retrain over the median SISA answer. A few draws land
where they land (with four slices, a record in a shard's last slice retrains 4/10 of what one in its first does), so
"× retrain expected" divides the median retrain by the build's seconds times the share of the build a deletion
of that many random records retrains on average (`expected_work`: 2,000 draws, counted, not trained).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from datetime import UTC, datetime
from typing import Any

import torch
from _common import add_request_args, setup, write_results

from hyperforget.models.metrics import accuracy
from hyperforget.models.nets import predict
from hyperforget.models.train import train_model
from hyperforget.pipeline.compare import machine
from hyperforget.unlearn import sisa


def draw(n_train: int, n: int, seed: int) -> torch.Tensor:
    return torch.randperm(n_train, generator=torch.Generator().manual_seed(seed))[:n]


def expected_work(rows: list[list[torch.Tensor]], n_train: int, n: int, draws: int = 2000, seed: int = 0) -> float:
    """The expected share of the build's training that deleting n random records retrains (2,000 draws, no
    training): a hit shard retrains its stages from its earliest hit slice on, stage r on r+1 slices. What the few
    timed draws vary around."""
    slices = len(rows[0])
    shard_of, slice_of = torch.empty(n_train, dtype=torch.long), torch.empty(n_train, dtype=torch.long)
    for s, shard in enumerate(rows):
        for r, part in enumerate(shard):
            shard_of[part], slice_of[part] = s, r
    work = torch.tensor([sum(k + 1 for k in range(r, slices)) for r in range(slices + 1)], dtype=torch.float64)
    gen, total = torch.Generator().manual_seed(seed), 0.0
    for _ in range(draws):
        pick = torch.randperm(n_train, generator=gen)[:n]
        first = torch.full((len(rows),), slices).scatter_reduce(0, shard_of[pick], slice_of[pick], "amin")
        total += float(work[first].sum() / (len(rows) * work[0]))
    return total / draws


def retrain_seconds(inputs, params, records: torch.Tensor) -> dict[str, float]:
    """One single-model retrain without `records` (the recipe, the plain loop): seconds and test accuracy."""
    data = inputs.data
    keep = torch.ones(len(data.y_train), dtype=torch.bool)
    keep[records] = False
    model = inputs.spec.build(seed=1000 + params.seed)
    t0 = time.perf_counter()
    train_model(model, data.x_train[keep], data.y_train[keep], params.train, 1000 + params.seed, desc="retrain")
    return {"seconds": time.perf_counter() - t0, "test_acc": accuracy(predict(model, data.x_test), data.y_test)}


def layout_run(inputs, params, layout: sisa.Layout, args: argparse.Namespace, retrains: dict[int, dict]
               ) -> dict[str, Any]:
    """Build `layout`, then answer `args.draws` draws of each record size in `args.records` and class `args.cls`,
    each against the freshly built state; the single model's retrains (one per size) land in `retrains`."""
    sizes, seed = args.records, params.seed
    data = inputs.data
    x, y = data.x_train, data.y_train
    t0 = time.perf_counter()
    built = sisa.train(inputs.spec, x, y, params.train, layout)
    build_s = time.perf_counter() - t0
    ensemble = built.model()
    out: dict[str, Any] = {
        "shards": layout.shards, "slices": layout.slices, "stage_epochs": built.recipe.epochs, "build_s": build_s,
        "test_acc": accuracy(predict(ensemble, data.x_test), data.y_test),
        "constituent_test_acc": statistics.mean(accuracy(predict(m, data.x_test), data.y_test)
                                                for m in ensemble.members),
        "requests": [], "expected_work": {str(n): expected_work(built.rows, len(y), n) for n in sizes}}
    print(f"SISA {layout.shards}×{layout.slices}: built in {build_s:.1f} s, test acc {out['test_acc']:.4f} "
          f"(constituents {out['constituent_test_acc']:.4f})", flush=True)
    requests = [(f"{n} record{'s' if n > 1 else ''}", n, d, draw(len(y), n, 1000 * seed + 10 * n + d))
                for n in sizes for d in range(args.draws)]
    requests.append((f"class {args.cls}", None, 0, (y == args.cls).nonzero().squeeze(1)))
    for label, n, d, records in requests:
        if n is not None and d == 0 and n not in retrains:
            retrains[n] = retrain_seconds(inputs, params, records)
            print(f"  retrain without {n} records: {retrains[n]['seconds']:.1f} s", flush=True)
        after, cost = sisa.forget(built, x, y, records)
        row = {"request": label, "size": n, "draw": d, **cost, "restart_slices": {str(k): v for k, v in
                                                                      cost["restart_slices"].items()},
               "test_acc": accuracy(predict(after.model(), data.x_test), data.y_test)}
        out["requests"].append(row)
        print(f"  {label} (draw {d}): {cost['shards_retrained']} shards, {cost['stages_retrained']}/"
              f"{cost['stages']} stages, {cost['seconds']:.1f} s", flush=True)
    return out


def summary(layouts: list[dict], retrains: dict[int, dict]) -> list[dict[str, Any]]:
    retrain_s = statistics.median(r["seconds"] for r in retrains.values())
    rows = []
    for lay in layouts:
        for label in dict.fromkeys(r["request"] for r in lay["requests"]):
            reqs = [r for r in lay["requests"] if r["request"] == label]
            secs = statistics.median(r["seconds"] for r in reqs)
            size = reqs[0]["size"]  # a class sits in every shard's first slice: all of the build is retrained
            expected = lay["expected_work"][str(size)] if size is not None else 1.0
            rows.append({"layout": f"{lay['shards']}×{lay['slices']}", "request": label, "draws": len(reqs),
                         "expected_speedup": retrain_s / (lay["build_s"] * expected),
                         "shards_retrained": statistics.mean(r["shards_retrained"] for r in reqs),
                         "stages_retrained": statistics.mean(r["stages_retrained"] / r["stages"] for r in reqs),
                         "seconds": secs, "speedup": retrain_s / secs if secs else None,
                         "test_acc": statistics.mean(r["test_acc"] for r in reqs)})
    return rows


def table(payload: dict) -> str:
    single = payload["single_model"]
    lines = ["| model | build s | test acc | constituents' test acc |", "|---|---:|---:|---:|",
             f"| single model (θ0; build s = its median retrain) | {payload['retrain_s']:.1f} | "
             f"{single['test_acc']:.4f} | |"]
    lines += [f"| SISA {lay['shards']} shards × {lay['slices']} slices ({lay['stage_epochs']} epochs a stage) | "
              f"{lay['build_s']:.1f} | {lay['test_acc']:.4f} | {lay['constituent_test_acc']:.4f} |"
              for lay in payload["layouts"]]
    each = ", ".join(f"{r['seconds']:.1f}" for r in payload["retrains"].values())
    lines += ["", f"One retrain of the single model: median {payload['retrain_s']:.1f} s ({each}).", "",
              "| SISA | request | draws | shards retrained | stages retrained | s (median) | × retrain "
              "| × retrain expected | test acc after (every class) |", "|---|---|---:|---:|---:|---:|---:|---:|---:|"]
    lines += [f"| {r['layout']} | {r['request']} | {r['draws']} | {r['shards_retrained']:.1f} | "
              f"{r['stages_retrained']:.0%} | {r['seconds']:.1f} | {r['speedup']:.1f}× | "
              f"{r['expected_speedup']:.1f}× | {r['test_acc']:.4f} |"
              for r in payload["summary"]]
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_request_args(ap)
    ap.add_argument("--shards", type=int, nargs="+", default=[4, 8])
    ap.add_argument("--slices", type=int, default=4)
    ap.add_argument("--records", type=int, nargs="+", default=[1, 10, 100])
    ap.add_argument("--draws", type=int, default=3)
    ap.add_argument("--class", dest="cls", type=int, default=3, help="the class request's class")
    ap.add_argument("--json", default="bench/results/sisa.json")
    ap.add_argument("--md", default=None, help="also write the tables there")
    args = ap.parse_args()
    params, inputs = setup(args)
    data = inputs.data
    retrains: dict[int, dict] = {}
    layouts = [layout_run(inputs, params, sisa.Layout(s, args.slices, params.seed), args, retrains)
               for s in args.shards]
    payload = {
        "command": " ".join(sys.argv), "date": datetime.now(UTC).isoformat(timespec="seconds"), "machine": machine(),
        "dataset": params.data.name, "arch": params.model.arch, "n_train": len(data.y_train),
        "recipe": params.train.model_dump(),
        "single_model": {"test_acc": accuracy(predict(inputs.original, data.x_test), data.y_test)},
        "retrains": {str(k): v for k, v in retrains.items()},
        "retrain_s": statistics.median(r["seconds"] for r in retrains.values()),
        "layouts": layouts, "summary": summary(layouts, retrains)}
    write_results(args.json, payload, table(payload), args.md)


if __name__ == "__main__":
    main()
