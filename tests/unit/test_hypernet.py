"""The diffusion hypernetwork: tokens, normalisation, augmentation, denoiser, training, resumption, sampling."""

from __future__ import annotations

import math

import pytest
import torch

from hyperforget.base.errors import ConfigError, IntegrityError
from hyperforget.base.io import load_tensors
from hyperforget.config.options import HypernetConfig
from hyperforget.hypernet import diffusion
from hyperforget.hypernet.conditioning import conditioning
from hyperforget.hypernet.denoiser import Denoiser
from hyperforget.hypernet.diffusion import candidate_seeds, load_hypernet, sample, train_hypernet
from hyperforget.hypernet.prompts import prompt_ladder, r2, request_prompt, request_prompts, sweep_targets
from hyperforget.hypernet.tokenizer import Tokenizer, permute_mlp_hidden
from hyperforget.models.nets import build_model, flatten, load_flat, param_layout
from hyperforget.zoo.shards import ZooTensors

C = 10


def digits_mlp():
    return build_model("mlp", (1, 8, 8), C, 10, seed=0)


def synthetic_zoo(n: int = 48, seed: int = 0) -> ZooTensors:
    """Rows forget one class (or none); target = θ0 + a fixed direction per forgotten class."""
    g = torch.Generator().manual_seed(seed)
    model = digits_mlp()
    layout, theta0 = param_layout(model), flatten(model)
    forget = torch.randint(-1, C, (n,), generator=g)
    mask = torch.zeros(n, C)
    mask[forget >= 0, forget[forget >= 0]] = 1.0
    directions = 0.3 * torch.randn(C, theta0.numel(), generator=g)
    weights = theta0 + mask @ directions
    class_loss = 0.1 + 0.05 * torch.rand(n, C, generator=g) + mask * (4 + torch.rand(n, C, generator=g))
    return ZooTensors(weights, theta0[None], class_loss, mask, layout, C)


def tiny_cfg(**kw) -> HypernetConfig:
    base = dict(chunk_size=64, width=32, depth=1, heads=2, steps=20, batch_size=16, lr=3e-3, warmup=2,
                checkpoint_every=10, sample_steps=5, device="cpu", ema=0.0)
    return HypernetConfig(**{**base, **kw})


@pytest.mark.parametrize("arch", ["mlp", "cnn"])
def test_tokens_round_trip_exactly(arch):
    model = build_model(arch, (1, 8, 8), C, 10 if arch == "mlp" else 4, seed=0)
    layout = param_layout(model)
    vecs = torch.stack([flatten(model), torch.randn(flatten(model).numel())])
    tok = Tokenizer(layout, 64)
    tokens = tok.encode(vecs)
    assert tokens.shape == (2, tok.num_tokens, 64)
    assert torch.equal(tok.decode(tokens), vecs)
    assert tok.token_layer.tolist() == sorted(tok.token_layer.tolist())  # a token never spans two layers


def test_per_layer_normalisation_round_trips_and_standardises():
    zoo = synthetic_zoo()
    tok = Tokenizer(zoo.layout, 64).fit_normaliser(zoo.weights)
    z = tok.normalise(zoo.weights)
    assert torch.equal(z, (zoo.weights - tok.mean[tok.param_layer]) / tok.std[tok.param_layer])
    assert torch.allclose(tok.denormalise(z), zoo.weights, atol=1e-5)
    first = z[:, : 10 * 64]  # fc1.weight
    assert abs(first.mean().item()) < 1e-4 and abs(first.std(correction=0).item() - 1) < 1e-3
    restored = Tokenizer(zoo.layout, 64).load_normaliser(tok.normaliser_tensors())
    assert torch.equal(restored.normalise(zoo.weights), z)


def test_the_normaliser_fitted_a_few_rows_at_a_time_is_each_layers_mean_and_std():
    zoo = synthetic_zoo()
    chunked = Tokenizer(zoo.layout, 64).fit_normaliser(zoo.weights, chunk=100)
    start = 0
    for i, (_, shape) in enumerate(zoo.layout):
        part = zoo.weights[:, start : start + math.prod(shape)].double()
        assert chunked.mean[i].item() == pytest.approx(part.mean().item(), rel=1e-6, abs=1e-9)
        assert chunked.std[i].item() == pytest.approx(part.std(correction=0).item(), rel=1e-6)
        start += math.prod(shape)


