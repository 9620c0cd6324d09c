"""Head-only fine-tuning: the deliberately weak control (Gao et al., arXiv 2604.08271).

Only the classifier head (`models.head_parameters`) is trained, with Adam, on D_r ∪ D_f where D_f
carries uniformly random wrong labels (as SalUn's random labelling). Every other parameter is frozen
and stays bit-identical to θ0, so the penultimate features still encode the forgotten classes: output
metrics call it forgotten, the linear probe and relearn time in `hyperforget.verify.verdict` should not.
Measured on digits class 3 (64→10→10 MLP, defaults): D_f accuracy 0.008-0.031, retained test accuracy
0.919-0.929; it relearns the class in 11-12 steps against 36-66 for retrains (fails the relearn gate)
and LiRA calls it 0.93-0.99; the probe does not separate it there (a retrain's features hold the class
too). On a width-4 CNN: 6 relearn steps against 34-112.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from hyperforget.base.progress import progress
from hyperforget.config.options import HeadFinetuneOptions
from hyperforget.models.nets import head_parameters
from hyperforget.models.train import batch_order
from hyperforget.unlearn.method import Timer, UnlearnInputs, UnlearnResult, working_copy
from hyperforget.unlearn.salun import relabelled_union


def run(inputs: UnlearnInputs, opts: HeadFinetuneOptions) -> UnlearnResult:
    model = working_copy(inputs.original)
    head = set(head_parameters(model))
    for name, p in model.named_parameters():
        p.requires_grad_(name in head)
    steps = 0
    with Timer() as timer:
        gen = torch.Generator().manual_seed(inputs.seed)
        x, y = relabelled_union(inputs, gen)
        opt = torch.optim.Adam([p for n, p in model.named_parameters() if n in head], lr=opts.lr)
        for _ in progress(range(opts.epochs), "head_finetune"):
            for idx in batch_order(len(y), opts.batch_size, gen):
                opt.zero_grad(set_to_none=True)
                F.cross_entropy(model(x[idx]), y[idx]).backward()
                opt.step()
                steps += 1
    model.requires_grad_(True)
    return UnlearnResult(model.eval(), "head_finetune", timer.seconds, steps, opts.model_dump(),
                         info={"trained_parameters": sorted(head)})
