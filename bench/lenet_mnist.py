"""LeNet-5 on the full MNIST (60k/10k): θ0's test accuracy and training time, and one full retrain seed's wall time.

    python bench/lenet_mnist.py [--params configs/mnist-lenet.yaml] [--source DIR] [--epochs N] [--threads 2]
                                [--forget 3] [--set KEY=VALUE ...]

Data, model and recipe come from the experiment file (default configs/mnist-lenet.yaml, as `make run-mnist`:
Adam 1e-3, cosine to 0, batch 128, 12 epochs; --source and --epochs replace its data.source and train.epochs);
θ0 trains on the 54k training images (6k carved off as validation), the retrain on D_r (every image of the
other classes), every layer freshly initialised (seed 1000, as `unlearn.retrain`), with the plain loop a user would run.
"""

from __future__ import annotations

import argparse
import tempfile
import time

import torch
from _common import CONFIGS, experiment_raw

from hyperforget.config.overlays import parse_overrides, parse_params
from hyperforget.config.params import ForgetConfig
from hyperforget.data.datasets import forget_split, prepare
from hyperforget.data.readers import import_raw
from hyperforget.models.metrics import accuracy, per_class_accuracy
from hyperforget.models.nets import ModelSpec, num_params, param_layout, predict
from hyperforget.models.train import train_model
from hyperforget.pipeline.compare import machine
from hyperforget.unlearn.retrain import SEED_OFFSET


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--params", default=str(CONFIGS / "mnist-lenet.yaml"), help="experiment file")
    ap.add_argument("--source", default=None, help="folder of the MNIST files (default: the experiment's data.source)")
    ap.add_argument("--epochs", type=int, default=None, help="default: the experiment's train.epochs")
    ap.add_argument("--set", action="append", default=[], help="param override KEY=VALUE (YAML value)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--forget", type=int, default=3, help="class removed for the retrain")
    ap.add_argument("--no-retrain", action="store_true")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    overrides = {**parse_overrides(args.set), "data.raw_dir": tempfile.mkdtemp(prefix="lenet-mnist-"),
                 **({"train.epochs": args.epochs} if args.epochs else {})}
    params = parse_params(experiment_raw(args.params, args.source, overrides), f"{args.params} + bench options")
    cfg, recipe = params.data, params.train
    import_raw(cfg)
    data = prepare(cfg)
    spec = ModelSpec(params.model.arch, data.input_shape, data.num_classes, params.model.width)
    mach = machine()
    print(f"MNIST {len(data.y_train)}/{len(data.y_val)}/{len(data.y_test)}, LeNet-5 "
          f"{num_params(param_layout(spec.build()))} parameters, {recipe.model_dump()}; {mach['cpu']}, "
          f"{mach['cores']} cores, torch {mach['torch']} ({torch.get_num_threads()} threads)", flush=True)
    model = spec.build(seed=0)
    t0 = time.perf_counter()
    hist = train_model(model, data.x_train, data.y_train, recipe, 0, data.x_val, data.y_val, desc="θ0")
    t_train = time.perf_counter() - t0
    logits = predict(model, data.x_test)
    print(f"θ0: {t_train:.1f} s ({t_train / recipe.epochs:.1f} s/epoch), val acc per epoch "
          f"{[round(a, 4) for a in hist['val_acc']]}, test acc {accuracy(logits, data.y_test):.4f}, per class "
          f"{[round(a, 3) for a in per_class_accuracy(logits, data.y_test, 10)]}", flush=True)
    if args.no_retrain:
        return
    split = forget_split(data, ForgetConfig(classes=[args.forget]))
    xr, yr = data.x_train[split.retain_idx], data.y_train[split.retain_idx]
    retrained = spec.build(seed=SEED_OFFSET)
    t0 = time.perf_counter()
    train_model(retrained, xr, yr, recipe, SEED_OFFSET, desc="retrain")
    t_retrain = time.perf_counter() - t0
    logits = predict(retrained, data.x_test)
    kept = data.y_test != args.forget
    print(f"retrain without class {args.forget} ({len(yr)} images, every layer re-initialised): {t_retrain:.1f} s; "
          f"retained test acc {accuracy(logits[kept], data.y_test[kept]):.4f}, forget test acc "
          f"{accuracy(logits[~kept], data.y_test[~kept]):.4f}", flush=True)


if __name__ == "__main__":
    main()
