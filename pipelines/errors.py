"""One error type for bad input, and the CLI wrapper that turns it into exit 2."""
from __future__ import annotations

import functools
import sys
from typing import Callable, TypeVar

T = TypeVar("T")


class PipelineInputError(ValueError):
    """Bad params or bad data: the message names the file, key or row."""


def cli_entry(main: Callable[[], T]) -> Callable[[], T]:
    """Wrap a stage's main(): bad input prints one clear line and exits 2."""

    @functools.wraps(main)
    def wrapper() -> T:
        try:
            return main()
        except PipelineInputError as err:
            print(f"error: {err}", file=sys.stderr)
            raise SystemExit(2) from None

    return wrapper
