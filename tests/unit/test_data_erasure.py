"""Erasing a record request's records from the data (`hyperforget.erasure.data_erasure`), in a throw-away git + DVC
project with a local folder as its DVC remote: the rows located in the raw files, a new raw version without them
(data.dvc and dvc.lock updated), every older version collected from the cache and the remote, requests still
open carried over to the new version, θ0 refused until it is retrained; and the retrain reference of a record
request keyed by its ids, not by the path of their file."""

from __future__ import annotations

import gzip
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

from hyperforget.base.artifacts import Artifacts
from hyperforget.base.errors import ConfigError, DataError, IntegrityError
from hyperforget.base.io import sha256_file
from hyperforget.config.overlays import load_params
from hyperforget.config.params import DataConfig, ForgetConfig
from hyperforget.data import datasets
from hyperforget.data.readers import MNIST_FILES, import_raw, read_idx, write_idx
from hyperforget.erasure import data_erasure, data_versions, deletion, project_ledger
from hyperforget.erasure.ledger import Ledger
from hyperforget.models.nets import ModelSpec, save_model
from hyperforget.pipeline import answer, stages
from hyperforget.pipeline.stages.common import data_config

ROOT = Path(__file__).resolve().parents[2]
DVC = str(Path(sys.executable).parent / "dvc")
PREPARE_STAGE = {"stages": {"prepare": {"cmd": "hyperforget prepare", "deps": ["data/raw"], "outs": [
    "artifacts/prepare/dataset.safetensors", "artifacts/prepare/dataset.safetensors.sha256",
    {"artifacts/prepare/dataset_card.json": {"cache": False}}]}}}


def run(*args: str, cwd: Path) -> str:
    r = subprocess.run(args, cwd=cwd, capture_output=True, text=True, timeout=300,
                       env={**os.environ, "DVC_NO_ANALYTICS": "1"})
    assert r.returncode == 0, f"{' '.join(args)} exited {r.returncode}:\n{r.stdout}\n{r.stderr}"
    return r.stdout


def objects(folder: Path) -> set[str]:
    """The md5 of every object a DVC cache or local remote holds."""
    return {p.parent.name + p.name for p in (folder / "files" / "md5").glob("*/*")}


def used(root: Path) -> set[str]:
    """The objects the workspace uses: data.dvc's folder, its files, and the prepare stage's outputs."""
    out = yaml.safe_load((root / "data.dvc").read_text())["outs"][0]["md5"]
    lock = yaml.safe_load((root / "dvc.lock").read_text())["stages"]["prepare"]["outs"]
    entries = json.loads((root / ".dvc" / "cache" / "files" / "md5" / out[:2] / out[2:]).read_text())
    return {out, *(e["md5"] for e in entries), *(o["md5"] for o in lock if "dataset_card" not in o["path"])}


@pytest.fixture
def project(tmp_path, monkeypatch):
    """digits imported and prepared in a git + DVC project, data.dvc and the prepare stage committed to DVC and
    pushed to a local remote; a sqlite ledger."""
    root = tmp_path / "project"
    root.mkdir()
    raw = yaml.safe_load((ROOT / "params.yaml").read_text())
    (root / "params.yaml").write_text(yaml.safe_dump(raw))
    (root / "dvc.yaml").write_text(yaml.safe_dump(PREPARE_STAGE, sort_keys=False))
    params, art = load_params(root / "params.yaml"), Artifacts(root)
    stages.import_data(params, art)
    cfg = data_config(params, art)
    datasets.save_dataset(datasets.prepare(cfg), art.prepare)
    run("git", "init", "-q", cwd=root)
    run(DVC, "init", "-q", cwd=root)
    run(DVC, "add", "-q", "data", cwd=root)
    run(DVC, "commit", "-q", "--force", "prepare", cwd=root)
    run(DVC, "remote", "add", "-d", "local", str(tmp_path / "remote"), cwd=root)
    run(DVC, "push", "-q", cwd=root)
    led = Ledger(f"sqlite:///{tmp_path / 'ledger.db'}")
    yield {"root": root, "params": params, "art": art, "cfg": cfg, "led": led, "remote": tmp_path / "remote"}
    led.close()


def indices(art, r, data):
    return project_ledger.record_indices(art, r, data)


def raw_images(cfg: DataConfig) -> np.ndarray:
    return read_idx(Path(cfg.raw_dir) / cfg.name / "digits-images-idx3-ubyte")


