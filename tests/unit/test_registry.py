"""Registry, tracking and publish steps against an embedded sqlite MLflow store in a project in tmp_path."""

import os
import shutil
import socket
import urllib.request
from concurrent.futures import ThreadPoolExecutor

import pytest

from hyperforget.base.artifacts import Artifacts
from hyperforget.base.errors import ConfigError, GateFailed, IntegrityError, StorageError
from hyperforget.base.io import sha256_file, write_json
from hyperforget.config.params import Params
from hyperforget.models.nets import ModelSpec, save_model
from hyperforget.publish import registry, runs, tracking
from hyperforget.publish import release as publish
from hyperforget.publish import s3 as storage

REFERENCE = {"test_retained_acc": {"mean": 0.95, "std": 0.01}, "forget_acc": {"mean": 0.0, "std": 0.0}}
VERIFIED = {"lira_auc": 0.5, "probe_forget_acc": None, "relearn_m": [], "reference": {}}  # verification.verify's shape
PARAMS = Params()
NAME = "digits-mlp-forget-classes-3"


@pytest.fixture
def art(tmp_path) -> Artifacts:
    return Artifacts(tmp_path)


@pytest.fixture
def client(mlflow_db, art, monkeypatch):
    """The project's store (a copy of the session's initialised one): params' relative `sqlite:///mlruns.db`,
    resolved under the project root (no MLFLOW_TRACKING_URI, no chdir)."""
    shutil.copy(mlflow_db, art.root / "mlruns.db")
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.setenv("MLFLOW_DISABLE_TELEMETRY", "true")
    monkeypatch.delenv("HYPERFORGET_S3_ENDPOINT", raising=False)
    c = tracking.client(PARAMS, art)
    assert c.tracking_uri == f"sqlite:///{art.root}/mlruns.db"
    return c


def request(tmp_path, forget_acc=0.0, seed=0):
    spec = ModelSpec("mlp", (1, 8, 8), 10, 10)
    folder = tmp_path / "artifacts" / "requests" / "classes-3" / f"finetune-{seed}"
    digest = save_model(folder / "model.safetensors", spec.build(seed=seed), spec)
    report = {"forget_acc": forget_acc, "retain_acc": 0.99, "test_acc": 0.9, "test_retained_acc": 0.95, "mia": 0.1,
              "per_class_test_acc": [0.9] * 10}
    write_json(folder / "report.json", {"report": report, "reference": REFERENCE})
    return {"model_path": str(folder / "model.safetensors"), "report_path": str(folder / "report.json"),
            "sha256": digest, "report": report, "reference": REFERENCE, "verification": VERIFIED, "method": "finetune",
            "request_slug": "classes-3", "lineage": {"zoo": "zoo-sha"}}


def publish_request(art, forget_acc=0.0, seed=0, key=None):
    req = request(art.root, forget_acc, seed)
    return req, publish.register(req, publish.gate(req, PARAMS), PARAMS, art, key=key)


def shipped(art, forget_acc=0.0, seed=0):
    """Registered and exported: a complete version."""
    req, reg = publish_request(art, forget_acc, seed)
    publish.export_and_upload(NAME, reg["version"], PARAMS, art)
    return req, reg


def test_candidate_moves_only_once_the_onnx_is_shipped_then_fetches_verified(client, art, monkeypatch):
    req, reg = publish_request(art)
    assert reg["name"] == NAME == registry.model_name(PARAMS) and reg["gates_passed"]
    assert client.get_registered_model(NAME).aliases == {}  # gated, but no ONNX yet: no alias
    mv = client.get_model_version(NAME, reg["version"])
    assert mv.tags["gates.passed"] == "true" and mv.tags["gates.forget_acc"] == "true"
    assert mv.tags["sha256.weights"] == sha256_file(req["model_path"])
    assert mv.tags["metrics.forget_acc"] == "0" and mv.tags["method"] == "finetune"
    assert mv.tags["lineage.zoo"] == "zoo-sha"
    run = client.get_run(reg["run_id"])
    assert run.data.metrics["per_class_test_acc.3"] == 0.9 and run.data.params["data.name"] == "digits"
    assert run.info.run_name == "register" and run.info.status == "FINISHED"

    out = publish.export_and_upload(NAME, reg["version"], PARAMS, art)
    assert out["s3_uri"] is None and out["max_abs_diff"] < 1e-4
    mv = client.get_model_version_by_alias(NAME, registry.CANDIDATE)
    assert str(mv.version) == reg["version"] and mv.tags["sha256.onnx"] == out["sha256"]
    got = publish.fetch(f"{NAME}@candidate", art.root / "fetched", PARAMS, art)
    assert got.name == f"{NAME}-v{reg['version']}.onnx" and sha256_file(got) == out["sha256"]


