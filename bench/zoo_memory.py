"""Peak memory of what the hypernet stage holds before its first step: the zoo loaded, the normaliser fitted, the
zoo normalised.

    python bench/zoo_memory.py --zoo DIR [--json PATH]

Why: the zoo grows with its class sets (25k rows of 59k values, 5.9 GB, with every 2–3-class set on the 10k split's
LeNet-5) and the stage once held it nearly four times over (its shards and their concatenation, the finiteness
check's temporaries, a float64 copy for the normaliser, two temporaries of the normalisation): 22.4 GB on a 24 GiB
machine. Each step runs in this process in turn and the process's peak resident size (`ru_maxrss`) is read after
it, so a step's own peak shows as the rise it adds. Run it in a fresh process per zoo: the peak never falls. To
measure an older tree, put it first on PYTHONPATH (the script imports only `zoo.shards.load_zoo` and the tokenizer).
"""

from __future__ import annotations

import argparse
import resource
from pathlib import Path

from hyperforget.base.runtime import configure

configure()  # before torch loads, as the CLI does

import hyperforget  # noqa: E402
from hyperforget.base.io import write_json  # noqa: E402
from hyperforget.hypernet.tokenizer import Tokenizer  # noqa: E402
from hyperforget.zoo.shards import load_zoo  # noqa: E402

CHUNK = 64  # the hypernet's default token size; the normaliser does not depend on it


def peak_gb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6  # kB on Linux


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--zoo", type=Path, required=True, help="a built zoo folder (artifacts/zoo of a project)")
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    peaks = {"start": peak_gb()}
    zoo, _ = load_zoo(args.zoo)
    peaks["load_zoo"] = peak_gb()
    tok = Tokenizer(zoo.layout, CHUNK).fit_normaliser(zoo.weights)
    peaks["fit_normaliser"] = peak_gb()
    normalised = tok.normalise(zoo.weights)
    peaks["normalise"] = peak_gb()
    zoo_gb = zoo.weights.numel() * zoo.weights.element_size() / 1e9
    result = {"zoo": str(args.zoo), "rows": zoo.num_rows, "values_per_row": zoo.weights.shape[1], "zoo_gb": zoo_gb,
              "normalised_gb": normalised.numel() * normalised.element_size() / 1e9, "peak_rss_gb": peaks,
              "above_start_per_zoo": (peaks["normalise"] - peaks["start"]) / zoo_gb,
              "library": str(Path(hyperforget.__file__).parent)}
    print(f"zoo {args.zoo}: {zoo.num_rows} rows, {zoo_gb:.2f} GB")
    for step, gb in peaks.items():
        print(f"  peak RSS after {step:<15} {gb:6.2f} GB")
    print(f"  held at most {result['above_start_per_zoo']:.2f}× the zoo above the start (the zoo and its normalised "
          "copy are 2×)")
    if args.json:
        write_json(args.json, result)


if __name__ == "__main__":
    main()
