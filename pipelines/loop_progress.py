"""A line now and then from a long loop outside training (checking thousands of photos, scoring many
candidates), so a stage that works for minutes says how far it is. Quiet when the loop is quick."""

from __future__ import annotations

import sys
import time
from collections.abc import Iterable, Iterator
from typing import TypeVar

T = TypeVar("T")
EVERY_SECONDS = 5.0


def reported(items: Iterable[T], what: str, total: int | None = None, every: float = EVERY_SECONDS) -> Iterator[T]:
    """Yield `items`; every `every` seconds print `<what>: done/total (pct%), ~N s left`."""
    total = total if total is not None else len(items) if hasattr(items, "__len__") else None  # type: ignore[arg-type]
    started = last = time.monotonic()
    for done, item in enumerate(items, start=1):
        yield item
        now = time.monotonic()
        if now - last >= every and (total is None or done < total):
            last = now
            print(f"{what}: {_so_far(done, total, now - started)}", file=sys.stdout, flush=True)


def _so_far(done: int, total: int | None, elapsed: float) -> str:
    if not total:
        return f"{done} done in {elapsed:.0f} s"
    left = elapsed / done * (total - done)
    return f"{done}/{total} ({100 * done // total}%), ~{left:.0f} s left"
