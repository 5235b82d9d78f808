"""Two error types a stage can end with, and the CLI wrapper that turns them into exit codes.

Exit 2: bad input (params or data); running it again cannot help.
Exit 75 (EX_TEMPFAIL): something the stage needs is not available now: a source
(network error, HTTP 5xx, an S3 endpoint that did not answer) or the workspace (a
pipeline run holds it); the Prefect flow retries such a stage.
Exit 1: damaged data: bytes on disk differ from the md5 dvc.lock records (pipelines/integrity.py).
"""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")
EXIT_BAD_INPUT = 2
EXIT_UNAVAILABLE = 75  # sysexits.h EX_TEMPFAIL: temporary failure, try again later
EXIT_DAMAGED = 1


class PipelineInputError(ValueError):
    """Bad params or bad data: the message names the file, key or row."""


class Unavailable(RuntimeError):
    """Something a stage needs is not available now; a later attempt may work (exit 75)."""


class DamagedData(RuntimeError):
    """Bytes on disk differ from the md5 dvc.lock records for them: the message names the file and how to recover."""


class SourceUnavailable(Unavailable):
    """A data source that failed in a way a later attempt may not: the message names the source."""


def error_text(message: str) -> str:
    """`message` for stderr with one `error: ` per error line: its own, a tool's `ERROR:`, and the last line.

    A failure's message may carry the failed process's error lines above its own last line (a stage's
    `error: ...`, DVC's `ERROR: ...`); other lines (a traceback's context) are printed as they are.
    """
    lines = message.splitlines() or [""]
    out = []
    for i, line in enumerate(lines):
        bare = line[len("error:") :].strip() if line.lower().startswith("error:") else line
        out.append(f"error: {bare}" if bare != line or i == len(lines) - 1 else line)
    return "\n".join(out)


def cli_entry(main: Callable[[], T]) -> Callable[[], T]:
    """Wrap a stage's main(): bad input prints one clear line and exits 2, something unavailable exits 75,
    damaged data exits 1."""

    @functools.wraps(main)
    def wrapper() -> T:
        try:
            return main()
        except PipelineInputError as err:
            print(error_text(str(err)), file=sys.stderr)
            raise SystemExit(EXIT_BAD_INPUT) from None
        except Unavailable as err:
            print(error_text(f"{err} (temporary: trying again may work)"), file=sys.stderr)
            raise SystemExit(EXIT_UNAVAILABLE) from None
        except DamagedData as err:
            print(error_text(str(err)), file=sys.stderr)
            raise SystemExit(EXIT_DAMAGED) from None

    return wrapper