def test_a_version_is_an_mlflow_model_that_predicts_like_its_onnx(client, art, monkeypatch):
    import mlflow.pyfunc
    import numpy as np

    from hyperforget.publish.onnx import onnx_outputs

    shipped(art)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", client.tracking_uri)
    model = mlflow.pyfunc.load_model(f"models:/{NAME}@candidate")
    x = np.random.default_rng(0).standard_normal((16, 1, 8, 8)).astype(np.float32)
    got = model.predict(x)["logits"]
    onnx_file = publish.fetch(f"{NAME}@candidate", art.root / "fetched", PARAMS, art)
    import torch

    assert np.array_equal(got, onnx_outputs(onnx_file, torch.from_numpy(x)))


def test_an_export_cut_short_leaves_no_alias_and_a_retry_completes_the_same_version(client, art, monkeypatch):
    monkeypatch.setenv("HYPERFORGET_S3_ENDPOINT", "http://127.0.0.1:9")  # S3 "configured" but down

    def s3_down(*args, **kwargs):
        raise StorageError("cannot reach S3 at http://127.0.0.1:9")

    monkeypatch.setattr(storage, "upload_file", s3_down)
    req, reg = publish_request(art, key="flow-run-1")
    with pytest.raises(StorageError):
        publish.export_and_upload(NAME, reg["version"], PARAMS, art)
    assert client.get_registered_model(NAME).aliases == {}
    with pytest.raises(GateFailed, match="ONNX export is not complete"):
        publish.promote(NAME, reg["version"], PARAMS, art)
    with pytest.raises(ConfigError, match="no complete ONNX export"):
        publish.fetch(f"{NAME}/{reg['version']}", art.root / "fetched", PARAMS, art)

    monkeypatch.delenv("HYPERFORGET_S3_ENDPOINT")  # the outage is over (embedded store: the run holds the ONNX)
    again = publish.register(req, publish.gate(req, PARAMS), PARAMS, art, key="flow-run-1")  # the retry
    assert again["version"] == reg["version"]
    publish.export_and_upload(NAME, again["version"], PARAMS, art)
    assert len(client.search_model_versions(f"name = '{NAME}'")) == 1
    assert str(client.get_model_version_by_alias(NAME, registry.CANDIDATE).version) == reg["version"]
    assert publish.promote(NAME, reg["version"], PARAMS, art)["version"] == reg["version"]


def test_the_same_weights_judged_again_under_other_limits_are_a_new_version_not_a_failed_one_reread(client, art):
    """A request that failed its gates and is processed again after the limits were recalibrated: the same key and
    the same weights, another verdict. The failed version stays the record of the first verdict; the passing
    verdict is a version of its own, which exports."""
    req, failed = publish_request(art, forget_acc=0.4, key="req-9")
    assert not failed["gates_passed"]
    loose = PARAMS.model_copy(update={"gates": PARAMS.gates.model_copy(update={"max_forget_acc": 0.5})})
    passed = publish.register(req, publish.gate(req, loose), loose, art, key="req-9")
    assert passed["gates_passed"] and passed["version"] != failed["version"]
    publish.export_and_upload(NAME, passed["version"], loose, art)
    with pytest.raises(GateFailed, match="failed its gates"):
        publish.export_and_upload(NAME, failed["version"], loose, art)
    again = publish.register(req, publish.gate(req, loose), loose, art, key="req-9")  # a retry of the same verdict
    assert again["version"] == passed["version"]


