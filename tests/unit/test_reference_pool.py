"""The reference pool (issue #22, `hyperforget.verify.pool`): built once per (data, θ0, recipe) and read by every
request. It is named by one sha256, rebuilt only where a unit's file does not verify and byte-identical when built
again; its membership shadows split the training set in complementary halves; answering a request trains no
reference model; a missing, stale or damaged pool is refused naming the fix; a class set asks for a per-request
reference; a closed request's certificate names the pool; a verdict θ0 passes too has no power. The projects are
built ones (tests/fixtures.py: digits, θ0 and a pool of 3 retrains per class and 6 shadows)."""

from __future__ import annotations

import contextlib
import re
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from hyperforget.base.artifacts import Artifacts
from hyperforget.base.errors import ConfigError, GateFailed, IntegrityError
from hyperforget.base.io import read_json, sha256_file
from hyperforget.cli import app
from hyperforget.config.overlays import load_params
from hyperforget.config.params import ForgetConfig, GatesConfig, Params, PoolConfig
from hyperforget.data.datasets import load_dataset
from hyperforget.erasure import deletion, project_ledger
from hyperforget.models import train as train_mod
from hyperforget.models.metrics import summarise
from hyperforget.models.nets import ModelSpec, load_model, predict, save_model
from hyperforget.pipeline import answer, stages
from hyperforget.publish import release
from hyperforget.unlearn import retrain as retrain_mod
from hyperforget.verify import pool as pool_mod
from hyperforget.verify.gates import check_gates, power_check
from hyperforget.verify.verdict import verify
from tests.recipes import PROJECT_POOL

# a record set of the built project whose approximate answer (gradtau) θ0 matches under the pool's test: no power,
# answered exactly. Which way the record goes is read from the ledger; this set takes the fallback path.
RECORDS = [532, 572, 604, 664, 698]


def _open(path: Path) -> tuple[Params, Artifacts]:
    return load_params(path), Artifacts(path.parent)


def _with(params: Params, section: str, **changes) -> Params:
    return params.model_copy(update={section: getattr(params, section).model_copy(update=changes)})


@pytest.fixture(scope="module")
def built(make_project) -> tuple[Params, Artifacts]:
    """A built project (its pool copied from the template); read-only for the tests that share it."""
    return _open(make_project("pool-project"))


@pytest.fixture
def own(make_project, request) -> tuple[Params, Artifacts]:
    """A built project of the test's own, to change or damage."""
    return _open(make_project(request.node.name[:40]))


@pytest.fixture
def trainings(monkeypatch) -> list[str]:
    """Every model trained from scratch while the test runs (the desc of each call): `train_many_params` is
    where every vmapped batch trains (the pool's units, multi-seed retrains, per-request references) and
    `train_model` the plain loop (a one-seed retrain; imported by name into hyperforget.unlearn.retrain)."""
    calls: list[str] = []
    many, one = train_mod.train_many_params, train_mod.train_model

    def counted_many(*args, **kwargs):
        calls.append(str(kwargs.get("desc", args[5] if len(args) > 5 else "train×N")))
        return many(*args, **kwargs)

    def counted_one(*args, **kwargs):
        calls.append(str(kwargs.get("desc", "train")))
        return one(*args, **kwargs)

    monkeypatch.setattr(train_mod, "train_many_params", counted_many)
    monkeypatch.setattr(train_mod, "train_model", counted_one)
    monkeypatch.setattr(retrain_mod, "train_model", counted_one)
    return calls


def _files(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir()) if p.is_file()}


# ---------- building ----------


def test_the_pool_is_named_by_its_index_rebuilt_only_where_a_unit_fails_to_verify_and_deterministic(
        own, tmp_path, trainings):
    params, art = own
    index = read_json(art.pool / pool_mod.POOL_JSON)
    assert {f: sha256_file(art.pool / f) for f in index["files"]} == index["files"]
    assert len(index["files"]) == 10 + 1  # a unit per class, one chunk of 6 shadows
    before = _files(art.pool)
    cost = read_json(art.timing("pool"))

    again = stages.pool(params, art)  # every unit verifies: nothing is trained, nothing changes
    assert again["built_units"] == 0 and not trainings
    assert again["sha256"] == sha256_file(art.pool / pool_mod.POOL_JSON) and _files(art.pool) == before
    assert read_json(art.timing("pool")) == cost  # what the pool cost to build, not this run's second

    damaged = art.pool / "class-007.safetensors"
    damaged.write_bytes(damaged.read_bytes()[:-1] + b"\0")
    assert stages.pool(params, art)["built_units"] == 1 and trainings == ["pool class 7"]
    assert _files(art.pool) == before  # the one unit trained again, to the same bytes

    key = pool_mod.project_key(art, params)
    fresh = pool_mod.build(tmp_path / "fresh", key, load_dataset(art.prepare), ModelSpec.from_metadata(key["spec"]),
                           params.train, params.pool)
    assert fresh["built_units"] == 11 and fresh["sha256"] == again["sha256"]
    assert _files(tmp_path / "fresh") == before  # byte-identical, every unit and the index


