"""params.yaml validation: every bad value is rejected with a message naming the key and the value."""

import pytest
import yaml

from hyperforget.config import Params, load_params, parse_params
from hyperforget.errors import ConfigError


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