def test_the_rows_of_prepared_train_records_are_located_and_a_changed_raw_file_is_refused(tmp_path):
    cfg = DataConfig(raw_dir=str(tmp_path))
    import_raw(cfg)
    data = datasets.prepare(cfg)
    rows = data_versions.train_rows(cfg, data)
    images = raw_images(cfg)
    assert len(rows) == len(data.y_train) and len(set(rows.tolist())) == len(rows)
    assert (images[rows[7]].astype(np.float32) / 16).argmax() == (data.x_train[7, 0]).argmax()
    path = Path(cfg.raw_dir) / cfg.name / "digits-images-idx3-ubyte"
    swapped = images.copy()
    swapped[[rows[0], rows[1]]] = swapped[[rows[1], rows[0]]]
    write_idx(path, swapped)
    with pytest.raises(IntegrityError, match="is not the raw data the prepared dataset was made from"):
        data_versions.train_rows(cfg, data)


def test_a_new_raw_version_lacks_exactly_the_rows_and_is_byte_deterministic(tmp_path):
    """MNIST-style files with their own test split, gzipped: rewritten gzipped, without the rows, the same bytes
    every time; row numbers of the rest shift past the erased ones."""
    rng = np.random.default_rng(0)
    folders = []
    for copy in ("a", "b"):
        folder = tmp_path / copy / "mnist"
        folder.mkdir(parents=True)
        for key, n in (("train", 120), ("test", 30)):
            x, y = rng.integers(0, 256, (n, 28, 28)), np.arange(n) % 10
            for kind, arr in (("x", x), ("y", y)):
                write_idx(folder / MNIST_FILES[f"{key}_{kind}"], arr)
                path = folder / MNIST_FILES[f"{key}_{kind}"]
                (folder / f"{path.name}.gz").write_bytes(gzip.compress(path.read_bytes()))
                path.unlink()
        folders.append(folder)
    shutil.rmtree(folders[1])
    shutil.copytree(folders[0], folders[1])
    cfg = DataConfig(name="mnist", raw_dir=str(folders[0].parent))
    data = datasets.prepare(cfg)
    rows = data_versions.train_rows(cfg, data)
    before = read_idx(folders[0] / f"{MNIST_FILES['train_x']}.gz")
    for folder in folders:
        data_versions.write_without("mnist", folder, [int(rows[3]), int(rows[5]), 0])
    after = read_idx(folders[0] / f"{MNIST_FILES['train_x']}.gz")
    assert np.array_equal(after, np.delete(before, sorted({int(rows[3]), int(rows[5]), 0}), axis=0))
    assert len(read_idx(folders[0] / f"{MNIST_FILES['train_y']}.gz")) == len(after)
    assert len(read_idx(folders[0] / f"{MNIST_FILES['test_x']}.gz")) == 30  # never trained on: untouched
    assert data_versions.raw_version(folders[0])["sha256"] == data_versions.raw_version(folders[1])["sha256"]
    assert data_versions.shift([1, 4, 9, 10], [0, 4, 5]) == [0, 6, 7]


