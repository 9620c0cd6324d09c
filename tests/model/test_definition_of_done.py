"""DiHyFo's definition of done on digits, with the shipped zoo and hypernetwork settings (params.yaml, what
`make run` builds): forget each of classes 3, 5 and 8 like a retrain would. Its own module, so that the
longest model test runs beside the others on a second worker."""

from __future__ import annotations

import pytest

from hyperforget.base.artifacts import Artifacts
from hyperforget.config.overlays import load_params
from hyperforget.config.params import ForgetConfig
from hyperforget.data.datasets import forget_split
from hyperforget.hypernet.diffusion import train_hypernet
from hyperforget.models.metrics import accuracy
from hyperforget.models.nets import predict
from hyperforget.unlearn import run_method
from hyperforget.unlearn.method import UnlearnInputs
from hyperforget.zoo.build import build_zoo
from hyperforget.zoo.shards import load_zoo
from tests.recipes import ORIGINAL_RECIPE, ROOT


@pytest.mark.slow
def test_definition_of_done_on_digits(tmp_path, original_mlp, digits_spec, digits):
    """The shipped zoo and hypernetwork settings (params.yaml, `make run` on digits): DiHyFo-2 forgets each of
    classes 3, 5 and 8 (forget acc ≤ 5%) with retained test accuracy within 5 points of a 3-seed retrain's."""
    shipped = load_params(ROOT / "params.yaml")
    assert shipped.train == ORIGINAL_RECIPE.model_copy(update={"seed": shipped.train.seed})  # θ0 is make run's θ0
    art = Artifacts(tmp_path)
    build_zoo(original_mlp, digits_spec, digits, shipped.zoo, ORIGINAL_RECIPE, art.zoo, progress=False)
    zoo, _ = load_zoo(art.zoo)
    hypernet = shipped.hypernet.model_copy(update={"variant": "dihyfo2", "device": "cpu"})
    train_hypernet(zoo, hypernet, art.hypernet("dihyfo2"), progress=False)
    retrain = {"seeds": 3, **ORIGINAL_RECIPE.model_dump(include={"epochs", "batch_size", "lr"})}
    for c in (3, 5, 8):
        split = forget_split(digits, ForgetConfig(classes=[c]))
        inputs = UnlearnInputs(original_mlp, digits_spec, digits, split, seed=0, artifacts=art)
        result = run_method("dihyfo2", inputs)
        retrains = run_method("retrain", inputs, retrain).models
        kept = digits.y_test != c

        def retained_test_acc(model, kept=kept):
            return accuracy(predict(model, digits.x_test[kept]), digits.y_test[kept])

        forget_acc = accuracy(predict(result.model, inputs.x_forget), inputs.y_forget)
        reference = sum(retained_test_acc(m) for m in retrains) / len(retrains)
        assert forget_acc <= 0.05, f"class {c}: forget acc {forget_acc:.3f}"
        assert retained_test_acc(result.model) >= reference - 0.05, f"class {c}: {result.info}"
