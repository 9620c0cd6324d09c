"""Registry, tracking and publish steps against an embedded sqlite MLflow store in tmp_path."""

import shutil
import socket
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from hyperforget import publish, registry, tracking
from hyperforget.config import Params
from hyperforget.errors import ConfigError, GateFailed, IntegrityError, StorageError
from hyperforget.io import sha256_file, write_json
from hyperforget.models import ModelSpec, save_model

REFERENCE = {"test_retained_acc": {"mean": 0.95, "std": 0.01}, "forget_acc": {"mean": 0.0, "std": 0.0}}
PARAMS = Params()
NAME = "digits-mlp-forget-classes-3"


@pytest.fixture(scope="module")
def template_db(tmp_path_factory):
    """An initialised MLflow schema, made once (its migrations take ~10 s) and copied per test."""
    from mlflow import MlflowClient

    d = tmp_path_factory.mktemp("mlflow-template")
    MlflowClient(f"sqlite:///{d}/mlruns.db").search_experiments()
    return d / "mlruns.db"


@pytest.fixture
def client(template_db, tmp_path, monkeypatch):
    shutil.copy(template_db, tmp_path / "mlruns.db")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path}/mlruns.db")
    monkeypatch.setenv("MLFLOW_DISABLE_TELEMETRY", "true")
    monkeypatch.delenv("HYPERFORGET_S3_ENDPOINT", raising=False)
    return tracking.client()


def request(tmp_path, forget_acc=0.0, seed=0):
    spec = ModelSpec("mlp", (1, 8, 8), 10, 10)
    folder = tmp_path / "artifacts" / "requests" / "classes-3" / f"finetune-{seed}"
    digest = save_model(folder / "model.safetensors", spec.build(seed=seed), spec)
    report = {"forget_acc": forget_acc, "retain_acc": 0.99, "test_acc": 0.9, "test_retained_acc": 0.95, "mia": 0.1,
              "per_class_test_acc": [0.9] * 10}
    write_json(folder / "report.json", {"report": report, "reference": REFERENCE})
    return {"model_path": str(folder / "model.safetensors"), "report_path": str(folder / "report.json"),
            "sha256": digest, "report": report, "reference": REFERENCE, "method": "finetune",
            "request_slug": "classes-3", "lineage": {"zoo": "zoo-sha"}}


def publish_request(tmp_path, forget_acc=0.0, seed=0):
    req = request(tmp_path, forget_acc, seed)
    return req, publish.register(req, publish.gate(req, PARAMS), PARAMS)


def test_passed_version_is_candidate_and_its_onnx_fetches_verified(client, tmp_path):
    req, reg = publish_request(tmp_path)
    assert reg["name"] == NAME == registry.model_name(PARAMS) and reg["candidate"]
    mv = client.get_model_version_by_alias(NAME, registry.CANDIDATE)
    assert str(mv.version) == reg["version"]
    assert mv.tags["gates.passed"] == "true" and mv.tags["gates.forget_acc"] == "true"
    assert mv.tags["sha256.weights"] == sha256_file(req["model_path"])
    assert mv.tags["metrics.forget_acc"] == "0" and mv.tags["method"] == "finetune"
    assert mv.tags["lineage.zoo"] == "zoo-sha"
    run = client.get_run(reg["run_id"])
    assert run.data.metrics["per_class_test_acc.3"] == 0.9 and run.data.params["data.name"] == "digits"
    assert run.info.run_name == "register"

    out = publish.export_and_upload(NAME, reg["version"], PARAMS)
    assert out["s3_uri"] is None and out["max_abs_diff"] < 1e-4
    assert client.get_model_version(NAME, reg["version"]).tags["sha256.onnx"] == out["sha256"]
    got = publish.fetch(f"{NAME}@candidate", tmp_path / "fetched")
    assert got.name == f"{NAME}-v{reg['version']}.onnx" and sha256_file(got) == out["sha256"]


def test_failed_gate_never_aliased_exported_or_fetched(client, tmp_path):
    _, reg = publish_request(tmp_path, forget_acc=0.4)
    assert not reg["candidate"]
    assert client.get_registered_model(NAME).aliases == {}
    with pytest.raises(GateFailed, match=r"forget acc 0\.4000 > 0\.0500"):
        publish.export_and_upload(NAME, reg["version"], PARAMS)
    assert "sha256.onnx" not in client.get_model_version(NAME, reg["version"]).tags
    assert not (tmp_path / publish.EXPORTS).exists()
    with pytest.raises(ConfigError, match="no ONNX export"):
        publish.fetch(f"{NAME}/{reg['version']}", tmp_path / "fetched")
    assert not (tmp_path / "fetched").exists() or not any((tmp_path / "fetched").iterdir())


