"""Which requests the zoo holds: every single class, the explicit pairs, the seeded random class sets, and
never one of the held-out sets (those judge the hypernetwork on requests it never saw)."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import torch

from hyperforget.base.errors import ConfigError
from hyperforget.config.params import ZooConfig


def zoo_requests(cfg: ZooConfig, num_classes: int) -> list[tuple[int, ...]]:
    """Every single class, then cfg.pairs, then cfg.class_sets random sets (sorted, no duplicates); a
    held-out set among them is refused (`refuse_held_out`)."""
    out: list[tuple[int, ...]] = []
    for r in [(c,) for c in range(num_classes)] + [tuple(sorted(p)) for p in cfg.pairs] + \
            cfg.random_sets(num_classes):
        if r not in out:
            out.append(r)
    refuse_held_out(out, cfg.held_out(num_classes))
    return out


def refuse_held_out(requests: Iterable[Sequence[int]], held_out: Iterable[Sequence[int]], where: str = "zoo") -> None:
    """ConfigError if any request (or zoo row's forgotten classes) is a held-out set: those sets exist to
    measure generalisation and must never be trained on."""
    held = {tuple(sorted(h)) for h in held_out}
    bad = sorted({tuple(sorted(r)) for r in requests} & held)
    if bad:
        raise ConfigError(f"the {where} holds the held-out class sets {[list(b) for b in bad]}; held-out sets never "
                          "enter the zoo or the hypernetwork's training: rebuild the zoo with these zoo params")


def held_out_rows(forget_mask: torch.Tensor, held_out: Iterable[Sequence[int]]) -> torch.Tensor:
    """Rows [N] bool whose forget mask is exactly one of the held-out sets."""
    hit = torch.zeros(forget_mask.shape[0], dtype=torch.bool)
    for h in held_out:
        target = torch.zeros(forget_mask.shape[1])
        target[list(h)] = 1.0
        hit |= (forget_mask == target).all(1)
    return hit
