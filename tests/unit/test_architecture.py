"""The structure holds: imports point down the layers, every module is in the contract, the pipeline
table and dvc.yaml agree, nothing depends on the working directory or on one machine's paths."""

from __future__ import annotations

import pkgutil
import subprocess
import sys
import tomllib
from pathlib import Path

import yaml

import hyperforget
from hyperforget.pipeline import STAGES, dvc_stages

ROOT = Path(__file__).resolve().parents[2]


def contract_layers() -> list[str]:
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["importlinter"]["contracts"]
    [layers] = [c["layers"] for c in config if c["type"] == "layers"]
    return [m.strip() for layer in layers for m in layer.replace(":", "|").split("|")]


def test_every_package_module_is_placed_in_the_layers_contract():
    modules = {f"hyperforget.{m.name}" for m in pkgutil.iter_modules(hyperforget.__path__)}
    listed = set(contract_layers())
    assert modules - listed == set(), "add these modules to [tool.importlinter] layers in pyproject.toml"
    assert listed - modules == set(), "the contract lists modules that do not exist"


def test_imports_point_down_the_layers():
    r = subprocess.run([str(Path(sys.executable).parent / "lint-imports")], cwd=ROOT, capture_output=True, text=True)
    assert r.returncode == 0, r.stdout[-4000:] + r.stderr[-2000:]


def test_dvc_yaml_is_the_pipeline_table():
    on_disk = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]
    assert on_disk == dvc_stages(), "dvc.yaml drifted from hyperforget/pipeline.py: regenerate it (see its header)"


def test_every_stage_depends_on_its_own_code_and_on_paths_that_exist():
    for stage in STAGES:
        assert "hyperforget/stages.py" in stage.deps, stage.name
        for dep in stage.deps:
            if not dep.startswith(("artifacts/", "data/")):
                assert (ROOT / dep).exists(), f"{stage.name} depends on {dep}, which does not exist"


def test_stage_params_name_real_keys_of_params_yaml():
    raw = yaml.safe_load((ROOT / "params.yaml").read_text())
    for stage in STAGES:
        for key in stage.params:
            node = raw
            for part in key.split("."):
                assert isinstance(node, dict) and part in node, f"{stage.name} lists {key}, not in params.yaml"
                node = node[part]


def test_nothing_changes_directory_or_names_one_machines_paths():
    offenders = []
    for folder in ("hyperforget", "flows", "bench", "infra"):
        for f in (ROOT / folder).rglob("*.py"):
            text = f.read_text()
            if "chdir(" in text or "/work/" in text or "/home/" in text:
                offenders.append(str(f.relative_to(ROOT)))
    assert offenders == []


def test_test_modules_have_unique_names():
    """pytest imports test files by basename (rootdir import mode): two test_x.py in tests/unit and
    tests/integration stop the whole collection when both are collected in one run, as `make test` does."""
    names = [p.name for p in (ROOT / "tests").rglob("test_*.py")]
    assert sorted({n for n in names if names.count(n) > 1}) == []
