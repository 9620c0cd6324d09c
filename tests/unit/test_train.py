"""Training: seeded and repeatable; N vmapped models equal N separate runs; the runtime settings the entry points
pin. (The accuracy bars: tests/model/test_quality_bars.py.)"""


import pytest
import torch

from hyperforget.config.params import TrainConfig
from hyperforget.models.metrics import accuracy
from hyperforget.models.nets import ModelSpec, flatten, frozen_features, predict
from hyperforget.models.train import lr_schedule, train_many, train_many_params, train_model


@pytest.fixture
def data(digits):
    return digits


def test_training_is_bitwise_repeatable_on_cpu(data):
    spec = ModelSpec("mlp", data.input_shape, 10, 10)
    cfg = TrainConfig(epochs=3)
    a, b = spec.build(seed=5), spec.build(seed=5)
    train_model(a, data.x_train, data.y_train, cfg, seed=5)
    train_model(b, data.x_train, data.y_train, cfg, seed=5)
    assert torch.equal(flatten(a), flatten(b))


@pytest.mark.parametrize("arch", ["mlp", "cnn"])
def test_vmapped_training_matches_separate_runs(data, arch):
    spec = ModelSpec(arch, data.input_shape, 10, 8)
    cfg = TrainConfig(epochs=2, batch_size=64)
    seeds = [0, 1, 2]
    batched = train_many(spec, seeds, data.x_train, data.y_train, cfg)
    for seed, got in zip(seeds, batched, strict=True):
        alone = spec.build(seed=seed)
        train_model(alone, data.x_train, data.y_train, cfg, seed=seed)
        # Adam's first steps are sign-like, so float summation-order noise in near-zero gradients
        # shows up as small weight differences; the functions must agree.
        assert (flatten(got) - flatten(alone)).abs().max() < 5e-3
        agree = (predict(got, data.x_test).argmax(1) == predict(alone, data.x_test).argmax(1)).float().mean()
        assert agree >= 0.99
    assert not torch.equal(flatten(batched[0]), flatten(batched[1]))


def test_cosine_schedule_and_vmapped_runs_agree_and_a_cut_trains_only_its_layers(data):
    spec = ModelSpec("lenet", data.input_shape, 10, 0)
    cfg = TrainConfig(epochs=1, batch_size=128, lr=3e-3, schedule="cosine")
    model = spec.build(seed=0)
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr)
    sched = lr_schedule(opt, cfg, 1000)  # 8 batches
    lrs = [opt.param_groups[0]["lr"]] + [(opt.step(), sched.step(), opt.param_groups[0]["lr"])[2] for _ in range(8)]
    assert lrs[0] == cfg.lr and lrs[4] == pytest.approx(cfg.lr / 2) and lrs[-1] == pytest.approx(0, abs=1e-12)
    batched = train_many(spec, [7], data.x_train, data.y_train, cfg)[0]
    alone = spec.build(seed=7)
    train_model(alone, data.x_train, data.y_train, cfg, seed=7)
    assert (flatten(batched) - flatten(alone)).abs().max() < 5e-3
    h = frozen_features(model.eval(), data.x_train, "head")
    params = train_many_params(spec, [7, 8], h, data.y_train, cfg, cut="head")
    assert set(params) == {"fc3.weight", "fc3.bias"} and params["fc3.weight"].shape == (2, 10, 84)
    assert not torch.equal(params["fc3.weight"][0], spec.build(seed=7).fc3.weight)  # trained from seed 7's init


def test_early_stopping_keeps_the_best_epoch(data):
    spec = ModelSpec("mlp", data.input_shape, 10, 10)
    model = spec.build(seed=0)
    hist = train_model(model, data.x_train, data.y_train, TrainConfig(epochs=200, patience=3), 0,
                       data.x_val, data.y_val)
    assert hist["epochs_run"] < 200
    assert accuracy(predict(model, data.x_val), data.y_val) == pytest.approx(max(hist["val_acc"]))


SETTINGS = ("ATEN_CPU_CAPABILITY", "MKL_CBWR", "ONEDNN_MAX_CPU_ISA", "OMP_WAIT_POLICY", "OMP_NUM_THREADS")


def _child(code: str) -> list[str]:
    import os
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if k not in SETTINGS}
    return subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                          check=True).stdout.split()


def test_importing_the_library_changes_no_process_setting():
    code = f"import os, hyperforget.cli; print(*[os.environ.get(k, '-') for k in {SETTINGS!r}])"
    assert _child(code) == ["-"] * len(SETTINGS)


def test_the_entry_points_pin_the_cpu_kernels_and_torch_threads_before_torch_loads():
    """What `hyperforget` (and every flow module) runs first: weights and metrics then depend neither on the
    machine's CPU nor on its number of cores."""
    import platform

    code = ("import os; from hyperforget.base.runtime import configure; configure(); import torch; "
            f"print(torch.backends.cpu.get_cpu_capability(), torch.get_num_threads(), "
            f"*[os.environ[k] for k in {SETTINGS!r}])")
    capability, threads, *values = _child(code)
    assert values == ["avx2", "AVX2", "AVX2", "PASSIVE", "2"] and threads == "2"
    if platform.machine() in ("x86_64", "AMD64"):  # the AVX2 pin means nothing on ARM
        assert capability == "AVX2"
