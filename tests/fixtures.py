"""Session fixtures shared by tests/unit and tests/model (their conftest files import them; a module elsewhere
may import the ones it uses): the prepared digits, θ0, the class-3 split and its retrains, an initialised
MLflow store, and built projects. Each is built once per test process; treat them as read-only (deep-copy a
model before changing it). The recipes they use are in tests/recipes.py.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import torch
import yaml

from hyperforget.base.artifacts import Artifacts
from hyperforget.config.overlays import load_params
from hyperforget.config.params import DataConfig, ForgetConfig
from hyperforget.data.datasets import Dataset, ForgetSplit, forget_split, prepare
from hyperforget.data.readers import import_raw
from hyperforget.models.nets import ModelSpec
from hyperforget.models.train import train_many, train_model
from tests.recipes import ORIGINAL_RECIPE, RETRAIN_SEEDS, project_params

# what `source .stack/env` and the integration fixtures export: unit and model tests run on the embedded default
STACK_VARIABLES = ("MLFLOW_TRACKING_URI", "MLFLOW_S3_ENDPOINT_URL", "HYPERFORGET_S3_ENDPOINT", "HYPERFORGET_S3_BUCKET",
                   "HYPERFORGET_STACK_PORT_BASE", "PREFECT_API_URL", "HYPERFORGET_LEDGER_URL")


@contextmanager
def embedded_env() -> Iterator[pytest.MonkeyPatch]:
    """No server a developer's shell (or an integration fixture earlier on this xdist worker) points at."""
    with pytest.MonkeyPatch.context() as mp:
        for name in STACK_VARIABLES:
            mp.delenv(name, raising=False)
        yield mp


@pytest.fixture(scope="session", autouse=True)
def _one_torch_thread():
    """Tiny models run several times faster on one thread than on two contended ones."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module", autouse=True)
def _embedded_default():
    """Module scope, autouse: set up before the module's own project fixtures write their first MLflow run, and
    again for every module, because an integration module that ran earlier on the same xdist worker exported its
    session stack's variables (restored when this module ends, for the integration tests that still use them)."""
    with embedded_env():
        yield


# ---------- digits, θ0, the class-3 request ----------


@pytest.fixture(scope="session")
def digits(tmp_path_factory) -> Dataset:
    cfg = DataConfig(raw_dir=str(tmp_path_factory.mktemp("raw")))
    import_raw(cfg)
    return prepare(cfg)


@pytest.fixture(scope="session")
def digits_spec(digits) -> ModelSpec:
    return ModelSpec("mlp", digits.input_shape, digits.num_classes, 10)


@pytest.fixture(scope="session")
def original_mlp(digits, digits_spec) -> torch.nn.Module:
    """The original model θ0: 64→10→10 trained with ORIGINAL_RECIPE on all of digits' training split (seed 0)."""
    model = digits_spec.build(seed=0)
    train_model(model, digits.x_train, digits.y_train, ORIGINAL_RECIPE, seed=0)
    return model.eval()


@pytest.fixture(scope="session")
def split_class3(digits) -> ForgetSplit:
    return forget_split(digits, ForgetConfig(classes=[3]))


@pytest.fixture(scope="session")
def retrains_class3(digits, digits_spec, split_class3) -> list[torch.nn.Module]:
    """Four retrains on D_r (class 3 removed) with θ0's recipe, seeds RETRAIN_SEEDS, one vmapped batch."""
    x, y = digits.x_train[split_class3.retain_idx], digits.y_train[split_class3.retain_idx]
    return train_many(digits_spec, list(RETRAIN_SEEDS), x, y, ORIGINAL_RECIPE)


# ---------- MLflow store and built projects ----------


@pytest.fixture(scope="session")
def mlflow_db(tmp_path_factory) -> Path:
    """An initialised, empty MLflow sqlite store, made once (its schema migrations take seconds): copy it."""
    from mlflow import MlflowClient

    folder = tmp_path_factory.mktemp("mlflow-db")
    with embedded_env():
        MlflowClient(f"sqlite:///{folder}/mlruns.db").search_experiments()
    return folder / "mlruns.db"


@pytest.fixture
def tracked_project(mlflow_db, tmp_path, monkeypatch) -> Artifacts:
    """An empty project on the embedded default (no tracking server, no S3) whose MLflow store is a copy of
    `mlflow_db`."""
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv("HYPERFORGET_S3_ENDPOINT", raising=False)
    monkeypatch.setenv("MLFLOW_DISABLE_TELEMETRY", "true")
    shutil.copy(mlflow_db, tmp_path / "mlruns.db")
    return Artifacts(tmp_path)


@pytest.fixture(scope="session")
def project_template(tmp_path_factory, mlflow_db) -> Path:
    """A project folder with digits imported and prepared, θ0 trained and its reference pool built
    (recipes.project_params): copied, never used in place."""
    root = tmp_path_factory.mktemp("project-template")
    (root / "params.yaml").write_text(yaml.safe_dump(project_params()))
    shutil.copy(mlflow_db, root / "mlruns.db")
    from hyperforget.pipeline import stages

    with embedded_env():
        params, art = load_params(root / "params.yaml"), Artifacts(root)
        for stage in (stages.import_data, stages.prepare, stages.train, stages.pool):
            stage(params, art)
    return root


@pytest.fixture(scope="session")
def make_project(tmp_path_factory, project_template, mlflow_db) -> Callable[..., Path]:
    """`make_project(name, **sections)`: a new built project (a copy of `project_template`: prepared data, θ0
    and its reference pool, an empty MLflow store of its own) with `sections` merged into its params.yaml; returns
    that file. The sections θ0 was built from (seed, data, model, train) cannot change: a test that needs another θ0
    builds it; one that changes `pool` builds its pool again (`stages.pool`)."""

    def make(name: str = "project", **sections: dict) -> Path:
        fixed = {"seed", "data", "model", "train"} & set(sections)
        if fixed:
            raise ValueError(f"make_project cannot change {sorted(fixed)}: the template's θ0 was trained with them")
        root = tmp_path_factory.mktemp(name)
        shutil.copytree(project_template, root, dirs_exist_ok=True,
                        ignore=shutil.ignore_patterns("mlruns.db", "mlartifacts"))
        shutil.copy(mlflow_db, root / "mlruns.db")
        (root / "params.yaml").write_text(yaml.safe_dump(project_params(**sections)))
        return root / "params.yaml"

    return make