def test_failed_gate_never_aliased_exported_or_fetched(client, art):
    _, reg = publish_request(art, forget_acc=0.4)
    assert not reg["gates_passed"]
    assert client.get_registered_model(NAME).aliases == {}
    with pytest.raises(GateFailed, match=r"forget acc 0\.4000 > 0\.0500"):
        publish.export_and_upload(NAME, reg["version"], PARAMS, art)
    assert "sha256.onnx" not in client.get_model_version(NAME, reg["version"]).tags
    assert not art.export.exists()
    with pytest.raises(ConfigError, match="no complete ONNX export"):
        publish.fetch(f"{NAME}/{reg['version']}", art.root / "fetched", PARAMS, art)
    assert not (art.root / "fetched").exists() or not any((art.root / "fetched").iterdir())


def test_promote_moves_champion_only_for_passed_complete_versions(client, art):
    _, good = shipped(art, seed=0)
    assert publish.promote(NAME, good["version"], PARAMS, art)["version"] == good["version"]
    _, bad = publish_request(art, forget_acc=0.3, seed=1)
    with pytest.raises(GateFailed, match=f"champion stays at version {good['version']}"):
        publish.promote(NAME, bad["version"], PARAMS, art)
    assert str(registry.resolve(f"{NAME}@champion", client).version) == good["version"]
    _, newer = shipped(art, seed=2)
    publish.promote(NAME, newer["version"], PARAMS, art)
    assert str(registry.resolve(f"models:/{NAME}@champion", client).version) == newer["version"]


def test_ten_concurrent_registrations_get_ten_versions_and_candidate_the_newest_complete(client):
    tags = {"gates.passed": "true"}

    def register_and_complete(i):
        mv = registry.register("race", f"/tmp/src{i}", None, tags, client)
        registry.mark_complete("race", mv.version, client)
        return mv.version

    with ThreadPoolExecutor(10) as pool:
        versions = list(pool.map(register_and_complete, range(10)))
    assert sorted(int(v) for v in versions) == list(range(1, 11))
    assert str(client.get_model_version_by_alias("race", registry.CANDIDATE).version) == "10"


def test_resolve_names_what_is_wrong(client):
    with pytest.raises(ConfigError, match="NAME@ALIAS"):
        registry.resolve("just-a-name", client)
    with pytest.raises(ConfigError, match="not in the registry"):
        registry.resolve("missing@champion", client)


def test_promote_and_export_of_a_version_the_registry_lacks_say_so_in_one_line(client, art):
    """As `hyperforget promote NAME 99` or `export` give it: a ConfigError naming what is missing (the CLI prints it
    without a traceback), not MLflow's exception."""
    _, reg = publish_request(art)
    for call in (publish.promote, publish.export_and_upload):
        with pytest.raises(ConfigError, match=rf"{NAME}/99 is not in the registry .*check the name, version"):
            call(NAME, "99", PARAMS, art)
        with pytest.raises(ConfigError, match=r"'x' of .* is not a version number"):
            call(NAME, "x", PARAMS, art)
    with pytest.raises(ConfigError, match="nope/1 is not in the registry"):
        publish.promote("nope", reg["version"], PARAMS, art)


def test_stage_run_logs_flattened_metrics_and_nests(client, art):
    with runs.start_stage_run(PARAMS, art, "request") as parent, \
            runs.start_stage_run(PARAMS, art, "unlearn", parent=parent) as child:
        logged = child.log_metrics({"acc": 0.5, "per_class": [0.1, 0.2], "ref": {"mia": {"mean": 0.3}},
                                    "ok": True, "name": "skipped"})
    assert logged == {"acc": 0.5, "per_class.0": 0.1, "per_class.1": 0.2, "ref.mia.mean": 0.3, "ok": 1.0}
    run = client.get_run(child.run_id)
    assert run.data.metrics["per_class.1"] == 0.2 and run.info.status == "FINISHED"
    assert run.data.tags["mlflow.parentRunId"] == parent.run_id
    assert run.data.tags["stage"] == "unlearn" and "git.commit" not in run.data.tags  # tmp_path is no repo
    exp = client.get_experiment(run.info.experiment_id)
    assert exp.name == "hyperforget/digits" and exp.artifact_location.endswith("/mlartifacts")


