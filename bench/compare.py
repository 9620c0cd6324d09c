"""Compare every baseline unlearning method with retraining on one request; print and write the report.

    .venv/bin/python bench/compare.py --params configs/mnist-t10k-baselines.yaml \
        --classes 3 --out work/compare-mnist-class3 --threads 1
"""

from __future__ import annotations

import argparse
from pathlib import Path

from _common import BASELINES, add_request_args, setup

from hyperforget.pipeline.compare import compare, format_table, write_report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_request_args(parser)
    parser.add_argument("--methods", default=",".join(BASELINES))
    parser.add_argument("--retrain-seeds", type=int, default=3)
    parser.add_argument("--out", required=True,
                        help="folder for comparison.json/.md, headline.json, timing.json and per_class.png")
    args = parser.parse_args()
    params, inputs = setup(args, retrain_seeds=args.retrain_seeds, mia_splits=10)
    result = compare(params, inputs, args.methods.split(","))
    print(format_table(result))
    out = Path(args.out)
    for kind, path in write_report(result, out, out / "timing.json").items():
        print(f"{kind}: {path}")


if __name__ == "__main__":
    main()
