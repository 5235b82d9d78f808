"""How the S3 registry reads S3's answers: a lost conditional write, a missing key, and the retry backoff."""

from __future__ import annotations

import random
import time

from botocore.exceptions import ClientError

# S3 answers a lost conditional write with 412; 409 means a concurrent conditional
# write to the same key was in flight (retry); NoSuchKey for If-Match on a deleted key.
CONFLICT_CODES = {"PreconditionFailed", "ConditionalRequestConflict", "NoSuchKey", "412", "409"}
MAX_ATTEMPTS = 50


def error_code(err: ClientError) -> str:
    return str(err.response.get("Error", {}).get("Code", ""))


def is_conflict(err: ClientError) -> bool:
    status = err.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
    return error_code(err) in CONFLICT_CODES or status in (409, 412)


def is_missing(err: ClientError) -> bool:
    return error_code(err) in ("NoSuchKey", "404", "NotFound")


def backoff(attempt: int) -> None:
    time.sleep(random.uniform(0, min(1.0, 0.01 * 2**attempt)))  # full jitter, capped