def test_promote_moves_champion_only_for_passed_versions(client, tmp_path):
    _, good = publish_request(tmp_path, seed=0)
    assert publish.promote(NAME, good["version"])["version"] == good["version"]
    _, bad = publish_request(tmp_path, forget_acc=0.3, seed=1)
    with pytest.raises(GateFailed, match=f"champion stays at version {good['version']}"):
        publish.promote(NAME, bad["version"])
    assert str(registry.resolve(f"{NAME}@champion").version) == good["version"]
    _, newer = publish_request(tmp_path, seed=2)
    publish.promote(NAME, newer["version"])
    assert str(registry.resolve(f"models:/{NAME}@champion").version) == newer["version"]


def test_ten_concurrent_registrations_get_ten_versions(client):
    tags = {"gates.passed": "true"}
    with ThreadPoolExecutor(10) as pool:
        versions = list(pool.map(lambda i: registry.register("race", f"/tmp/src{i}", None, tags, client).version,
                                 range(10)))
    assert sorted(int(v) for v in versions) == list(range(1, 11))
    assert str(client.get_model_version_by_alias("race", registry.CANDIDATE).version) == "10"


def test_resolve_names_what_is_wrong(client):
    with pytest.raises(ConfigError, match="NAME@ALIAS"):
        registry.resolve("just-a-name")
    with pytest.raises(ConfigError, match="not in the registry"):
        registry.resolve("missing@champion")


def test_stage_run_logs_flattened_metrics_and_nests(client):
    with tracking.start_stage_run(PARAMS, "request") as parent, tracking.start_stage_run(PARAMS, "unlearn") as child:
        logged = tracking.log_metrics({"acc": 0.5, "per_class": [0.1, 0.2], "ref": {"mia": {"mean": 0.3}},
                                       "ok": True, "name": "skipped"})
    assert logged == {"acc": 0.5, "per_class.0": 0.1, "per_class.1": 0.2, "ref.mia.mean": 0.3, "ok": 1.0}
    run = client.get_run(child.info.run_id)
    assert run.data.tags["mlflow.parentRunId"] == parent.info.run_id
    assert run.data.tags["stage"] == "unlearn" and "git.commit" not in run.data.tags  # tmp_path is no repo
    exp = client.get_experiment(run.info.experiment_id)
    assert exp.name == "hyperforget/digits" and exp.artifact_location.endswith("/mlartifacts")


def test_unreachable_server_fails_fast_with_the_fix(monkeypatch):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"http://127.0.0.1:{port}")
    t0 = time.monotonic()
    with pytest.raises(StorageError, match=rf"127\.0\.0\.1:{port}.*make stack-up"):
        tracking.client()
    assert time.monotonic() - t0 < 10


def test_same_key_registers_one_version_different_keys_two(client):
    tags = {"gates.passed": "true"}
    first = registry.register("keyed", "/tmp/a", None, tags, client, key="req-1")
    again = registry.register("keyed", "/tmp/a", None, tags, client, key="req-1")
    assert again.version == first.version and again.tags[registry.KEY_TAG] == "req-1"
    assert len(client.search_model_versions("name = 'keyed'")) == 1
    other = registry.register("keyed", "/tmp/b", None, tags, client, key="req-2")
    assert other.version != first.version
    assert len(client.search_model_versions("name = 'keyed'")) == 2


def test_retried_register_after_alias_failure_keeps_one_candidate_version(client, tmp_path, monkeypatch):
    req = request(tmp_path)
    verdict = publish.gate(req, PARAMS)
    with tracking.start_stage_run(PARAMS, "request") as parent:
        settle = registry._settle_candidate
        calls = []

        def drop_first_connection(*args, **kwargs):
            calls.append(args)
            if len(calls) == 1:
                raise ConnectionError("connection dropped")
            return settle(*args, **kwargs)

        monkeypatch.setattr(registry, "_settle_candidate", drop_first_connection)
        with pytest.raises(ConnectionError):
            publish.register(req, verdict, PARAMS, parent=parent.info.run_id)
        assert len(client.search_model_versions(f"name = '{NAME}'")) == 1  # created, but no alias yet
        assert client.get_registered_model(NAME).aliases == {}

        reg = publish.register(req, verdict, PARAMS, parent=parent.info.run_id)  # the task's retry
    [mv] = client.search_model_versions(f"name = '{NAME}'")
    assert reg["version"] == str(mv.version) and reg["run_id"] == mv.run_id
    assert str(client.get_model_version_by_alias(NAME, registry.CANDIDATE).version) == reg["version"]


def test_registering_without_parent_is_never_deduplicated(client, tmp_path):
    _, first = publish_request(tmp_path)
    _, second = publish_request(tmp_path)  # identical deterministic run: a second registration
    assert first["version"] != second["version"]
    assert str(registry.resolve(f"{NAME}@candidate").version) == second["version"]


def test_weights_overwritten_after_unlearning_are_refused_not_registered(client, tmp_path):
    req = request(tmp_path, seed=0)
    other = ModelSpec("mlp", (1, 8, 8), 10, 10)
    save_model(req["model_path"], other.build(seed=99), other)  # a concurrent run wrote to the same folder
    with pytest.raises(IntegrityError, match="changed after the unlearning step"):
        publish.register(req, publish.gate(req, PARAMS), PARAMS)
    assert client.search_model_versions(f"name = '{NAME}'") == []
