"""DiHyFo: unlearning by sampling weights from the diffusion hypernetwork (papers.md §1, "Selection").

The request becomes prompts (forget classes at the `hi_pct` percentile of the validation losses the zoo
recorded while forgetting them, retained classes at `lo_pct`; `prompt_levels` prompts step from the zoo
median to those percentiles, see `prompt_ladder`), K seeded candidates are drawn (one batch per prompt),
each is scored on the validation split (never the test split), and the best that passes the gates wins:
forget-class val accuracy ≤ `max_forget_acc` and retained val accuracy ≥ the original's − `max_retain_drop`
(the original is the only reference available at unlearning time). Among passing candidates the highest
retained val accuracy wins (ties: lower retained val loss); if none passes, the same ranking applies to
all and `info.passed` is False. `wall_time_s` = prompt + sampling + scoring, the unlearning cost; loading
the hypernetwork and the zoo's loss index is setup (like loading θ0) and is reported as `load_s`.

Random-subset requests are refused: the zoo and the prompts are per class, and a per-class loss prompt
cannot say which samples to forget.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from hyperforget.errors import ConfigError
from hyperforget.hypernet.data import conditioning
from hyperforget.hypernet.diffusion import load_hypernet, sample
from hyperforget.hypernet.prompts import class_levels
from hyperforget.models import ModelSpec, flatten, load_flat
from hyperforget.unlearn.base import Timer, UnlearnInputs, UnlearnResult
from hyperforget.unlearn.options import DiHyFoOptions
from hyperforget.zoo import class_metrics, read_zoo_losses, weights_sha256


def request_rows(forget_mask: torch.Tensor, classes: Sequence[int]) -> torch.Tensor:
    """Zoo rows [N] bool that forgot any of the request's classes: what the zoo reached while forgetting them."""
    rows = forget_mask[:, list(classes)].amax(1) > 0
    if not rows.any():
        raise ConfigError(f"the zoo holds no rows that forget any of classes {list(classes)}; rebuild it with them")
    return rows


def request_prompt(class_loss: torch.Tensor, forget_mask: torch.Tensor, classes: Sequence[int], variant: str,
                   hi_pct: float = 95, lo_pct: float = 5) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    """The unbatched conditioning of one class request and its per-class target losses [C].

    Percentiles are taken over the request's rows only (`request_rows`): forget classes at `hi_pct` of
    the rows that forgot them, retained classes at `lo_pct` of the rows that kept them while forgetting
    these. Over the whole zoo the retained levels come from other requests' rows, a combination no zoo
    model reaches (on digits it halved the number of classes meeting the definition of done).
    """
    rows = request_rows(forget_mask, classes)
    c = class_loss.shape[1]
    lo, hi = class_levels(class_loss[rows], c, hi_pct, lo_pct, forget_mask[rows])
    mask = torch.zeros(c)
    mask[list(classes)] = 1.0
    target = torch.where(mask > 0, hi, lo)
    return {k: v[0] for k, v in conditioning(target[None], mask[None], variant).items()}, target


def prompt_ladder(hi_pct: float, lo_pct: float, levels: int) -> list[tuple[float, float]]:
    """(hi, lo) percentile pairs from the zoo median (a typical endpoint) to (hi_pct, lo_pct) (the most
    ambitious): the hypernetwork's samples for one prompt are near-identical, so the K candidates only
    differ, and selection only has a choice, if their prompts differ."""
    if levels == 1:
        return [(hi_pct, lo_pct)]
    return [(50 + (hi_pct - 50) * u, 50 - (50 - lo_pct) * u) for u in torch.linspace(0, 1, levels).tolist()]


@torch.no_grad()
def score(spec: ModelSpec, candidates: torch.Tensor, x_val: torch.Tensor, y_val: torch.Tensor,
          classes: Sequence[int]) -> dict[str, torch.Tensor]:
    """Sample-weighted forget/retained val accuracy and retained val loss of each candidate [K]."""
    loss, acc = class_metrics(spec, candidates, x_val, y_val)
    counts = torch.bincount(y_val, minlength=spec.num_classes).float()
    forget = torch.zeros(spec.num_classes, dtype=torch.bool)
    forget[list(classes)] = True

    def mean(t: torch.Tensor, m: torch.Tensor) -> torch.Tensor:
        return (t[:, m] * counts[m]).sum(1) / counts[m].sum()

    return {"forget_acc": mean(acc, forget), "retained_acc": mean(acc, ~forget), "retained_loss": mean(loss, ~forget)}


