"""The structure holds: packages by domain, imports point down the layers, every package is in the contract,
the stage deps are derived and dvc.yaml lists them, nothing depends on the working directory or on one
machine's paths."""

from __future__ import annotations

import pkgutil
import subprocess
import sys
import tomllib
from pathlib import Path

import yaml

import hyperforget
from hyperforget.pipeline.table import STAGES, dvc_stages, stage

ROOT = Path(__file__).resolve().parents[2]


def contract_layers() -> list[str]:
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["importlinter"]["contracts"]
    [layers] = [c["layers"] for c in config if c["type"] == "layers"]
    return [m.strip() for layer in layers for m in layer.replace(":", "|").split("|")]


def test_the_layers_contract_names_every_package_of_the_library():
    packages = {f"hyperforget.{m.name}" for m in pkgutil.iter_modules(hyperforget.__path__)}
    listed = set(contract_layers())
    assert packages - listed == set(), "add these packages to [tool.importlinter] layers in pyproject.toml"
    assert listed - packages == set(), "the contract lists packages that do not exist"


def test_the_library_is_packages_by_domain_with_only_the_shells_beside_them():
    modules = {m.name for m in pkgutil.iter_modules(hyperforget.__path__) if not m.ispkg}
    assert modules == {"cli", "__main__"}


def test_imports_point_down_the_layers():
    r = subprocess.run([str(Path(sys.executable).parent / "lint-imports")], cwd=ROOT, capture_output=True, text=True)
    assert r.returncode == 0, r.stdout[-4000:] + r.stderr[-2000:]


def test_dvc_yaml_lists_each_stages_import_closure_and_misses_no_module():
    """The stage deps are derived (import closure of the stage's module); a module dropped from dvc.yaml,
    or one a stage runs that dvc.yaml never listed, leaves `dvc repro` with stale outputs: name it."""
    on_disk = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]
    for s in STAGES:
        listed = on_disk[s.name].get("do", on_disk[s.name])["deps"]
        assert sorted(set(s.deps) - set(listed)) == [], f"dvc.yaml's {s.name} stage misses these deps"
        assert sorted(set(listed) - set(s.deps)) == [], f"dvc.yaml's {s.name} stage lists deps it does not run"
    assert on_disk == dvc_stages(), ("dvc.yaml drifted from hyperforget/pipeline/table.py: "
                                     "regenerate it (see its header)")


def test_a_stage_depends_on_what_its_module_imports_indirectly_and_on_nothing_else():
    zoo = stage("zoo").deps  # the zoo index stores per-class metrics: models/metrics.py, two imports away
    assert {"hyperforget/models/metrics.py", "hyperforget/models/nets.py", "hyperforget/data/datasets.py",
            "hyperforget/zoo/trajectories.py", "hyperforget/pipeline/stages/zoo_build.py"} <= set(zoo)
    assert not [d for d in stage("prepare").deps if d.startswith(("hyperforget/hypernet", "hyperforget/unlearn",
                                                                   "hyperforget/models"))]
    assert not [d for d in stage("train").deps if d.startswith(("hyperforget/hypernet", "hyperforget/unlearn"))]


def test_every_stage_depends_on_its_own_module_and_on_paths_that_exist():
    for s in STAGES:
        assert s.module.replace(".", "/") + ".py" in s.deps, s.name
        for dep in s.deps:
            if not dep.startswith(("artifacts/", "data/")):
                assert (ROOT / dep).exists(), f"{s.name} depends on {dep}, which does not exist"


def test_stage_params_name_real_keys_of_params_yaml():
    raw = yaml.safe_load((ROOT / "params.yaml").read_text())
    for s in STAGES:
        for key in s.params:
            node = raw
            for part in key.split("."):
                assert isinstance(node, dict) and part in node, f"{s.name} lists {key}, not in params.yaml"
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