def test_a_crashed_stage_ends_its_runs_failed_not_running(client, art):
    with pytest.raises(KeyboardInterrupt), runs.start_stage_run(PARAMS, art, "request") as parent, \
            runs.start_stage_run(PARAMS, art, "unlearn", parent=parent) as child:
        raise KeyboardInterrupt  # what the CLI turns SIGTERM and Ctrl-C into
    assert client.get_run(parent.run_id).info.status == "FAILED"
    assert client.get_run(child.run_id).info.status == "FAILED"


def test_an_unreachable_server_is_tried_three_times_with_bounded_waits_then_named_with_the_fix(monkeypatch, art):
    """The wait is bounded by settings, not measured: 3 health checks of at most 3 s each, 0.5 s then 1 s apart."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"http://127.0.0.1:{port}")
    real_opener, timeouts, sleeps = urllib.request.build_opener, [], []

    def counting_opener(*handlers):
        opener = real_opener(*handlers)
        real_open = opener.open

        def open_(url, *args, timeout, **kwargs):
            timeouts.append(timeout)
            return real_open(url, *args, timeout=timeout, **kwargs)

        opener.open = open_
        return opener

    monkeypatch.setattr(tracking.urllib.request, "build_opener", counting_opener)
    monkeypatch.setattr(tracking.time, "sleep", sleeps.append)
    with pytest.raises(StorageError, match=rf"127\.0\.0\.1:{port} after 3 attempts .*make stack-up"):
        tracking.client(PARAMS, art)
    assert timeouts == [3.0, 3.0, 3.0] and sleeps == [0.5, 1.0]


def test_same_key_registers_one_version_different_keys_two(client):
    tags = {"gates.passed": "true"}
    first = registry.register("keyed", "/tmp/a", None, tags, client, key="req-1")
    again = registry.register("keyed", "/tmp/a", None, tags, client, key="req-1")
    assert again.version == first.version and again.tags[registry.KEY_TAG] == "req-1"
    assert len(client.search_model_versions("name = 'keyed'")) == 1
    other = registry.register("keyed", "/tmp/b", None, tags, client, key="req-2")
    assert other.version != first.version
    assert len(client.search_model_versions("name = 'keyed'")) == 2


def test_registering_without_a_key_is_never_deduplicated(client, art):
    _, first = shipped(art)
    _, second = shipped(art)  # identical deterministic run: a second registration
    assert first["version"] != second["version"]
    assert str(registry.resolve(f"{NAME}@candidate", client).version) == second["version"]


def test_weights_overwritten_after_unlearning_are_refused_not_registered(client, art):
    req = request(art.root, seed=0)
    other = ModelSpec("mlp", (1, 8, 8), 10, 10)
    save_model(req["model_path"], other.build(seed=99), other)  # a concurrent run wrote to the same folder
    with pytest.raises(IntegrityError, match="changed after the unlearning step"):
        publish.register(req, publish.gate(req, PARAMS), PARAMS, art)
    assert client.search_model_versions(f"name = '{NAME}'") == []


def test_a_tracking_call_to_a_server_that_is_down_is_tried_a_bounded_number_of_times(client, monkeypatch, art):
    """What bounds the wait when a server dies mid-request (tests/integration/test_outages.py kills it for real):
    MLflow's own HTTP retries, set when a client is made unless the environment sets them (3 retries, backoff
    factor 1, 30 s per request), then `with_retries`: 3 attempts 1 s and 2 s apart, then one error naming it."""
    from requests.exceptions import ConnectionError as RequestsConnectionError

    names = ("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR", "MLFLOW_HTTP_REQUEST_TIMEOUT")
    for name in names:
        monkeypatch.setenv(name, "unset by this test")  # so that monkeypatch restores the variable's absence too
        monkeypatch.delenv(name)
    tracking.client(PARAMS, art)
    assert [os.environ[name] for name in names] == ["3", "1", "30"]

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        uri = f"http://127.0.0.1:{s.getsockname()[1]}"
    calls, sleeps = [], []
    monkeypatch.setattr(tracking.time, "sleep", sleeps.append)

    def down():
        calls.append(1)
        raise RequestsConnectionError("connection refused")

    with pytest.raises(StorageError, match=rf"MLflow tracking server at {uri} .*make stack-up"):
        tracking.with_retries(down, uri)
    assert len(calls) == 3 and sleeps == [1.0, 2.0]
