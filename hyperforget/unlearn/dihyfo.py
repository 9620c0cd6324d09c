"""DiHyFo: unlearning by sampling weights from the diffusion hypernetwork (papers.md §1, "Selection").

The request becomes prompts (forget classes at the `hi_pct` percentile of the validation losses the zoo
recorded while forgetting them, retained classes at `lo_pct`, composed per class so a set the zoo never
held gets one too; `prompt_levels` prompts step from the zoo median to those percentiles, see
`prompt_ladder`), K candidates with their own noise seeds are drawn in ONE batched sampler call over all
prompt levels, each sample also gives scaled edits θ0 + s·(sample − θ0) (`edit_scales`: the samples of one
prompt are near-identical, while the edit's strength is what decides retained accuracy on sets the zoo never
held), every candidate is scored on the validation split (never the test split; one vmapped pass), and
the best that passes the gates wins:
forget-class val accuracy ≤ `gates.max_forget_acc` and retained val accuracy ≥ the original's −
`gates.max_retain_drop`
(the original is the only reference available at unlearning time). Among passing candidates the highest
retained val accuracy wins (ties: lower retained val loss); if none passes, the same ranking applies to
all and `info.passed` is False. Repairs follow, so the answer looks like a retrain's, not only scores like
one: optionally a short fine-tune of the generated layers on the retained data (`unlearn/tune.py`), then the
generated hidden layers brought back to θ0's activation scale (`unlearn/scale.py`), for a class set the
features' separation of its classes erased (`unlearn/erase.py`),
each forgotten class gets a retrain-shaped head row (`unlearn/rows.py`), then its level is matched to the zoo's
retrains (`unlearn/level.py`; by the bias, or partly by the row's scale: `level_row_share`). `wall_time_s` =
prompt + sampling + scoring + repairs, the unlearning cost; loading the hypernetwork, the zoo's loss index and
its retrains' levels is setup (like loading θ0) and is reported as `load_s`.

Random-subset requests are refused: the zoo and the prompts are per class, and a per-class loss prompt
cannot say which samples to forget.

Partial generation (the hypernetwork's `generate`: head | block_head | dense): the hypernetwork samples those layers
only, starting from θ0's; the returned model is θ0 with them put in place (every other parameter
bit-identical to θ0's), and scoring runs the K generated parts on the validation features θ0's frozen part
computed once when the zoo was built (`features.safetensors`, checksummed, loaded as setup with the loss
index; a cache from another θ0 is refused). The row refit reads the same cache's training features, so neither
runs the frozen layers (LeNet's convs) on an image. `opts.generate` may name the layer set a caller expects; a
hypernetwork trained for another one is a ConfigError.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from hyperforget.base.errors import ConfigError
from hyperforget.base.io import read_json
from hyperforget.config.options import DiHyFoOptions
from hyperforget.config.params import GatesConfig
from hyperforget.hypernet.diffusion import candidate_seeds, load_hypernet, sample
from hyperforget.hypernet.honesty import nearest_rows
from hyperforget.hypernet.prompts import prompt_ladder, request_prompts
from hyperforget.models.features import load_features
from hyperforget.models.metrics import class_metrics
from hyperforget.models.nets import ModelSpec, flatten, generated_part, load_flat
from hyperforget.unlearn.erase import erase_set
from hyperforget.unlearn.level import match_level, zoo_levels
from hyperforget.unlearn.method import Timer, UnlearnInputs, UnlearnResult
from hyperforget.unlearn.rows import FRESH_SEED_OFFSET, refit_rows
from hyperforget.unlearn.scale import SAMPLE as SCALE_SAMPLE
from hyperforget.unlearn.scale import match_scale
from hyperforget.unlearn.tune import tune_generated
from hyperforget.zoo import levels as zoo_level_retrains
from hyperforget.zoo.shards import INDEX, read_rows, read_zoo_losses, weights_sha256


@torch.no_grad()
def score(spec: ModelSpec, candidates: torch.Tensor, x_val: torch.Tensor, y_val: torch.Tensor,
          classes: Sequence[int], cut: str = "all") -> dict[str, torch.Tensor]:
    """Sample-weighted forget/retained val accuracy and retained val loss of each candidate [K] (with a `cut`,
    candidates hold the generated layers and x_val is the frozen part's features: `metrics.class_metrics`)."""
    loss, acc = class_metrics(spec, candidates, x_val, y_val, cut=cut)
    counts = torch.bincount(y_val, minlength=spec.num_classes).float()
    forget = torch.zeros(spec.num_classes, dtype=torch.bool)
    forget[list(classes)] = True

    def mean(t: torch.Tensor, m: torch.Tensor) -> torch.Tensor:
        return (t[:, m] * counts[m]).sum(1) / counts[m].sum()

    return {"forget_acc": mean(acc, forget), "retained_acc": mean(acc, ~forget), "retained_loss": mean(loss, ~forget)}


def select(cand: dict[str, torch.Tensor], reference_retained_acc: float,
           gates: GatesConfig) -> tuple[int, torch.Tensor]:
    """Index of the chosen candidate and the pass mask [K], by the release gates' thresholds."""
    passed = (cand["forget_acc"] <= gates.max_forget_acc) & \
        (cand["retained_acc"] >= reference_retained_acc - gates.max_retain_drop)
    pool = passed if passed.any() else torch.ones_like(passed)
    acc = torch.where(pool, cand["retained_acc"], -torch.inf)
    top = pool & (acc == acc.max())  # highest retained acc; ties: lowest retained loss, then the first
    best = int(torch.where(top, cand["retained_loss"], torch.inf).argmin())
    return best, passed


def check_generate(trained: str, requested: str | None, zoo: str, where: object) -> str:
    """The layer set to generate: the hypernetwork's; a request for another one (or a zoo of other layers) is
    a ConfigError that says how to get a hypernetwork for it."""
    if requested is not None and requested != trained:
        raise ConfigError(f"DiHyFo was asked to generate the {requested!r} layers but the hypernetwork in {where} "
                          f"was trained to generate {trained!r}; retrain it with hypernet.generate: {requested} "
                          f"(zoo and hypernet stages), or leave generate unset to use {trained!r}")
    if zoo != trained:
        raise ConfigError(f"the hypernetwork in {where} generates {trained!r} layers but the zoo holds {zoo!r}; "
                          "rebuild the zoo and retrain the hypernetwork with one hypernet.generate")
    return trained


def run(inputs: UnlearnInputs, opts: DiHyFoOptions) -> UnlearnResult:
    classes = inputs.split.classes
    retrieval = opts.source == "zoo"  # the zoo's nearest rows instead of samples: no hypernetwork at all
    name = "retrieval" if retrieval else "DiHyFo"
    if classes is None:
        raise ConfigError(f"{name} supports class requests only (forget.classes): its zoo and prompts are per-class "
                          "losses, which cannot name individual samples; use gradtau for a random subset")
    if inputs.artifacts is None:
        raise ConfigError("DiHyFo needs the project's artifacts (its zoo and hypernetwork) in UnlearnInputs.artifacts")
    hypernet_dir, zoo_dir = inputs.artifacts.hypernet(opts.variant), inputs.artifacts.zoo
    with Timer() as load:
        hypernet = None if retrieval else load_hypernet(hypernet_dir, device="cpu")
        class_loss, forget_mask, manifest = read_zoo_losses(zoo_dir)
        retrains = zoo_level_retrains.read(zoo_dir)
        index_rows = read_json(zoo_dir / INDEX)["rows"] if opts.match_level or retrieval else []
        levels = zoo_levels(index_rows, classes, retrains) if opts.match_level else {}
    zoo_generate = manifest.get("generate", "all")
    if hypernet is not None and hypernet.config.variant != opts.variant:
        raise ConfigError(f"{hypernet_dir} holds a {hypernet.config.variant} hypernetwork, not {opts.variant}")
    if hypernet is None and opts.generate not in (None, zoo_generate):
        raise ConfigError(f"retrieval was asked for the {opts.generate!r} layers but the zoo in {zoo_dir} holds "
                          f"{zoo_generate!r} ones; leave generate unset, or rebuild the zoo with hypernet.generate: "
                          f"{opts.generate}")
    generate = (zoo_generate if hypernet is None
                else check_generate(hypernet.config.generate, opts.generate, zoo_generate, hypernet_dir))
    theta0 = flatten(inputs.original).float()
    if weights_sha256(theta0) != manifest["theta0_sha256"]:
        raise ConfigError(f"the zoo in {zoo_dir} was built from a different original model; rebuild the zoo "
                          "and retrain the hypernetwork for this one")
    with Timer() as load_features_t:  # setup, like the loss index: θ0's frozen part ran over val once, in the zoo
        feats = load_features(zoo_dir, inputs.spec) if generate != "all" else None
    if feats is not None and (not torch.equal(feats.theta0, theta0) or len(feats.val) != len(inputs.data.y_val)
                              or len(feats.train) != len(inputs.data.y_train)):
        raise ConfigError(f"the features cached in {zoo_dir} come from another original model or data; rebuild "
                          "the zoo (and the hypernetwork) for this one")
    data, spec = inputs.data, inputs.spec
    steps = 0 if hypernet is None else opts.sample_steps or hypernet.config.sample_steps
    scales = torch.tensor(opts.edit_scales)
    n_samples = opts.k // len(scales)  # each sample gives len(scales) candidates
    ladder = prompt_ladder(opts.hi_pct, opts.lo_pct, min(opts.prompt_levels, n_samples))
    per = [len(x) for x in torch.arange(n_samples).tensor_split(len(ladder))]  # samples per prompt
    prompt_of = torch.cat([torch.full((n,), i) for i, n in enumerate(per)])  # sample → its prompt level
    with Timer() as t_prompt:
        conds, targets = request_prompts(class_loss, forget_mask, classes, opts.variant, ladder)
    part = generated_part(inputs.original, generate)  # candidates hold these layers; the rest stays θ0's
    start = part.extract(theta0)
    with Timer() as t_sample:  # every prompt level and candidate in one batched sampler call, or one zoo lookup
        if hypernet is None:
            looked_up = nearest_rows(class_loss, targets, per)
            samples = read_rows(zoo_dir, index_rows, looked_up.tolist()).float()
        else:
            cond = {k: v[prompt_of] for k, v in conds.items()}  # each sample's prompt level
            samples = sample(hypernet, start, cond, steps=steps,
                             seeds=candidate_seeds(inputs.seed + opts.seed, n_samples))
    with Timer() as t_score:  # partial: the generated parts run on the val features cached with the zoo
        # candidate (i, j) = θ0 + scales[j]·(sample i − θ0), sample-major: the edit's strength, chosen on val
        candidates = (start + scales[None, :, None] * (samples - start)[:, None, :]).flatten(0, 1)
        x_val = data.x_val if feats is None else feats.val
        cand = score(spec, torch.cat([start[None], candidates]), x_val, data.y_val, classes, cut=generate)
        reference = cand["retained_acc"][0].item()
        cand = {k: v[1:] for k, v in cand.items()}
        best, passed = select(cand, reference, inputs.gates)
        model = load_flat(spec.build(), part.assemble(theta0, candidates[best])).eval()
    with Timer() as t_repair:  # the repairs count in the answer's cost: scale, set erasure, retrain-shaped rows, level
        x_retain = inputs.x_retain if feats is None else feats.train[inputs.split.retain_idx]
        tuned = tune_generated(model, x_retain, inputs.y_retain, opts.tune_steps, opts.tune_lr, opts.refit_batch_size,
                               inputs.seed, cut=generate)
        scaled = {"applied": False}
        if opts.match_scale:
            sub = torch.randperm(len(x_retain), generator=torch.Generator().manual_seed(inputs.seed))[:SCALE_SAMPLE]
            scaled = match_scale(model, inputs.original, x_retain[sub], cut=generate)
        x_forget = inputs.x_forget if feats is None else feats.train[inputs.split.forget_idx]
        erased = erase_set(model, x_forget, inputs.y_forget, classes, opts.erase_set, cut=generate)
        rows = refit_rows(model, lambda: spec.build(seed=inputs.seed + FRESH_SEED_OFFSET), x_retain, inputs.y_retain,
                          classes, opts.refit_steps, opts.refit_lr, opts.refit_batch_size, inputs.seed, opts.refit_head,
                          cut=generate)
        level = (match_level(model, x_val, data.y_val, levels, inputs.gates.max_forget_acc, cut=generate,
                             row_share=opts.level_row_share)
                 | {"source": "level retrains" if levels and all(c in retrains for c in levels) else "zoo endpoints"}
                 if opts.match_level else {"applied": False})
    info = {"variant": opts.variant, "pass_rate": passed.float().mean().item(), "passed": bool(passed[best]),
            "chosen": best, "original_retained_val_acc": reference,
            "prompts": [{"hi_pct": hi, "lo_pct": lo, "target": target.tolist()}
                        for (hi, lo), target in zip(ladder, targets, strict=True)],
            "candidates": {k: v.tolist() for k, v in cand.items()} | {
                "passed": passed.tolist(), "prompt": prompt_of.repeat_interleave(len(scales)).tolist(),
                "scale": scales.repeat(n_samples).tolist()},
            "tune": tuned, "scale": scaled, "erase": erased, "rows": rows, "level": level, "repair_s": t_repair.seconds,
            "prompt_s": t_prompt.seconds, "sample_s": t_sample.seconds, "score_s": t_score.seconds,
            "load_s": load.seconds + load_features_t.seconds, "sample_steps": steps, "generate": generate,
            "source": opts.source} | ({"zoo_rows": looked_up.tolist()} if hypernet is None else {
                "hypernet_step": hypernet.step})
    wall = t_prompt.seconds + t_sample.seconds + t_score.seconds + t_repair.seconds
    return UnlearnResult(model, "retrieval" if retrieval else opts.variant, wall, opts.k * steps,
                         opts.model_dump(), info=info)
