"""params.yaml validation: every bad value is rejected with a message naming the key and the value."""

import shlex
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from hyperforget.base.artifacts import Artifacts
from hyperforget.base.errors import ConfigError
from hyperforget.config.overlays import dvc_overrides, experiment_overrides, load_params, parse_params
from hyperforget.config.params import Params


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


ROOT = Path(__file__).resolve().parents[2]
EXPERIMENTS = sorted((ROOT / "configs").glob("*.yaml"))


def _write(path: Path, raw: dict) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return path


def _dvc_params(experiment: Path, items: list[str], tmp_path: Path) -> Params:
    """What `dvc exp run -S ITEMS` makes of the base params file (DVC's own code), loaded and validated."""
    from dvc.utils.hydra import apply_overrides

    copy = tmp_path / "dvc" / "params.yaml"
    copy.parent.mkdir(exist_ok=True)
    shutil.copy(Artifacts.for_params(experiment).root / "params.yaml", copy)
    apply_overrides(copy, items)
    return load_params(copy)


def test_an_experiment_file_overlays_its_base_and_the_named_file_wins(tmp_path):
    base = _write(tmp_path / "params.yaml", {"seed": 0, "train": {"epochs": 30, "lr": 0.01},
                                             "evaluation": {"methods": ["retrain", "gradtau", "scrub"]}})
    _write(tmp_path / "configs" / "a.yaml", {"extends": "../params.yaml", "train": {"epochs": 12},
                                             "evaluation": {"methods": ["retrain"]}})
    b = _write(tmp_path / "configs" / "b.yaml", {"extends": "a.yaml", "train": {"epochs": 5}, "seed": 7})
    params = load_params(b)
    assert (params.train.epochs, params.train.lr, params.seed) == (5, 0.01, 7)  # b over a over params.yaml
    assert params.evaluation.methods == ["retrain"]  # a list replaces, it is not appended to
    assert load_params(b, {"train.epochs": 3}).train.epochs == 3  # --set still wins over the file
    assert load_params(base).train.epochs == 30  # the base alone is itself
    assert experiment_overrides(b) == {"train.epochs": 5, "evaluation.methods": ["retrain"], "seed": 7}


def test_an_experiment_file_keeps_the_base_folder_as_the_project_root(tmp_path):
    _write(tmp_path / "params.yaml", {"forget": {"classes": [3]}})
    exp = _write(tmp_path / "configs" / "ids.yaml", {"extends": "../params.yaml", "forget": {"samples": "ids.txt"}})
    assert Artifacts.for_params(exp).root == tmp_path.resolve()
    assert Artifacts.for_params(tmp_path / "params.yaml").root == tmp_path.resolve()
    params = load_params(exp)  # a path in an experiment file is project-relative, as in params.yaml
    assert (params.forget.classes, params.forget.samples) == (None, str(tmp_path.resolve() / "ids.txt"))
    assert Artifacts.for_params(ROOT / "configs" / "mnist-lenet-calibrated.yaml").root == ROOT


@pytest.mark.parametrize(
    ("extends", "fragment"),
    [
        ("../nope.yaml", "not found (extends of"),
        ("", "`extends` must name a params file"),
        (["../params.yaml"], "`extends` must name a params file"),
        ("loop.yaml", "loops back"),
    ],
)
def test_a_bad_extends_is_a_config_error_naming_the_file(tmp_path, extends, fragment):
    _write(tmp_path / "params.yaml", {})
    _write(tmp_path / "configs" / "loop.yaml", {"extends": "exp.yaml"})
    exp = _write(tmp_path / "configs" / "exp.yaml", {"extends": extends, "seed": 1})
    with pytest.raises(ConfigError, match=r"exp\.yaml") as err:
        load_params(exp)
    assert fragment in str(err.value)


def test_an_unknown_key_in_an_experiment_file_is_an_error_naming_the_file_and_key(tmp_path):
    _write(tmp_path / "params.yaml", {"train": {"epochs": 3}})
    exp = _write(tmp_path / "exp.yaml", {"extends": "params.yaml", "train": {"epoch": 3}})
    with pytest.raises(ConfigError, match=r"exp\.yaml \(extends .*params\.yaml\)") as err:
        load_params(exp)
    assert "train.epoch: unknown key" in str(err.value)


@pytest.mark.parametrize("experiment", EXPERIMENTS, ids=lambda p: p.name)
def test_dvc_flags_of_a_shipped_experiment_give_what_its_params_file_gives(experiment, tmp_path):
    """`dvc exp run -S` (DVC's own code) on params.yaml and `--params configs/X.yaml`: one experiment."""
    assert _dvc_params(experiment, dvc_overrides(experiment), tmp_path) == load_params(experiment)


def test_dvc_flags_add_missing_keys_switch_the_request_kind_and_quote_strings(tmp_path):
    _write(tmp_path / "params.yaml", {"forget": {"classes": [3]}, "tracking": {"uri": "sqlite:///mlruns.db"}})
    exp = _write(tmp_path / "exp.yaml", {"extends": "params.yaml", "forget": {"fraction": 0.1},
                                         "tracking": {"experiment_prefix": "it's a \\test", "uri": "true"},
                                         "evaluation": {"verification": {"relearn_lr": 1e-5}}})
    items = dvc_overrides(exp)
    assert "++forget.fraction=0.1" in items and "~forget.classes" in items
    assert _dvc_params(exp, items, tmp_path) == load_params(exp)


def _make_dvc_command(*make_vars: str) -> list[str]:
    """The words of `make run-mnist`'s `dvc exp run`, as make would run it (dry run)."""
    script = subprocess.run(["make", "-n", "run-mnist", *make_vars], cwd=ROOT, capture_output=True, text=True,
                            check=True).stdout
    line = next(x for x in script.replace("\\\n", " ").splitlines() if "dvc exp run" in x)
    return shlex.split(line.split(";")[0])


@pytest.mark.skipif(shutil.which("make") is None, reason="needs make")
@pytest.mark.parametrize("experiment", ["mnist-lenet", "mnist-lenet-calibrated"])
def test_make_run_mnist_runs_the_experiment_file_as_a_dvc_experiment(experiment, tmp_path):
    # the recipe is the experiment file's alone: dvc's -S items, applied by DVC to params.yaml, give its params
    path = ROOT / "configs" / f"{experiment}.yaml"
    words = _make_dvc_command(*([] if experiment == "mnist-lenet" else [f"MNIST_EXPERIMENT={path}"]))
    assert words[words.index("-n") + 1] == experiment
    params = _dvc_params(path, [words[i + 1] for i, w in enumerate(words) if w == "-S"], tmp_path)
    assert params == load_params(path)
    assert (params.model.arch, params.hypernet.generate, params.evaluation.verification.relearn_lr) == \
        ("lenet", "block_head", 1e-4)
    assert (params.gates.max_lira_auc_deficit == 0.3) == (experiment == "mnist-lenet-calibrated")
