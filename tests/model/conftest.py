"""Model tests: quality bars on real data (real MNIST from ../shared beside the repository, and digits), the
accuracies the project promises. No server. Shared session fixtures: tests/fixtures.py."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.fixtures import (  # noqa: F401  (fixtures: pytest finds them in this module's namespace)
    _embedded_default,
    _one_torch_thread,
    digits,
    digits_spec,
    original_mlp,
    retrains_class3,
    split_class3,
)

SHARED = Path(__file__).resolve().parents[3] / "shared"


def _shared_dataset(name: str) -> Path:
    """A data set folder in ../shared (CI always has it): a missing folder fails, never skips."""
    folder = SHARED / "datasets" / name
    if not folder.is_dir():
        pytest.fail(f"{folder} is missing: the tests run with ../shared beside the repository, as CI does")
    return folder


@pytest.fixture(scope="session")
def mnist_t10k() -> Path:
    """The real MNIST test split."""
    return _shared_dataset("mnist-t10k")


@pytest.fixture(scope="session")
def mnist_full() -> Path:
    """The four original MNIST files (60k train + 10k test)."""
    return _shared_dataset("mnist")
