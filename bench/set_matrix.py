"""Every held-out set × every method, from several set_erasure runs on the same sets and references.

    python bench/set_matrix.py RUN.json [RUN.json ...] [--json FILE] [--md FILE]

Prints the matrix (✓, or ✗ with the checks that failed) and the summary per method, after checking that the
runs judged the same sets against the same references (`hyperforget.studies.set_matrix.merge`, which says which
run and set differ when they did not). Each run is named by its file's stem less the words (between "_") that
every stem begins with (a stem that is all prefix: its last word). JSON: the merged runs (their commands and
machines), every set's cells, the summary per method and, for a row several runs hold, whether their verdicts
agree.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from hyperforget.base.io import read_json, write_json
from hyperforget.studies.set_matrix import markdown, merge


def run_names(paths: list[Path]) -> list[str]:
    words = [p.stem.split("_") for p in paths]
    common = 0
    while len(words) > 1 and all(len(w) > common and w[common] == words[0][common] for w in words):
        common += 1
    return ["_".join(w[common:]) or w[-1] for w in words]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("runs", nargs="+", type=Path, help="set_erasure JSONs of one --sets/--count on one project")
    ap.add_argument("--json", type=Path, default=None, help="write the merged matrix here")
    ap.add_argument("--md", type=Path, default=None, help="write the markdown tables here too")
    args = ap.parse_args()
    merged = merge([read_json(p) for p in args.runs], run_names(args.runs))
    merged["command"] = "python bench/" + Path(__file__).name + " " + " ".join(sys.argv[1:])
    merged["files"] = [str(p) for p in args.runs]
    text = markdown(merged)
    print(text)
    if args.json:
        write_json(args.json, merged)
    if args.md:
        args.md.write_text(text)


if __name__ == "__main__":
    main()
