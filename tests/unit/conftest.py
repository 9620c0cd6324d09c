"""Shared, session-scoped digits fixtures: the prepared data, the MLP spec, a trained original model
and the class-3 forget split. Built once per test session (~2 s); treat them as read-only
(deep-copy a model before changing it).
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from hyperforget.config.params import DataConfig, ForgetConfig, TrainConfig
from hyperforget.data.datasets import Dataset, ForgetSplit, forget_split, prepare
from hyperforget.data.readers import import_raw
from hyperforget.models.nets import ModelSpec
from hyperforget.models.train import train_model

ORIGINAL_RECIPE = TrainConfig(epochs=30, batch_size=32, lr=1e-2)  # ~96% test accuracy on digits


@pytest.fixture(scope="session", autouse=True)
def _one_torch_thread():
    """Tiny models run several times faster on one thread than on two contended ones."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


# what `source .stack/env` and the integration fixtures export: unit tests run on the embedded default
STACK_VARIABLES = ("MLFLOW_TRACKING_URI", "MLFLOW_S3_ENDPOINT_URL", "HYPERFORGET_S3_ENDPOINT", "HYPERFORGET_S3_BUCKET",
                   "HYPERFORGET_STACK_PORT_BASE", "PREFECT_API_URL", "HYPERFORGET_LEDGER_URL")


@pytest.fixture(scope="module", autouse=True)
def _embedded_default():
    """No server a developer's shell (or an integration fixture earlier in the session) points at.
    Module scope, autouse: set up before the module's own project fixtures write their first MLflow run, and
    again for every unit module, because an integration module that ran earlier on the same xdist worker
    exported its session stack's variables (restored when the unit module ends, for the integration tests
    that still use that stack)."""
    with pytest.MonkeyPatch.context() as mp:
        for name in STACK_VARIABLES:
            mp.delenv(name, raising=False)
        yield


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
    """The original model θ0: 64→10→10 trained on all of digits' training split (seed 0)."""
    model = digits_spec.build(seed=0)
    train_model(model, digits.x_train, digits.y_train, ORIGINAL_RECIPE, seed=0)
    return model.eval()


@pytest.fixture(scope="session")
def split_class3(digits) -> ForgetSplit:
    return forget_split(digits, ForgetConfig(classes=[3]))


SHARED = Path(__file__).resolve().parents[3] / "shared"


@pytest.fixture(scope="session")
def mnist_t10k() -> Path:
    """The real MNIST test split in ../shared (CI always has it): a missing folder fails, never skips."""
    folder = SHARED / "datasets" / "mnist-t10k"
    if not folder.is_dir():
        pytest.fail(f"{folder} is missing: the tests run with ../shared beside the repository, as CI does")
    return folder


@pytest.fixture(scope="session")
def mnist_full() -> Path:
    """The four original MNIST files (60k train + 10k test) in ../shared: a missing folder fails, never skips."""
    folder = SHARED / "datasets" / "mnist"
    if not folder.is_dir():
        pytest.fail(f"{folder} is missing: the tests run with ../shared beside the repository, as CI does")
    return folder
