"""A short fine-tune of DiHyFo's generated layers on the retained data (a repair after sampling, before the scale
match and the row refit; counted in DiHyFo's time).

Why: a sample is near a zoo row, not on a minimum of the retained loss. On MNIST-60k LeNet-5 with fc1–fc3
generated, DiHyFo-1's answer keeps 0.3–0.8 points less retained test accuracy than a true retrain, its worst class
up to 3 points less, while EU-3, which trains the same three layers from scratch on the same frozen features for 8
epochs, matches the retrain. The head refit (`unlearn/rows.py`) fits only the head to the sampled features (ten
times its steps leave the gap where it is), so the features are what to move: Adam steps of cross-entropy on D_r,
every generated layer at once. The cost is the generated layers' forward and backward on `steps` batches (under
partial generation on the zoo's cached frozen-part features, so no image runs through the convolutions). The forget
set is never shown; the row refit and the level matching that follow set its head row as they would without this
step, and the scale match runs after it, so the hidden layers still leave at θ0's activation scale.

Measured there (`bench/level_and_scale.py --tune-steps`, docs/results/mnist-lenet.md): 300 steps bring the retained
gap from 0.60 to 0.35 points, but the probe reads one class from the tuned features again and relearning slows as
the steps grow (1.18 → 1.94× the retrains' at 1000), so the answer looks less like a retrain: `tune_steps` is 0 by
default and in every config.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from hyperforget.models.nets import generated_layers


def tune_generated(model: nn.Module, x_retain: torch.Tensor, y_retain: torch.Tensor, steps: int, lr: float,
                   batch_size: int, seed: int, cut: str = "all") -> dict[str, object]:
    """Train `model`'s generated layers (`cut`; every layer with "all") in place for `steps` Adam steps of
    `batch_size` retained examples drawn with `seed`; every other parameter stays bit-identical. With a `cut`,
    `x_retain` is what the frozen part computes on D_r (the zoo's cached features). Returns what was done, with
    the mean retained loss of the first and last tenth of the steps."""
    if steps == 0:
        return {"applied": False}
    names = set(generated_layers(model, cut))
    # only the generated layers run on the cut's features, and only they are stepped: the rest get no gradient
    opt = torch.optim.Adam([p for n, p in model.named_parameters() if n.rsplit(".", 1)[0] in names], lr=lr)
    gen = torch.Generator().manual_seed(seed)
    losses = []
    model.eval()  # the target models have no dropout or batch norm: eval only fixes what a future one would do
    for _ in range(steps):
        idx = torch.randint(len(y_retain), (batch_size,), generator=gen)
        loss = F.cross_entropy(model(x_retain[idx], cut), y_retain[idx])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        losses.append(loss.item())
    tenth = max(1, steps // 10)
    return {"applied": True, "steps": steps, "lr": lr, "layers": sorted(names),
            "loss_first": sum(losses[:tenth]) / tenth, "loss_last": sum(losses[-tenth:]) / tenth}
