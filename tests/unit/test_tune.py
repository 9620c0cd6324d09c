"""The fine-tune repair (hyperforget/unlearn/tune.py): DiHyFo's generated layers train a few steps on the retained
data; the frozen part never moves, the forget set is never read, and zero steps is no repair at all."""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F

from hyperforget.unlearn.tune import tune_generated


def _retained(digits, forget: int = 3):
    keep = digits.y_train != forget
    return digits.x_train[keep], digits.y_train[keep]


def test_a_perturbed_answer_regains_retained_loss_and_the_frozen_layers_stay_theta0s(original_mlp, digits):
    """θ0 with noise on its generated head (as a sample sits near, not on, a zoo endpoint): 100 steps lower the
    retained loss, and the frozen hidden layer is bit-identical afterwards."""
    answer = copy.deepcopy(original_mlp)
    with torch.no_grad():
        answer.fc2.weight += 0.5 * torch.randn(answer.fc2.weight.shape, generator=torch.Generator().manual_seed(0))
    x, y = _retained(digits)
    with torch.no_grad():
        h = answer.frozen_features(x, "head")
        before = F.cross_entropy(answer(h, "head"), y).item()
    frozen = {k: v.clone() for k, v in answer.state_dict().items() if not k.startswith("fc2")}
    info = tune_generated(answer, h, y, steps=100, lr=1e-2, batch_size=64, seed=0, cut="head")
    with torch.no_grad():
        after = F.cross_entropy(answer(h, "head"), y).item()
    assert info["applied"] and info["layers"] == ["fc2"]
    assert after < 0.5 * before
    assert info["loss_last"] < info["loss_first"]
    assert all(torch.equal(answer.state_dict()[k], v) for k, v in frozen.items())
    assert all(p.requires_grad for p in answer.parameters())  # left as it was found


def test_the_same_seed_gives_the_same_model_and_zero_steps_changes_nothing(original_mlp, digits):
    x, y = _retained(digits)
    a, b, c = (copy.deepcopy(original_mlp) for _ in range(3))
    for m in (a, b):
        tune_generated(m, x, y, steps=20, lr=1e-3, batch_size=32, seed=5)
    assert all(torch.equal(pa, pb) for pa, pb in zip(a.parameters(), b.parameters(), strict=True))
    assert not all(torch.equal(pa, p0) for pa, p0 in zip(a.parameters(), original_mlp.parameters(), strict=True))
    assert tune_generated(c, x, y, steps=0, lr=1e-3, batch_size=32, seed=5) == {"applied": False}
    assert all(torch.equal(pc, p0) for pc, p0 in zip(c.parameters(), original_mlp.parameters(), strict=True))
