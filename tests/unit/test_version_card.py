"""A registered version explains itself, read back through MlflowClient from an embedded sqlite store: its
description says what it forgets, by which method, the verdict with each failed check and where its certificate
is; its MLflow Model has a tensor signature (float32 inputs of the data's shape in, float32 logits out)."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from hyperforget.base.artifacts import Artifacts
from hyperforget.base.io import write_json
from hyperforget.config.params import Params
from hyperforget.erasure import evidence
from hyperforget.models.nets import ModelSpec, save_model
from hyperforget.publish import registry, tracking
from hyperforget.publish import release as publish

PARAMS = Params()
NAME = "digits-mlp-forget-classes-3"
REFERENCE = {"test_retained_acc": {"mean": 0.95, "std": 0.01}, "forget_acc": {"mean": 0.0, "std": 0.0}}
VERIFIED = {"lira_auc": 0.5, "probe_forget_acc": None, "relearn_m": [], "reference": {}}


@pytest.fixture
def project(tracked_project):
    return tracked_project, tracking.client(PARAMS, tracked_project)


def registered(art: Artifacts, forget_acc: float, key: str | None = None) -> dict:
    spec = ModelSpec("mlp", (1, 8, 8), 10, 10)
    folder = art.root / "artifacts" / "requests" / "classes-3" / "finetune"
    digest = save_model(folder / "model.safetensors", spec.build(seed=0), spec)
    report = {"forget_acc": forget_acc, "retain_acc": 0.99, "test_acc": 0.9, "test_retained_acc": 0.95, "mia": 0.1}
    write_json(folder / "report.json", {"report": report, "reference": REFERENCE})
    req = {"model_path": str(folder / "model.safetensors"), "report_path": str(folder / "report.json"),
           "sha256": digest, "report": report, "reference": REFERENCE, "verification": VERIFIED,
           "method": "finetune", "request_slug": "classes-3"}
    return publish.register(req, publish.gate(req, PARAMS), PARAMS, art, key=key)


def test_the_exported_model_has_a_tensor_signature(project):
    from mlflow.models import Model

    art, c = project
    reg = registered(art, forget_acc=0.0)
    publish.export_and_upload(NAME, reg["version"], PARAMS, art)
    folder = Path(c.download_artifacts(reg["run_id"], "model", str(art.root)))
    assert "signature" in yaml.safe_load((folder / "MLmodel").read_text())  # the file a reader opens
    signature = Model.load(str(folder)).signature
    [x] = signature.inputs.inputs
    [logits] = signature.outputs.inputs
    assert (str(x.type), x.shape) == ("float32", (-1, 1, 8, 8))
    assert (logits.name, str(logits.type), logits.shape) == ("logits", "float32", (-1, 10))


def test_a_passing_version_says_what_it_forgets_how_and_that_its_certificate_is_to_come(project):
    art, c = project
    reg = registered(art, forget_acc=0.0, key="r7")
    text = c.get_model_version(NAME, reg["version"]).description
    assert text.startswith("**Forgets** `classes-3` **with** `finetune` (registration key `r7`).")
    assert "**Verdict: passed**, all " in text and "gate checks." in text
    assert text.endswith(f"{registry.CERTIFICATE}: none yet; one is issued when a deletion request this version "
                         "answers closes, and its sha256 and location are then noted here.")


def test_a_failed_version_lists_each_failed_check_and_gets_no_certificate(project):
    art, c = project
    reg = registered(art, forget_acc=0.4)
    text = c.get_model_version(NAME, reg["version"]).description
    assert "**Verdict: failed**, 1 of " in text
    assert "\n- forget_acc: forget acc 0.4000 > 0.0500" in text
    assert text.endswith("never certified.")


def test_the_certificate_note_replaces_the_placeholder_once(project):
    art, c = project
    reg = registered(art, forget_acc=0.0, key="r7")
    issued = {"path": "artifacts/certificates/r7/certificate.json", "sha256": "c" * 64,
              "mlflow": f"runs:/{reg['run_id']}/certificate/certificate.json", "fingerprint": "SHA256:abc",
              "s3": ["s3://bucket/m/1/certificate.json", "s3://bucket/m/1/certificate.md"]}
    for _ in range(2):  # a close retried after the note was written: still one certificate paragraph
        registry.note_certificate(NAME, reg["version"], evidence.certificate_note("r7", issued), c)
    text = c.get_model_version(NAME, reg["version"]).description
    paragraphs = text.split("\n\n")
    assert paragraphs[0].startswith("**Forgets** `classes-3`") and paragraphs[1].startswith("**Verdict: passed**")
    assert len(paragraphs) == 3 and paragraphs[2] == (
        f"{registry.CERTIFICATE}: deletion request `r7` closed with a signed certificate, sha256 `{'c' * 64}`, kept "
        f"at `artifacts/certificates/r7/certificate.json` in the project, `runs:/{reg['run_id']}/certificate/"
        "certificate.json`, `s3://bucket/m/1/certificate.json` (signed by SHA256:abc); check it with "
        "`hyperforget request verify CERTIFICATE`.")