def test_hidden_permutation_keeps_the_mlp_function():
    model = digits_mlp()
    layout, vec = param_layout(model), flatten(model)
    x = torch.randn(5, 1, 8, 8)
    g = torch.Generator().manual_seed(1)
    permuted, other = permute_mlp_hidden([vec.repeat(3, 1), 2 * vec.repeat(3, 1)], layout, g)
    assert not torch.equal(permuted[0], vec)
    assert torch.equal(other, 2 * permuted)  # the same permutation for every tensor of a row
    for row in permuted:
        assert torch.allclose(load_flat(digits_mlp(), row)(x), model(x), atol=1e-6)
    with pytest.raises(ConfigError):
        permute_mlp_hidden([torch.zeros(1, 4)], [("conv1.weight", (4,))], g)


@pytest.mark.parametrize("variant", ["dihyfo1", "dihyfo2"])
def test_untrained_denoiser_returns_start_weights(variant):
    zoo = synthetic_zoo(8)
    tok = Tokenizer(zoo.layout, 64).fit_normaliser(zoo.weights)
    model = Denoiser(tok, C, variant, width=32, depth=1, heads=2)
    start = tok.normalise(zoo.start.expand(8, -1))
    cond = conditioning(zoo.class_loss, zoo.forget_mask, variant)
    out = model(torch.randn_like(start), start, torch.arange(8) * 100, cond)
    assert torch.equal(out, start)


def test_conditioning_handles_no_forget_rows():
    loss = torch.tensor([[1.0, 2.0, 3.0], [1.0, 2.0, 3.0]])
    mask = torch.tensor([[0.0, 0.0, 1.0], [0.0, 0.0, 0.0]])
    cond = conditioning(loss, mask, "dihyfo1")
    assert cond["forget_loss"].tolist() == [3.0, 2.0] and cond["retain_loss"].tolist() == [1.5, 2.0]


@pytest.mark.parametrize("variant", ["dihyfo1", "dihyfo2"])
def test_training_lowers_loss_and_samples_deterministically(tmp_path, variant):
    zoo = synthetic_zoo()
    cfg = tiny_cfg(variant=variant, steps=60, checkpoint_every=30)
    result = train_hypernet(zoo, cfg, tmp_path, progress=False)
    assert result["step"] == 60

    tok = Tokenizer(zoo.layout, 64).fit_normaliser(zoo.weights)
    g = torch.Generator().manual_seed(9)
    t = torch.randint(0, 1000, (48,), generator=g)
    noise = torch.randn(48, tok.num_params, generator=g)
    x0, start = tok.normalise(zoo.weights), tok.normalise(zoo.start).expand(48, -1)
    cond = conditioning(zoo.class_loss, zoo.forget_mask, variant)
    untrained = diffusion.build_denoiser(cfg, zoo.layout, C)
    untrained.tokenizer.fit_normaliser(zoo.weights)
    hn = load_hypernet(tmp_path)
    with torch.no_grad():
        before = diffusion.denoising_loss(untrained, x0, start, cond, t, noise, diffusion.alphas_cumprod())
        after = diffusion.denoising_loss(hn.model, x0, start, cond, t, noise, diffusion.alphas_cumprod())
    assert after < 0.8 * before

    prompt, _ = request_prompt(zoo.class_loss, zoo.forget_mask, [3], variant)
    a = sample(hn, zoo.start[0], prompt, k=4, seed=1)
    assert a.shape == (4, tok.num_params) and torch.isfinite(a).all()
    assert torch.equal(a, sample(hn, zoo.start[0], prompt, k=4, seed=1))
    assert not torch.allclose(a, sample(hn, zoo.start[0], prompt, k=4, seed=2))