def select(cand: dict[str, torch.Tensor], reference_retained_acc: float,
           opts: DiHyFoOptions) -> tuple[int, torch.Tensor]:
    """Index of the chosen candidate and the pass mask [K]."""
    passed = (cand["forget_acc"] <= opts.max_forget_acc) & \
        (cand["retained_acc"] >= reference_retained_acc - opts.max_retain_drop)
    pool = passed.nonzero().flatten().tolist() or list(range(len(passed)))
    best = min(pool, key=lambda i: (-cand["retained_acc"][i].item(), cand["retained_loss"][i].item()))
    return best, passed


def run(inputs: UnlearnInputs, opts: DiHyFoOptions) -> UnlearnResult:
    classes = inputs.split.classes
    if classes is None:
        raise ConfigError("DiHyFo supports class requests only (forget.classes): its zoo and prompts are per-class "
                          "losses, which cannot name individual samples; use gradtau for a random subset")
    with Timer() as load:
        hypernet = load_hypernet(opts.hypernet_path, device="cpu")
        class_loss, forget_mask, manifest = read_zoo_losses(opts.zoo_dir)
    if hypernet.config.variant != opts.variant:
        raise ConfigError(f"{opts.hypernet_path} holds a {hypernet.config.variant} hypernetwork, not {opts.variant}")
    theta0 = flatten(inputs.original).float()
    if weights_sha256(theta0) != manifest["theta0_sha256"]:
        raise ConfigError(f"the zoo in {opts.zoo_dir} was built from a different original model; rebuild the zoo "
                          "and retrain the hypernetwork for this one")
    data, spec = inputs.data, inputs.spec
    steps = opts.sample_steps or hypernet.config.sample_steps
    ladder = prompt_ladder(opts.hi_pct, opts.lo_pct, min(opts.prompt_levels, opts.k))
    per = [len(x) for x in torch.arange(opts.k).tensor_split(len(ladder))]  # samples per prompt
    with Timer() as t_prompt:
        prompts = [request_prompt(class_loss, forget_mask, classes, opts.variant, hi, lo) for hi, lo in ladder]
    with Timer() as t_sample:
        base = (inputs.seed + opts.seed) * 64
        candidates = torch.cat([sample(hypernet, theta0, cond, k=n, steps=steps, seed=base + i)
                                for i, ((cond, _), n) in enumerate(zip(prompts, per, strict=True))])
    with Timer() as t_score:
        cand = score(spec, torch.cat([theta0[None], candidates]), data.x_val, data.y_val, classes)
        reference = cand["retained_acc"][0].item()
        cand = {k: v[1:] for k, v in cand.items()}
        best, passed = select(cand, reference, opts)
        model = load_flat(spec.build(), candidates[best]).eval()
    info = {"variant": opts.variant, "pass_rate": passed.float().mean().item(), "passed": bool(passed[best]),
            "chosen": best, "original_retained_val_acc": reference,
            "prompts": [{"hi_pct": hi, "lo_pct": lo, "target": target.tolist()}
                        for (hi, lo), (_, target) in zip(ladder, prompts, strict=True)],
            "candidates": {k: v.tolist() for k, v in cand.items()} | {
                "passed": passed.tolist(), "prompt": [i for i, n in enumerate(per) for _ in range(n)]},
            "prompt_s": t_prompt.seconds, "sample_s": t_sample.seconds, "score_s": t_score.seconds,
            "load_s": load.seconds, "hypernet_step": hypernet.step, "sample_steps": steps}
    wall = t_prompt.seconds + t_sample.seconds + t_score.seconds
    return UnlearnResult(model, opts.variant, wall, opts.k * steps, opts.model_dump(), info=info)
