"""Retraining from scratch on D_r: the exact-unlearning reference every other method is judged against.

Every layer is freshly initialised (a head-only re-initialisation is not a retrain). Several seeds
train in one vmapped batch (`train.train_many`); one seed trains with the plain loop, which is what
a user retraining one model would run, so its wall time is the honest t_retrain for speed-ups.
Seeds are 1000 + inputs.seed + i: disjoint from the small seeds originals are trained with, so no
retrained model starts from the original's initialisation.
"""

from __future__ import annotations

from hyperforget.config.options import RetrainOptions
from hyperforget.config.params import TrainConfig
from hyperforget.models.train import train_many, train_model
from hyperforget.unlearn.method import Timer, UnlearnInputs, UnlearnResult

SEED_OFFSET = 1000


def run(inputs: UnlearnInputs, opts: RetrainOptions) -> UnlearnResult:
    cfg = TrainConfig(epochs=opts.epochs, batch_size=opts.batch_size, lr=opts.lr, weight_decay=opts.weight_decay,
                      schedule=opts.schedule)
    seeds = [SEED_OFFSET + inputs.seed + i for i in range(opts.seeds)]
    x, y = inputs.x_retain, inputs.y_retain
    with Timer() as timer:
        if len(seeds) == 1:
            model = inputs.spec.build(seed=seeds[0])
            train_model(model, x, y, cfg, seeds[0], desc="retrain")
            models = [model.eval()]
        else:
            models = train_many(inputs.spec, seeds, x, y, cfg, desc=f"retrain×{len(seeds)}")
    steps = opts.epochs * -(-len(y) // opts.batch_size)
    return UnlearnResult(models[0], "retrain", timer.seconds, steps, opts.model_dump(), models=models,
                         info={"seeds": seeds})
