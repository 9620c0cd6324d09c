"""The recipes the tests share, in one place: θ0's digits recipe, the retrain seeds, cheap method options, the
tiny hypernetwork and a small project's params. Plain values and functions (no fixtures): the fixtures that
build from them are in tests/fixtures.py, and a test that needs a variant says what it changes."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import yaml

from hyperforget.config.params import TrainConfig

ROOT = Path(__file__).resolve().parents[1]

# θ0 on digits: the 64→10→10 MLP, seed 0, ~96% test accuracy (params.yaml's `train:`)
ORIGINAL_RECIPE = TrainConfig(epochs=30, batch_size=32, lr=1e-2)
RETRAIN_SEEDS = (1000, 1001, 1002, 1003)  # the class-3 retrains: two LiRA shadows, one held out, one never seen

# every method in seconds on digits, for tests that need each method to run, not to forget well
CHEAP_OPTIONS = {"retrain": {"seeds": 1, "epochs": 3}, "gradtau": {"min_steps": 50}, "gradtau_paper": {"epochs": 2},
                 "forsaken": {"repair_steps": 5}, "salun": {"steps": 20}, "scrub": {"max_steps": 1, "min_steps": 1},
                 "eu_k": {"k": 1, "epochs": 5, "lr": 1e-2, "batch_size": 32}}

_TINY_HYPERNET = dict(chunk_size=64, width=32, depth=1, heads=2, steps=20, batch_size=16, lr=3e-3, warmup=2,
                      checkpoint_every=20, sample_steps=5, ema=0.0, device="cpu")


def tiny_hypernet(**changes: Any) -> dict:
    """HypernetConfig keywords of a hypernetwork that trains in a second: it only has to run."""
    return {**_TINY_HYPERNET, **changes}


# a built project: digits prepared and θ0 trained 5 epochs; 3 retrains, the fewest verification takes
# (2 LiRA shadows + 1 held out), per request and per class in its reference pool; 6 membership shadows (three
# complementary pairs: every record is out of 3, the fewest per-record LiRA takes: 2 + 1 held out)
PROJECT_TRAIN_EPOCHS = 5
PROJECT_RETRAIN_SEEDS = 3
PROJECT_POOL = {"class_retrains": 3, "shadows": 6}


def merge(base: dict, changes: dict) -> dict:
    """`base` with `changes` merged in, section by section (a nested dict merges, anything else replaces)."""
    out = copy.deepcopy(base)
    for key, value in changes.items():
        out[key] = merge(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


def project_params(**sections: dict) -> dict:
    """The shipped params.yaml as a built project has it (θ0 trained 5 epochs, 3 retrains, a small reference
    pool), `sections` merged in."""
    raw = yaml.safe_load((ROOT / "params.yaml").read_text())
    raw["train"]["epochs"] = PROJECT_TRAIN_EPOCHS
    raw["evaluation"]["retrain_seeds"] = PROJECT_RETRAIN_SEEDS
    raw["pool"].update(PROJECT_POOL)
    return merge(raw, sections)


def concurrent_notes(url: str, key: Any, writers: int = 3, rounds: int = 5) -> list[Exception]:
    """`writers` threads, each with its own ledger connection, appending `rounds` notes to request "shared" and
    as many request-less notes: what a fork of a history would come from. Returns the errors they raised."""
    import threading

    from hyperforget.erasure.ledger import Ledger

    errors: list[Exception] = []

    def write(n: int) -> None:
        led = Ledger(url, key=key)
        try:
            for i in range(rounds):
                led.note("shared", "seen", {"writer": n, "i": i})
                led.note(None, "tick", {"writer": n, "i": i})
        except Exception as e:  # reported to the test
            errors.append(e)
        finally:
            led.close()

    threads = [threading.Thread(target=write, args=(n,)) for n in range(writers)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    return errors


def raw_sql(url: str, *sql: str, **params) -> list:
    """Run SQL around the ledger's API, as anyone who can write the database could (as the role of `url` on
    PostgreSQL); the last statement's rows."""
    import sqlalchemy as sa

    from hyperforget.erasure.ledger_store import make_url

    engine = sa.create_engine(make_url(url))
    try:
        with engine.begin() as conn:
            for statement in sql:
                result = conn.execute(sa.text(statement), params)
            return result.all() if result.returns_rows else []
    finally:
        engine.dispose()