def test_resumed_training_equals_uninterrupted(tmp_path, monkeypatch):
    zoo, cfg = synthetic_zoo(), tiny_cfg(permute_augment=True, ema=0.9)
    full = train_hypernet(zoo, cfg, tmp_path / "full", progress=False)

    real_save = diffusion.save_checkpoint

    def save_then_crash(out, step, *args):
        real_save(out, step, *args)
        raise KeyboardInterrupt

    monkeypatch.setattr(diffusion, "save_checkpoint", save_then_crash)
    with pytest.raises(KeyboardInterrupt):
        train_hypernet(zoo, cfg, tmp_path / "part", progress=False)
    monkeypatch.undo()
    resumed = train_hypernet(zoo, cfg, tmp_path / "part", progress=False)
    assert resumed["resumed_from"] == 10 and resumed["losses"] == full["losses"]
    for role in ("model", "ema", "optimizer"):
        a = load_tensors(tmp_path / "full" / f"{role}-000000020.safetensors")
        b = load_tensors(tmp_path / "part" / f"{role}-000000020.safetensors")
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert not list((tmp_path / "part").glob("*-000000010.*"))  # old checkpoint files cleaned up

    with pytest.raises(ConfigError, match="lr"):
        train_hypernet(zoo, tiny_cfg(permute_augment=True, ema=0.9, lr=1e-3), tmp_path / "part", progress=False)


def test_corrupted_checkpoint_is_detected(tmp_path):
    zoo = synthetic_zoo(8)
    train_hypernet(zoo, tiny_cfg(steps=2, checkpoint_every=2), tmp_path, progress=False)
    ema = tmp_path / "ema-000000002.safetensors"
    data = bytearray(ema.read_bytes())
    data[-1] ^= 0xFF
    ema.write_bytes(bytes(data))
    with pytest.raises(IntegrityError, match="checksum"):
        load_hypernet(tmp_path)
    with pytest.raises(IntegrityError, match="no hypernetwork checkpoint"):
        load_hypernet(tmp_path / "missing")


def test_prompts_follow_the_percentiles_of_the_requests_own_rows():
    zoo = synthetic_zoo()
    rows = zoo.forget_mask[:, [2, 5]].amax(1) > 0
    cond, target = request_prompt(zoo.class_loss, zoo.forget_mask, [2, 5], "dihyfo2")
    assert torch.equal(cond["class_loss"], target) and target.shape == (C,)
    forgot2 = rows & (zoo.forget_mask[:, 2] > 0)
    assert target[2] == pytest.approx(torch.quantile(zoo.class_loss[forgot2, 2], 0.95).item())
    kept0 = rows & (zoo.forget_mask[:, 0] == 0)
    assert target[0] == pytest.approx(torch.quantile(zoo.class_loss[kept0, 0], 0.05).item())
    one, _ = request_prompt(zoo.class_loss, zoo.forget_mask, [2], "dihyfo1")
    assert set(one) == {"forget_loss", "retain_loss", "forget_mask"} and one["forget_mask"][2] == 1
    with pytest.raises(ConfigError, match=r"distinct classes in 0\.\.9"):
        request_prompt(zoo.class_loss, zoo.forget_mask, [C], "dihyfo2")


def test_prompt_sweep_rises_on_forget_classes_only_and_r2_scores_it():
    zoo = synthetic_zoo()
    targets, mask = sweep_targets(zoo.class_loss, zoo.forget_mask, [2], n=20)
    assert targets.shape == (20, C) and mask.tolist() == [c == 2 for c in range(C)]
    assert torch.all(targets[:, 2].diff() > 0) and torch.all(targets[:, ~mask] == targets[0, ~mask])
    assert r2(targets[:, 2], targets[:, 2]) == 1.0 and r2(targets[:, 2], targets[:, 2].flip(0)) < 0
    assert prompt_ladder(95, 5, 3) == [(50.0, 50.0), (72.5, 27.5), (95.0, 5.0)]


def test_config_rejects_unknown_keys_and_bad_heads():
    with pytest.raises(ValueError):
        HypernetConfig(unknown=1)
    with pytest.raises(ValueError):
        HypernetConfig(width=30, heads=4)