def test_membership_shadows_come_in_complementary_halves(built):
    params, art = built
    pool = pool_mod.load_current(art, params)
    models, seen, _, _ = pool.shadows()
    n_train = len(load_dataset(art.prepare).y_train)
    assert len(models) == seen.shape[0] == PROJECT_POOL["shadows"] and seen.shape[1] == n_train
    for a, b in zip(seen[0::2], seen[1::2], strict=True):  # each pair splits the records between them
        assert not (a & b).any() and int((a | b).sum()) == 2 * (n_train // 2)
        assert int(a.sum()) == int(b.sum()) == n_train // 2
    if n_train % 2 == 0:
        assert (seen.sum(0) == len(models) // 2).all()
    rows = pool_mod.shadow_rows(100, PoolConfig(shadows=8))  # an even training set: every record seen by half
    member = torch.zeros(8, 100, dtype=torch.bool).scatter_(1, rows, True)
    assert (member.sum(0) == 4).all() and (member[0::2] ^ member[1::2]).all()


def test_the_shadows_keep_their_logits_and_a_record_verdict_read_from_them_equals_running_the_shadows(built,
                                                                                                      tmp_path):
    params, art = built
    pool = pool_mod.load_current(art, params)
    models, _, train_logits, test_logits = pool.shadows()
    data = load_dataset(art.prepare)
    assert torch.equal(train_logits, torch.stack([predict(m, data.x_train) for m in models]))
    assert torch.equal(test_logits, torch.stack([predict(m, data.x_test) for m in models]))
    ids = tmp_path / "ids.txt"
    ids.write_text("".join(f"{i}\n" for i in RECORDS))
    p = params.model_copy(update={"forget": ForgetConfig(samples=str(ids))})
    ctx = answer.context(p, art)
    ref = answer.resolve_reference(p, art, ctx)
    assert ref.shadow_logits is not None
    cfg = p.evaluation.verification
    read = verify(ctx.original, ref.shadows, None, ctx.data, ctx.split, cfg, seen=ref.seen,
                  shadow_logits=ref.shadow_logits)
    run = verify(ctx.original, ref.shadows, None, ctx.data, ctx.split, cfg, seen=ref.seen)
    assert read == run


# ---------- answering reads it and trains no reference ----------


def test_a_class_request_trains_no_reference_model(built, trainings):
    params, art = built
    out = answer.answer(params, art, "gradtau")  # its verdict is not this test's business
    assert trainings == []
    source = out.request["reference_source"]
    assert source["kind"] == "pool" and source["sha256"] == sha256_file(art.pool / pool_mod.POOL_JSON)
    assert set(source["files"]) == {"class-003.safetensors"}
    assert read_json(Path(out.request["report_path"]))["reference_source"] == source


def test_the_reference_is_verified_once_per_request_and_again_when_what_it_rests_on_changes(own, monkeypatch):
    params, art = own
    judged: list[object] = []
    real = answer.verify
    monkeypatch.setattr(answer, "verify", lambda model, *a, **k: judged.append(model) or real(model, *a, **k))
    first = answer.unlearn(params, art, "gradtau")
    assert len(judged) == 2  # θ0 (measuring the reference's probe and relearn numbers), then the answer
    second = answer.unlearn(params, art, "finetune")
    assert len(judged) == 3  # the answer alone: the reference's numbers and θ0's verdict read from the request
    assert second["verification"]["reference"] == first["verification"]["reference"]
    assert second["power"] == first["power"]
    shorter = params.evaluation.verification.model_copy(update={"relearn_max_steps": 50})
    answer.unlearn(_with(params, "evaluation", verification=shorter), art, "gradtau")
    assert len(judged) == 5  # another relearn budget: measured again


def test_the_pool_command_measures_each_class_reference_once_and_a_request_only_reads_it(own, monkeypatch,
                                                                                       trainings):
    """`hyperforget pool` (and the build flow) measure what a class request reads beside the pool's models: the
    output reference of its retrains, θ0's metrics and its verification. A request then scores no pool model
    and no θ0 of its own, and reads the very numbers it would have measured."""
    params, art = own
    result = CliRunner().invoke(app, ["pool", "--params", str(art.root / "params.yaml")])
    assert result.exit_code == 0 and "class references: 10 classes measured" in result.output, result.output
    for c in range(10):
        slug = _with(params, "forget", classes=[c]).forget.slug()
        assert art.pool_reference(slug).exists() and art.verification_reference(slug).exists()
    scored, real, scores = [], answer.Evaluator.report, answer.Evaluator.report_logits
    monkeypatch.setattr(answer.Evaluator, "report_logits", lambda self, *lg: scored.append(lg) or scores(self, *lg))
    judged, verify = [], answer.verify
    monkeypatch.setattr(answer, "verify", lambda model, *a, **k: judged.append(model) or verify(model, *a, **k))
    ctx = answer.context(params, art)
    out = answer.unlearn(params, art, "gradtau")
    assert len(scored) == 1 and len(judged) == 1  # the answer's own report and verification, nothing else
    models = pool_mod.load_current(art, params).class_models(params.forget.classes[0])
    assert out["reference"] == summarise([real(ctx.evaluator, m) for m in models])  # what it would have measured
    assert answer.resolve_reference(params, art, ctx).original_report == real(ctx.evaluator, ctx.original)
    answer.warm_pool_references(_with(params, "evaluation", reference="per_request"), art)
    assert trainings == []  # the pool's references whatever the project answers with: no per-request retrains


def test_a_record_request_trains_no_reference_model_only_its_exact_answer_when_unpowered(own, trainings,
                                                                                          monkeypatch):
    """Its power is measured first: where θ0 passes the same test, the approximate method is never run."""
    params, art = own
    ran, real = [], answer.run_method
    monkeypatch.setattr(answer, "run_method", lambda name, *a, **k: ran.append(name) or real(name, *a, **k))
    deletion.submit(params, art, samples=RECORDS, requester="dpo", request_id="rec")
    with contextlib.suppress(GateFailed):  # the trainings are this test's business, not the verdict
        deletion.process(params, art, "rec", method="gradtau")
    with project_ledger.opened(params, art, None) as led:
        unlearned = project_ledger.details(led, "rec")["unlearned"]
    assert unlearned["reference_source"]["kind"] == "pool"
    assert set(unlearned["reference_source"]["files"]) == {"shadows-000-006.safetensors"}
    fallback = unlearned["fallback"]
    assert fallback["from"] == "gradtau" and fallback["reason"].startswith("no power")  # θ0 passes this set's test
    assert unlearned["method"] == "retrain" and not unlearned["power"]["has_power"]
    assert ran == ["retrain"] and trainings == ["retrain"]  # the exact answer itself, one seed; no ∇τ


def test_a_single_record_is_judged_by_the_shadows_that_never_saw_it(built, tmp_path):
    """Half the shadows saw the record: they are no retrain without it and are left out of its reference; the
    out shadows' score is then moved by how much better full-data θ0 does than they do on unseen data."""
    params, art = built
    ids = tmp_path / "one.txt"
    ids.write_text("5\n")
    one = _with(params, "forget", classes=None, samples=str(ids))
    ctx = answer.context(one, art)
    ref = answer.resolve_reference(one, art, ctx)
    assert ref.held_out is None and ref.seen.shape == (PROJECT_POOL["shadows"], 1)
    out = [m for m, saw in zip(ref.shadows, ref.seen[:, 0], strict=True) if not saw]
    assert len(out) == PROJECT_POOL["shadows"] // 2
    x, y = ctx.data.x_train[[5]], ctx.data.y_train[[5]]
    with torch.no_grad():
        right = [float(m(x).argmax(1).item() == y.item()) for m in out]
    shift = ref.summary["full_data_shift_forget_acc"]["mean"]
    assert ref.summary["forget_acc"]["mean"] == pytest.approx(sum(right) / len(out) + shift)


# ---------- refused: missing, stale, damaged; a class set ----------


def test_a_missing_pool_is_refused_naming_the_command_that_builds_it(own, trainings):
    params, art = own
    art.pool.rename(art.pool.with_name("elsewhere"))
    with pytest.raises(ConfigError, match="`hyperforget pool`") as e:
        answer.unlearn(params, art, "gradtau")
    assert "evaluation.reference=per_request" in str(e.value) and trainings == []


def test_a_stale_pool_is_refused_naming_what_changed(own, trainings):
    params, art = own
    with pytest.raises(ConfigError, match="stale: the train: recipe changed") as e:
        answer.unlearn(_with(params, "train", epochs=params.train.epochs + 1), art, "gradtau")
    assert "`hyperforget pool`" in str(e.value)
    with pytest.raises(ConfigError, match="stale: the pool: settings changed"):
        answer.unlearn(_with(params, "pool", shadows=8), art, "gradtau")
    model, spec = load_model(art.model)
    with torch.no_grad():
        next(model.parameters()).add_(1e-3)
    save_model(art.model, model, spec)  # θ0 trained again (here: changed in place)
    with pytest.raises(ConfigError, match=r"stale: θ0 \(retrained\) changed"):
        answer.unlearn(params, art, "gradtau")
    assert trainings == []


def test_a_damaged_pool_file_is_refused_naming_the_file(own):
    params, art = own
    unit = art.pool / "class-003.safetensors"
    data = bytearray(unit.read_bytes())
    data[-1] ^= 0xFF
    unit.write_bytes(bytes(data))
    with pytest.raises(IntegrityError, match=r"class-003\.safetensors"):
        answer.unlearn(params, art, "gradtau")


def test_a_class_set_needs_a_per_request_reference_and_says_so(built, trainings):
    params, art = built
    pair = _with(params, "forget", classes=[3, 5])
    with pytest.raises(ConfigError, match=r"evaluation\.reference=per_request"):
        answer.unlearn(pair, art, "gradtau")
    assert trainings == []
    out = answer.unlearn(_with(pair, "evaluation", reference="per_request"), art, "gradtau")
    assert out["reference_source"]["kind"] == "per_request" and out["reference_source"]["retrains"] == 3
    assert len(trainings) == 1  # its 3 retrains, one vmapped batch


def test_the_cli_answers_a_class_set_with_the_very_setting_its_refusal_names(own):
    """`request process` refuses a class set against the pool, naming the `--set` that asks for a reference of its
    own; given that flag, the same command answers and closes it (the command once lacked `--set` altogether)."""
    params, art = own

    def cli(*args: str):
        return CliRunner().invoke(app, [*args, "--params", str(art.root / "params.yaml")], terminal_width=200)

    assert cli("request", "submit", "--classes", "3,5", "--id", "set-35").exit_code == 0
    refused = cli("request", "process", "set-35", "--method", "retrain")
    assert refused.exit_code == 1 and isinstance(refused.exception, ConfigError), refused.output
    flag = re.search(r"`(--set [^`]+)`", str(refused.exception)).group(1).split()
    assert flag == ["--set", "evaluation.reference=per_request"]
    answered = cli("request", "process", "set-35", "--method", "retrain", *flag)
    assert answered.exit_code == 0, answered.output
    with project_ledger.opened(params, art, None) as led:
        assert led.get("set-35").state == "closed"
        assert project_ledger.details(led, "set-35")["unlearned"]["reference_source"]["kind"] == "per_request"


# ---------- the certificate names it ----------


def test_the_certificate_of_a_closed_request_names_the_pool(own):
    params, art = own
    deletion.submit(params, art, classes=[3], requester="dpo", request_id="cls")
    out = deletion.process(params, art, "cls", method="retrain")  # passes every gate here
    assert out.state == "closed"
    cert = art.root / out.certificate["path"]
    pool_sha = sha256_file(art.pool / pool_mod.POOL_JSON)
    source = read_json(cert)["gates"]["reference_source"]
    assert source["kind"] == "pool" and source["sha256"] == pool_sha
    assert f"sha256 `{pool_sha}`" in cert.with_suffix(".md").read_text()


# ---------- power ----------

GATES = GatesConfig(max_forget_acc=0.05, max_retain_drop=0.05, max_mia=0.5)
REFERENCE = {"test_retained_acc": {"mean": 0.95, "std": 0.01}, "forget_acc": {"mean": 0.0, "std": 0.0},
             "mia": {"mean": 0.0, "std": 0.0}}
REPORT = {"forget_acc": 0.0, "test_retained_acc": 0.94, "mia": 0.1}
UNPOWERED = {"original_fails": [], "has_power": False}
POWERED = {"original_fails": ["forget_acc", "lira_auc"], "has_power": True}


def test_a_verdict_theta0_passes_too_has_no_power_unless_the_method_is_exact():
    check = power_check(UNPOWERED, exact=False)
    assert not check["passed"] and check["detail"].startswith("no power") and "retrain" in check["detail"]
    assert power_check(UNPOWERED, exact=True)["passed"]  # certified by construction
    powered = power_check(POWERED, exact=False)
    assert powered["passed"] and "forget_acc, lira_auc" in powered["detail"]

    g = check_gates(REPORT, REFERENCE, GATES, power=UNPOWERED)
    assert not g.passed and g.reasons == [f"power: {check['detail']}"]  # every other gate passed
    assert check_gates(REPORT, REFERENCE, GATES, power=POWERED).passed
    assert "power" not in check_gates(REPORT, REFERENCE, GATES).checks  # no power measured, no check

    result = {"report": REPORT, "reference": REFERENCE, "verification": None, "power": UNPOWERED}
    assert release.gate(result | {"method": "retrain"}, Params()).checks["power"]["passed"]
    assert not release.gate(result | {"method": "gradtau"}, Params()).checks["power"]["passed"]
