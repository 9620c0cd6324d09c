"""Progress for long loops: a bar on a terminal, a few plain log lines in CI."""

from __future__ import annotations

import logging
import sys
from collections.abc import Iterable, Iterator
from typing import TypeVar

from tqdm import tqdm

T = TypeVar("T")
log = logging.getLogger("hyperforget")


def progress(items: Iterable[T], desc: str, total: int | None = None, every: int = 10) -> Iterator[T]:
    """Yield from `items`; draw a bar on a TTY, otherwise log about `every` evenly spaced lines."""
    if sys.stderr.isatty():
        yield from tqdm(items, desc=desc, total=total, leave=False, dynamic_ncols=True)
        return
    total = total if total is not None else (len(items) if hasattr(items, "__len__") else None)
    step = max(1, (total or every) // every)
    for i, item in enumerate(items, 1):
        if total and (i % step == 0 or i == total):
            log.info("%s: %d/%d", desc, i, total)
        yield item
