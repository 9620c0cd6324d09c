"""Fine-tuning on D_r only: forgetting by catastrophic forgetting, the weakest baseline.

As ∇τ's fine-tuning baseline: AdamW, lr decaying linearly to 0.1× over about 6 passes over D_r.
It never looks at D_f, so it can only lower forget accuracy slowly (or not at all for random subsets).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from hyperforget.base.progress import progress
from hyperforget.config.options import FinetuneOptions
from hyperforget.models.train import batch_order
from hyperforget.unlearn.method import Timer, UnlearnInputs, UnlearnResult, linear_lr, working_copy


def run(inputs: UnlearnInputs, opts: FinetuneOptions) -> UnlearnResult:
    model = working_copy(inputs.original)
    x, y = inputs.x_retain, inputs.y_retain
    steps = 0
    with Timer() as timer:
        gen = torch.Generator().manual_seed(inputs.seed)
        opt = torch.optim.AdamW(model.parameters(), lr=opts.lr)
        sched = linear_lr(opt, opts.epochs, opts.lr_end_factor)
        for _ in progress(range(opts.epochs), "finetune"):
            for idx in batch_order(len(y), opts.batch_size, gen):
                opt.zero_grad(set_to_none=True)
                F.cross_entropy(model(x[idx]), y[idx]).backward()
                opt.step()
                steps += 1
            sched.step()
    return UnlearnResult(model.eval(), "finetune", timer.seconds, steps, opts.model_dump())
