"""A reference trained for the request (`evaluation.reference: per_request`, which a class set needs): summary
and models cached under the request folder (JSON + safetensors, one key), reused while what determines them is
unchanged, retrained when it changes; the cached models are what verification scores against. The reference pool
every other request reads: tests/unit/test_reference_pool.py."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from hyperforget.base.artifacts import Artifacts
from hyperforget.base.errors import IntegrityError
from hyperforget.base.io import read_json, tensor_metadata
from hyperforget.config.overlays import load_params
from hyperforget.pipeline import answer
from hyperforget.unlearn import run_method


@pytest.fixture(scope="module")
def project(make_project) -> Path:
    """A built digits project (tests/fixtures.py) answering with per-request references; its retrains take the
    reference recipe, `train:`."""
    return make_project("answer-project", evaluation={"reference": "per_request"}).parent


def test_reference_models_are_cached_as_safetensors_and_reused(project, monkeypatch):
    art, params = Artifacts(project), load_params(project / "params.yaml")
    ctx = answer.context(params, art)
    summary, models = answer.reference_models(params, art, ctx)
    path = art.reference_models("classes-3")
    assert path.exists() and path.suffix == ".safetensors" and not list(path.parent.glob("*.pkl"))
    meta = tensor_metadata(path)
    assert meta["key"] == read_json(art.reference("classes-3"))["key"] and int(meta["models"]) == 3 == len(models)
    ran = []
    monkeypatch.setattr(answer, "run_method", lambda *a, **k: ran.append(a) or run_method(*a, **k))
    again_summary, again = answer.reference_models(params, art, ctx)
    assert ran == [] and again_summary == summary  # served from the cache
    for a, b in zip(models, again, strict=True):
        assert all(torch.equal(p, q) for p, q in zip(a.state_dict().values(), b.state_dict().values(), strict=True))
    # verification options do not change the retrains: still cached; the recipe does: retrained
    answer.reference_models(params.model_copy(update={"evaluation": params.evaluation.model_copy(
        update={"verification": params.evaluation.verification.model_copy(update={"relearn_max_steps": 5})})}),
        art, ctx)
    assert ran == []
    answer.reference_models(params.model_copy(update={"train": params.train.model_copy(update={"epochs": 2})}),
                            art, ctx)
    assert len(ran) == 1


def test_a_reference_cache_without_its_models_is_rebuilt(project):
    art, params = Artifacts(project), load_params(project / "params.yaml")
    ctx = answer.context(params, art)
    answer.reference_models(params, art, ctx)
    art.reference_models("classes-3").unlink()  # a cache written before the models were cached
    _, models = answer.reference_models(params, art, ctx)
    assert len(models) == 3 and art.reference_models("classes-3").exists()


def test_a_damaged_reference_model_file_is_refused_with_the_fix(project):
    art, params = Artifacts(project), load_params(project / "params.yaml")
    ctx = answer.context(params, art)
    answer.reference_models(params, art, ctx)
    path = art.reference_models("classes-3")
    path.write_bytes(path.read_bytes()[:-16])
    with pytest.raises(IntegrityError, match="delete it and re-run"):
        answer.reference_models(params, art, ctx)
    path.unlink()
    assert len(answer.reference_models(params, art, ctx)[1]) == 3