def test_erasing_makes_a_new_version_collects_every_old_one_and_carries_open_requests(project):
    params, art, cfg, led, root = (project[k] for k in ("params", "art", "cfg", "led", "root"))
    art.model.parent.mkdir(parents=True, exist_ok=True)
    art.model.write_bytes(b"theta0 trained on the version before the erasure")
    a = deletion.submit(params, art, samples=[5, 17, 300], request_id="A", ledger=led)
    q = deletion.submit(params, art, samples=[17, 40, 41, 42, 43, 44, 45, 46, 47, 48], request_id="Q", ledger=led)
    data = datasets.load_dataset(art.prepare)
    rows = data_versions.train_rows(cfg, data)
    images, old_dataset, old_used = raw_images(cfg), sha256_file(art.dataset), used(root)
    assert old_used <= objects(project["remote"]) and old_used <= objects(root / ".dvc" / "cache")

    section = data_erasure.erase(params, art, led, a, lambda r, d: indices(art, r, d))

    assert np.array_equal(raw_images(cfg), np.delete(images, rows[[5, 17, 300]], axis=0))
    new_dataset = sha256_file(art.dataset)
    assert section["erased"] and section["before"]["dataset_sha256"] == old_dataset != new_dataset
    assert section["after"]["dataset_sha256"] == new_dataset and section["rows_removed"] == 3
    assert "Data and pipelines are up to date" in run(DVC, "status", "prepare", "data.dvc", cwd=root)
    new_used, remote, cache = used(root), objects(project["remote"]), objects(root / ".dvc" / "cache")
    gone = old_used - new_used  # the old raw files, the old folder listing and the old prepared dataset
    assert len(gone) >= 3 and not gone & remote and not gone & cache and new_used <= remote and new_used <= cache, \
        section["collected"]
    gc = section["collected"]
    assert gc["scope"] == "workspace" and gc["remotes"][0]["name"] == "local" and gc["remotes"][0]["removed"] >= 3

    carried = led.read_notes("Q", data_erasure.CARRIED)[-1].detail
    assert carried["to_dataset"] == new_dataset and carried["already_erased"] == 1 and carried["n_rows"] == 9
    with pytest.raises(DataError, match="was trained before request A's records were erased"):
        data_erasure.check_original(led, art)
    art.model.write_bytes(b"theta0 retrained on the erased data (dvc repro)")
    data_erasure.check_original(led, art)
    forget = deletion.request_params(params, art, led.get("Q"), led).forget
    new_data, now = datasets.load_dataset(art.prepare), raw_images(cfg)
    new_rows = data_versions.train_rows(cfg, new_data)
    trained = {now[r].tobytes() for r in new_rows[datasets.forget_split(new_data, forget).forget_idx.numpy()]}
    assert trained and trained <= {images[rows[i]].tobytes() for i in range(40, 49)}  # those still train records

    notes = len(led.read_notes("A"))
    data_erasure.erase(params, art, led, a, lambda r, d: indices(art, r, d))  # again: nothing more happens
    assert len(led.read_notes("A")) == notes and sha256_file(art.dataset) == new_dataset

    data_erasure.erase(params, art, led, q, lambda r, d: indices(art, r, d))
    erased = sorted(set(rows[[5, 17, 300, *range(40, 49)]].tolist()))  # Q's validation/test records go too
    assert np.array_equal(raw_images(cfg), np.delete(images, erased, axis=0))
    assert led.read_notes("Q", data_erasure.ERASED)[-1].detail["dataset_before"] == new_dataset


def test_a_cache_outside_the_project_is_refused_and_nothing_is_collected(project, tmp_path):
    art, root = project["art"], project["root"]
    before = objects(project["remote"])
    run(DVC, "cache", "dir", str(tmp_path / "shared-cache"), cwd=root)
    with pytest.raises(ConfigError, match="is outside the project"):
        data_versions.collect(art, Path(project["cfg"].raw_dir))
    assert objects(project["remote"]) == before


def test_the_reference_of_a_record_request_is_keyed_by_its_ids_not_the_files_path(tmp_path, monkeypatch):
    root = tmp_path / "answer"
    root.mkdir()
    raw = yaml.safe_load((ROOT / "params.yaml").read_text())
    raw["train"]["epochs"] = 1
    raw["evaluation"]["reference"] = "per_request"  # a reference trained for the request, cached by its key
    (root / "params.yaml").write_text(yaml.safe_dump(raw))
    base, art = load_params(root / "params.yaml"), Artifacts(root)
    stages.import_data(base, art)
    data = datasets.prepare(data_config(base, art))
    datasets.save_dataset(data, art.prepare)
    save_model(art.model, ModelSpec("mlp", data.input_shape, data.num_classes, 10).build(seed=0),
               ModelSpec("mlp", data.input_shape, data.num_classes, 10))  # θ0 needs no training for this
    first, second = tmp_path / "ids.txt", tmp_path / "resubmitted" / "same-ids.txt"
    second.parent.mkdir()
    first.write_text("3\n1\n2\n")
    second.write_text("1\n2\n3\n")
    params = base.model_copy(update={"forget": ForgetConfig(samples=str(first))})
    summary, _ = answer.reference_models(params, art, answer.context(params, art))

    def retrained(*args, **kwargs):
        raise AssertionError("the same ids from another file were retrained from scratch")

    monkeypatch.setattr(answer, "run_method", retrained)
    again = base.model_copy(update={"forget": ForgetConfig(samples=str(second))})
    cached = answer.reference_models(again, art, answer.context(again, art))[0]
    assert json.dumps(cached, sort_keys=True) == json.dumps(summary, sort_keys=True)

