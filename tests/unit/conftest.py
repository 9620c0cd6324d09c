"""Unit tests: no server, no ../shared. The shared session fixtures (digits, θ0, the class-3 split and its
retrains, an MLflow store, built projects) are in tests/fixtures.py; the recipes in tests/recipes.py."""

from tests.fixtures import (  # noqa: F401  (fixtures: pytest finds them in this module's namespace)
    _embedded_default,
    _one_torch_thread,
    digits,
    digits_spec,
    make_project,
    mlflow_db,
    original_mlp,
    project_template,
    retrains_class3,
    split_class3,
    tracked_project,
)
