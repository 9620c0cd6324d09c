"""Gradient ascent on D_f (NegGrad) and ascent on D_f with descent on D_r (NegGrad+).

NegGrad alone has no stopping point (the loss on D_f is unbounded), so it runs a fixed, small number
of steps. NegGrad+ (as in Kurmanji et al.'s SCRUB baselines) mixes both losses,
(1 − w)·ℓ(B_r) − w·min(ℓ(B_f), cap): the cap stops pushing a forget batch once its loss is that of
data the model gets wrong with high confidence, so the retain term can repair what the ascent broke.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from hyperforget.base.progress import progress
from hyperforget.config.options import NegGradOptions, NegGradPlusOptions
from hyperforget.models.train import batch_order
from hyperforget.unlearn.method import Timer, UnlearnInputs, UnlearnResult, batch_stream, working_copy


def run(inputs: UnlearnInputs, opts: NegGradOptions) -> UnlearnResult:
    model = working_copy(inputs.original)
    x, y = inputs.x_forget, inputs.y_forget
    with Timer() as timer:
        gen = torch.Generator().manual_seed(inputs.seed)
        opt = torch.optim.Adam(model.parameters(), lr=opts.lr)
        forget = batch_stream(len(y), opts.batch_size, gen)
        for _ in progress(range(opts.steps), "neggrad"):
            idx = next(forget)
            opt.zero_grad(set_to_none=True)
            (-F.cross_entropy(model(x[idx]), y[idx])).backward()
            opt.step()
    return UnlearnResult(model.eval(), "neggrad", timer.seconds, opts.steps, opts.model_dump())


def run_plus(inputs: UnlearnInputs, opts: NegGradPlusOptions) -> UnlearnResult:
    model = working_copy(inputs.original)
    xf, yf, xr, yr = inputs.x_forget, inputs.y_forget, inputs.x_retain, inputs.y_retain
    w, steps = opts.forget_weight, 0
    with Timer() as timer:
        gen = torch.Generator().manual_seed(inputs.seed)
        opt = torch.optim.Adam(model.parameters(), lr=opts.lr)
        forget = batch_stream(len(yf), opts.batch_size, gen)
        for _ in progress(range(opts.epochs), "neggrad+"):
            for ridx in batch_order(len(yr), opts.batch_size, gen):
                fidx = next(forget)
                ascent = F.cross_entropy(model(xf[fidx]), yf[fidx]).clamp(max=opts.forget_loss_cap)
                loss = (1 - w) * F.cross_entropy(model(xr[ridx]), yr[ridx]) - w * ascent
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                steps += 1
    return UnlearnResult(model.eval(), "neggrad_plus", timer.seconds, steps, opts.model_dump())
