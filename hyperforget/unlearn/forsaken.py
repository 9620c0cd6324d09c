"""Forsaken-style neuron masking (Ma et al. 2021), to our specification in papers.md.

Repeat: score every hidden neuron (an MLP unit, a conv channel) by how much more D_f than D_r drives
it — accumulated |∂loss/∂w| over its outgoing weights, D_f mean over D_r mean — multiply the outgoing
weights of the top unmasked neuron by `mask_factor`, optionally repair with a few Adam steps on D_r,
and re-measure the forgetting rate with one fixed attack. Stop at the target rate, when retain
accuracy would drop by more than the margin (that last step is undone), or at the neuron budget.

Choices where the paper is silent: the fixed attack is `metrics.MembershipAttack` fitted on the
original model's D_r (members) against D_v (unseen; the test split stays out of the method); each
neuron is masked at most once; masked weights are frozen at their masked value, restored after every
optimiser step, so neither Adam's momentum nor any decay can move them.
"""

from __future__ import annotations

import copy
import itertools
import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from hyperforget.config.options import ForsakenOptions
from hyperforget.models.metrics import MembershipAttack, accuracy, attack_features, forgetting_rate
from hyperforget.models.nets import predict
from hyperforget.unlearn.method import Timer, UnlearnInputs, UnlearnResult, batch_stream, working_copy

Neuron = tuple[str, int, slice]  # (outgoing weight's parameter name, neuron index, its input columns)


def neurons(model: nn.Module) -> list[Neuron]:
    """Hidden neurons and where their outgoing weights sit: column k of the next layer (k·s … for a
    conv layer feeding a linear one through a flatten of [C, H, W])."""
    layers = [(n, m) for n, m in model.named_modules() if isinstance(m, nn.Linear | nn.Conv2d)]
    out = []
    for (_, layer), (next_name, nxt) in itertools.pairwise(layers):
        units = layer.out_features if isinstance(layer, nn.Linear) else layer.out_channels
        fan = (nxt.in_features if isinstance(nxt, nn.Linear) else nxt.in_channels) // units
        out += [(f"{next_name}.weight", k, slice(k * fan, (k + 1) * fan)) for k in range(units)]
    return out


def importance(model: nn.Module, x: torch.Tensor, y: torch.Tensor, groups: list[Neuron],
               batch_size: int) -> torch.Tensor:
    """Mean over batches of Σ|grad| over each neuron's outgoing weights."""
    params = dict(model.named_parameters())
    total = torch.zeros(len(groups))
    batches = torch.arange(len(y)).split(batch_size)
    for idx in batches:
        model.zero_grad(set_to_none=True)
        F.cross_entropy(model(x[idx]), y[idx]).backward()
        total += torch.stack([params[name].grad[:, cols].abs().sum() for name, _, cols in groups])
    model.zero_grad(set_to_none=True)
    return total / len(batches)


def _members(attack: MembershipAttack, model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> np.ndarray:
    return attack.is_member(attack_features(predict(model, x), y))


def run(inputs: UnlearnInputs, opts: ForsakenOptions) -> UnlearnResult:
    model = working_copy(inputs.original)
    xf, yf, xr, yr = inputs.x_forget, inputs.y_forget, inputs.x_retain, inputs.y_retain
    params = dict(model.named_parameters())
    frozen = {n: torch.zeros_like(p, dtype=torch.bool) for n, p in params.items()}
    masked: list[tuple[str, int]] = []
    steps, stop = 0, "neuron budget"
    with Timer() as timer:
        orig = inputs.original
        attack = MembershipAttack.fit(attack_features(predict(orig, xr), yr),
                                      attack_features(predict(orig, inputs.data.x_val), inputs.data.y_val), inputs.seed)
        before = _members(attack, orig, xf, yf)
        base_acc = accuracy(predict(orig, xr), yr)
        groups = neurons(model)
        budget = max(1, math.floor(opts.max_neurons * len(groups)))
        gen = torch.Generator().manual_seed(inputs.seed)
        retain = batch_stream(len(yr), opts.batch_size, gen)
        opt = torch.optim.Adam(model.parameters(), lr=opts.lr)
        rate = forgetting_rate(before, _members(attack, model, xf, yf))["forgetting_rate"]
        while len(masked) < budget:
            if math.isnan(rate):
                stop = "no D_f sample is a member for the fixed attack: nothing to forget"
                break
            if rate >= opts.target_rate:
                stop = "target reached"
                break
            ratio = importance(model, xf, yf, groups, opts.batch_size) / (
                importance(model, xr, yr, groups, opts.batch_size) + 1e-12)
            ratio[[i for i, (n, k, _) in enumerate(groups) if (n, k) in masked]] = -math.inf
            name, k, cols = groups[int(ratio.argmax())]
            saved = copy.deepcopy((model.state_dict(), opt.state_dict(), frozen))
            with torch.no_grad():
                params[name][:, cols] *= opts.mask_factor
                frozen[name][:, cols] = True
                values = {n: p.detach().clone() for n, p in params.items()}
            for _ in range(opts.repair_steps):
                idx = next(retain)
                opt.zero_grad(set_to_none=True)
                F.cross_entropy(model(xr[idx]), yr[idx]).backward()
                opt.step()
                enforce(params, frozen, values)
            if base_acc - accuracy(predict(model, xr), yr) > opts.max_retain_drop:
                model.load_state_dict(saved[0])
                opt.load_state_dict(saved[1])
                frozen = saved[2]
                stop = "retain margin"
                break
            masked.append((name, k))
            steps += 1 + opts.repair_steps
            rate = forgetting_rate(before, _members(attack, model, xf, yf))["forgetting_rate"]
        else:
            stop = "target reached" if rate >= opts.target_rate else stop
    info = {"masked_neurons": [f"{n}[:, {k}]" for n, k in masked], "stop": stop, "forgetting_rate_fixed_attack": rate,
            "frozen_weights": int(sum(int(f.sum()) for f in frozen.values()))}
    return UnlearnResult(model.eval(), "forsaken", timer.seconds, steps, opts.model_dump(), info=info)


@torch.no_grad()
def enforce(params: dict[str, nn.Parameter], frozen: dict[str, torch.Tensor], values: dict[str, torch.Tensor]) -> None:
    """Put every masked weight back to its masked value (called after each optimiser step)."""
    for n, p in params.items():
        p[frozen[n]] = values[n][frozen[n]]
