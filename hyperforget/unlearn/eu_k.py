"""EU-k, exact unlearning of the last k layers (Goel et al., arXiv 2201.06640): the baseline DiHyFo must beat.

The last k parametric layers (`Classifier.stages`) are re-initialised from a seeded fresh model and trained
from scratch on the retained data D_r, while the first n − k stay θ0's, frozen. Why cached features: the
frozen part runs once over D_r and the k layers train on its output, so an epoch costs the small tail only.
The frozen layers did see D_f, which is what separates EU-k from a retrain (a probe on features the frozen
part computes can still read the class when k is small); k = n is a retrain. Recipe: the `train:` section's
optimiser idea (Adam, cosine to 0, per batch) with its own epochs, lr and batch size.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from hyperforget.base.errors import ConfigError
from hyperforget.base.progress import progress
from hyperforget.config.options import EUkOptions
from hyperforget.models.nets import INFERENCE_BATCH, run_stages
from hyperforget.models.train import batch_order
from hyperforget.unlearn.method import Timer, UnlearnInputs, UnlearnResult, working_copy

FRESH_SEED_OFFSET = 7000  # the re-initialised layers' seed: disjoint from θ0's, the retrains' and the zoo's


@torch.no_grad()
def _frozen(stages, x: torch.Tensor, batch_size: int = INFERENCE_BATCH) -> torch.Tensor:
    return torch.cat([run_stages(stages, x[start:start + batch_size]) for start in range(0, len(x), batch_size)])


def run(inputs: UnlearnInputs, opts: EUkOptions) -> UnlearnResult:
    model = working_copy(inputs.original)
    stages = model.stages()
    if opts.k > len(stages):
        raise ConfigError(f"eu_k.k = {opts.k}, but {type(model).__name__} has {len(stages)} layers "
                          f"({', '.join(n for n, _ in stages)}); choose 1..{len(stages)}")
    frozen, tail = stages[:-opts.k], stages[-opts.k:]
    names = {n for n, _ in tail}
    fresh = dict(inputs.spec.build(seed=inputs.seed + FRESH_SEED_OFFSET).named_parameters())
    trained = [p for n, p in model.named_parameters() if n.rsplit(".", 1)[0] in names]
    steps = 0
    with Timer() as timer:
        with torch.no_grad():
            for n, p in model.named_parameters():
                if n.rsplit(".", 1)[0] in names:
                    p.copy_(fresh[n])
        h, y = _frozen(frozen, inputs.x_retain), inputs.y_retain  # no graph: only the tail gets gradients
        gen = torch.Generator().manual_seed(inputs.seed)
        opt = torch.optim.Adam(trained, lr=opts.lr, weight_decay=opts.weight_decay)
        total = opts.epochs * -(-len(y) // opts.batch_size)
        sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 0.5 * (1 + math.cos(math.pi * min(s, total) / total)))
        model.train()
        for _ in progress(range(opts.epochs), f"eu_{opts.k}"):
            for idx in batch_order(len(y), opts.batch_size, gen):
                opt.zero_grad(set_to_none=True)
                F.cross_entropy(run_stages(tail, h[idx]), y[idx]).backward()
                opt.step()
                sched.step()
                steps += 1
    return UnlearnResult(model.eval(), "eu_k", timer.seconds, steps, opts.model_dump(),
                         info={"retrained_layers": [n for n, _ in tail], "frozen_layers": [n for n, _ in frozen]})
