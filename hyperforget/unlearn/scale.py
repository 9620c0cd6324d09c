"""Scale matching: bring DiHyFo's generated hidden layers back to the activation scale of θ0's (a repair after
sampling, before the head refit; counted in DiHyFo's time).

Why: on MNIST-60k LeNet-5, DiHyFo-1's generated fc1 outputs 1.2–2.2× the L1 norm of θ0's on the retained data, and
its fc2, fed θ0-scale inputs, 1.2–1.4× more, while a true retrain (θ0's recipe) stays near θ0's scale
(`bench/level_and_scale.py`). An auditor's relearning check reads that scale. It fine-tunes with Adam, which moves
every weight by about its lr per step, so how fast a forgotten class's logit comes back grows with the size of the
activations feeding each weight (the head row's gain per step is about lr × the L1 norm of the penultimate
features). With the class's level matched to a retrain's, DiHyFo-1's answer relearnt it 2–3× faster than a retrain
on the classes where its features were largest.

So each generated hidden Linear layer (every generated layer but the head, in order) has its weights and bias
divided by one positive number, chosen so that the mean L1 norm of its output on a sample of the retained data
equals θ0's on the same sample (exact after the layers before it are rescaled; the layers are followed by ReLU,
which commutes with a positive scale). This is not a change of parametrisation that keeps the function: the head
is then refit on the rescaled features (`unlearn/rows.py`) as a retrain's head learns on its own, and the level is
matched after that. The target is θ0's scale, known at unlearning time; no retrain that judges the answer is read.
"""

from __future__ import annotations

import torch
from torch import nn

from hyperforget.models.nets import generated_hidden_stages

SAMPLE = 4096  # retained rows the scale is measured on: the mean L1 of a layer's output settles well before


def _l1(a: torch.Tensor) -> float:
    return float(a.flatten(1).abs().sum(1).mean())


@torch.no_grad()
def match_scale(model: nn.Module, reference: nn.Module, x: torch.Tensor, cut: str = "all") -> dict[str, object]:
    """Rescale `model`'s generated hidden Linear layers in place to `reference`'s (θ0's) activation scale on `x`
    (the input of the generated layers: images with the cut "all", else the frozen part's features, e.g. the zoo's
    cache); returns the divisor per layer. Layers that are not Linear (generated convolutions) and layers whose
    reference output is all zero are left as they are."""
    model.eval()
    reference.eval()
    stages, ref_stages = generated_hidden_stages(model, cut), generated_hidden_stages(reference, cut)
    h, h_ref, divided = x, x, {}
    for (name, fn), (_, ref_fn) in zip(stages, ref_stages, strict=True):
        layer, h_ref = getattr(model, name), ref_fn(h_ref)
        if isinstance(layer, nn.Linear):
            target, now = _l1(h_ref), _l1(fn(h))
            if target > 0 and now > 0:
                layer.weight /= now / target
                if layer.bias is not None:
                    layer.bias /= now / target
                divided[name] = now / target
        h = fn(h)
    return {"applied": True, "divided_by": divided, "rows": len(x)}
