"""params.yaml validation: every bad value is rejected with a message naming the key and the value."""

import shlex
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from hyperforget.base.errors import ConfigError
from hyperforget.config.params import Params, apply_override, load_params, parse_overrides, parse_params


def test_the_shipped_params_file_is_valid():
    params = load_params("params.yaml")
    assert params.data.name == "digits"
    assert params.forget.classes == [3]


@pytest.mark.parametrize(
    ("raw", "fragment"),
    [
        ({"forget": {"classes": [10]}}, "forget.classes [10] out of range"),
        ({"forget": {"classes": []}}, "forget.classes is empty"),
        ({"forget": {"classes": list(range(10))}}, "at least one class must be retained"),
        ({"forget": {"classes": [-1]}}, "negative class"),
        ({"forget": {"fraction": 0.0}}, "forget.fraction"),
        ({"forget": {"fraction": 0.95}}, "forget.fraction"),
        ({"forget": {"classes": [1], "fraction": 0.1}}, "exactly one of"),
        ({"forget": {}}, "exactly one of"),
        ({"train": {"epochs": -3}}, "train.epochs"),
        ({"train": {"epochs": 0}}, "train.epochs"),
        ({"train": {"lr": -1}}, "train.lr"),
        ({"data": {"name": "imagenet"}}, "data.name"),
        ({"colour": "blue"}, "colour: unknown key"),
        ({"train": {"epoch": 3}}, "train.epoch: unknown key"),
    ],
)
def test_bad_params_are_rejected_with_the_key_named(raw, fragment):
    with pytest.raises(ConfigError) as err:
        parse_params(raw)
    assert fragment in str(err.value)


def test_error_shows_the_offending_value():
    with pytest.raises(ConfigError, match=r"got -3"):
        parse_params({"train": {"epochs": -3}})


def test_overrides_switch_the_kind_of_request(tmp_path):
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump({"forget": {"classes": [3]}}))
    params = load_params(path, {"forget.fraction": 0.1})
    assert params.forget.classes is None and params.forget.fraction == 0.1
    assert params.forget.slug() == "random-10pct-seed0"


def test_missing_or_malformed_file_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        load_params(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("data: [unclosed")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_params(bad)


def test_defaults_round_trip_through_yaml():
    params = Params()
    assert parse_params(yaml.safe_load(yaml.safe_dump(params.model_dump()))) == params


@pytest.mark.parametrize("classes", [[True], ["3"], [3.0], [1, False]])
def test_a_deletion_request_names_classes_exactly(classes):
    """`[true]` is not class 1 and `["3"]` is not class 3: a request is exactly what was asked."""
    with pytest.raises(ConfigError, match=r"forget\.classes"):
        parse_params({"forget": {"classes": classes}})


def test_a_bad_override_is_named_as_the_override_not_as_the_file(tmp_path):
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump({"forget": {"classes": [3]}}))
    with pytest.raises(ConfigError, match=r"with the overrides forget\.classes=\[42\]") as err:
        load_params(path, {"forget.classes": [42]})
    assert "forget.classes [42] out of range" in str(err.value)


def _experiment_overrides(*make_vars: str) -> list[str]:
    """The `-S KEY=VALUE` items of `make run-mnist`'s `dvc exp run`, as make would run it (dry run)."""
    root = Path(__file__).resolve().parents[2]
    script = subprocess.run(["make", "-n", "run-mnist", *make_vars], cwd=root, capture_output=True, text=True,
                            check=True).stdout
    line = next(x for x in script.replace("\\\n", " ").splitlines() if "dvc exp run" in x)
    words = shlex.split(line.split(";")[0])
    return [words[i + 1] for i, w in enumerate(words) if w == "-S"]


@pytest.mark.skipif(shutil.which("make") is None, reason="needs make")
@pytest.mark.parametrize("make_vars", [(), ("MNIST_GATES=$(MNIST_CALIBRATED_GATES)",)])
def test_the_mnist_experiment_sets_only_keys_params_yaml_holds_and_valid_values(make_vars):
    # `dvc exp run -S` refuses a key that params.yaml does not hold ("not in struct"); the values must validate
    raw = yaml.safe_load(Path("params.yaml").read_text())
    overrides = parse_overrides(_experiment_overrides(*make_vars))
    for dotted in overrides:
        node = raw
        for key in dotted.split("."):
            assert isinstance(node, dict) and key in node, f"-S {dotted}: not in params.yaml"
            node = node[key]
    for dotted, value in overrides.items():
        apply_override(raw, dotted, value)
    params = parse_params(raw, "params.yaml + make run-mnist")
    assert (params.model.arch, params.hypernet.generate, params.evaluation.verification.relearn_lr) == \
        ("lenet", "block_head", 1e-4)
    assert ("gates.max_lira_auc_deficit" in overrides) == bool(make_vars)  # the calibrated limits reach dvc