def test_hypernet_training_refuses_rows_of_a_held_out_set(tmp_path):
    zoo = synthetic_zoo()
    train_hypernet(zoo, tiny_cfg(steps=2, checkpoint_every=2), tmp_path / "ok", progress=False, held_out=[(2, 5)])
    mask = zoo.forget_mask.clone()
    mask[7] = 0.0
    mask[7, [2, 5]] = 1.0  # one row that forgot exactly the held-out set
    tainted = ZooTensors(zoo.weights, zoo.start, zoo.class_loss, mask, zoo.layout, C)
    with pytest.raises(ConfigError, match=r"held-out class sets \[\[2, 5\]\]"):
        train_hypernet(tainted, tiny_cfg(steps=2), tmp_path / "no", progress=False, held_out=[(5, 2), (1, 3, 4)])
    assert not (tmp_path / "no").exists()


def test_prompt_for_an_unseen_set_is_composed_per_class():
    """The zoo holds single classes and the set {2, 7}, never {2, 5}: the prompt still exists, forget class c
    at the high percentile of every row that forgot c, retained r at the low percentile of the rows that kept
    r while forgetting 2 or 5; each prompt level equals the unbatched prompt of that level."""
    zoo = synthetic_zoo(60)
    mask = zoo.forget_mask.clone()
    mask[:6] = 0.0
    mask[:6, [2, 7]] = 1.0
    assert not (mask == torch.eye(C)[[2, 5]].sum(0)).all(1).any()  # no row of the requested set
    ladder = prompt_ladder(95, 5, 3)
    cond, targets = request_prompts(zoo.class_loss, mask, [2, 5], "dihyfo2", ladder)
    assert targets.shape == (3, C) and cond["forget_mask"].shape == (3, C) and cond["forget_mask"][0, 5] == 1
    for c in (2, 5):
        forgot = mask[:, c] > 0
        assert targets[-1, c] == pytest.approx(torch.quantile(zoo.class_loss[forgot, c], 0.95).item(), rel=1e-5)
    kept0 = (mask[:, [2, 5]].amax(1) > 0) & (mask[:, 0] == 0)
    assert targets[-1, 0] == pytest.approx(torch.quantile(zoo.class_loss[kept0, 0], 0.05).item(), rel=1e-5)
    for i, (hi, lo) in enumerate(ladder):
        one, target = request_prompt(zoo.class_loss, mask, [2, 5], "dihyfo2", hi, lo)
        assert torch.allclose(target, targets[i]) and torch.equal(one["forget_mask"], cond["forget_mask"][i])


@pytest.mark.parametrize("variant", ["dihyfo1", "dihyfo2"])
def test_batched_sampler_returns_what_single_calls_with_the_same_seeds_return(tmp_path, variant):
    zoo = synthetic_zoo()
    train_hypernet(zoo, tiny_cfg(variant=variant, steps=20), tmp_path, progress=False)
    hn = load_hypernet(tmp_path)
    cond, _ = request_prompts(zoo.class_loss, zoo.forget_mask, [1, 4], variant, prompt_ladder(95, 5, 4))
    seeds = [11, 12, 13, 14]
    batch = sample(hn, zoo.start[0], cond, steps=7, seeds=seeds)  # four prompts, four candidates, one call
    singles = torch.cat([sample(hn, zoo.start[0], {k: v[i] for k, v in cond.items()}, steps=7, seeds=[s])
                         for i, s in enumerate(seeds)])
    # the same x_T per candidate whatever the batch; only batched matmuls' float summation order differs
    torch.testing.assert_close(batch, singles, rtol=0, atol=1e-5)
    assert not torch.allclose(batch[0], batch[1])
    same = sample(hn, zoo.start[0], {k: v[0] for k, v in cond.items()}, k=3, seed=5)
    torch.testing.assert_close(same[2:], sample(hn, zoo.start[0], {k: v[0] for k, v in cond.items()}, steps=None,
                                                seeds=[candidate_seeds(5, 3)[2]]), rtol=0, atol=1e-5)
    with pytest.raises(ConfigError, match="candidates"):
        sample(hn, zoo.start[0], cond, k=3)
