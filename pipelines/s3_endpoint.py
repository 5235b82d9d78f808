"""S3 clients that give up in bounded time, with one line that names the endpoint and the operation.

botocore retries a request that got no answer (connection refused or reset, a timeout) or a
temporary error (5xx, throttling) with its own backoff. Its defaults can keep a dead endpoint
busy for half a minute per call and then end in a long traceback. A client made here uses
botocore's "standard" retries with a short connect timeout and a few attempts, and raises
`pipelines.errors.Unavailable` (a stage exits 75, the flow retries it) with one line:

    S3 endpoint http://127.0.0.1:9000 did not answer (PutObject s3://bucket/key) after 4 attempts in 9 s

Knobs (environment): AWS_MAX_ATTEMPTS and AWS_RETRY_MODE (botocore's own names; defaults 4 and
standard), DL_S3_CONNECT_TIMEOUT and DL_S3_READ_TIMEOUT (seconds; defaults 5 and 60).
The conversion is done in botocore's own event hooks, so every call of the client (paginators and
the transfer manager's downloads included) is covered and callers keep their code as it is.
"""

from __future__ import annotations

import os
import time
from typing import Any

from pipelines.errors import Unavailable

DEFAULT_ATTEMPTS = 4
DEFAULT_CONNECT_TIMEOUT_S = 5.0
DEFAULT_READ_TIMEOUT_S = 60.0
# Answers that mean "not now" rather than "no": S3's 5xx and throttling codes.
TEMPORARY_CODES = {
    "SlowDown",
    "Throttling",
    "ThrottlingException",
    "RequestTimeout",
    "ServiceUnavailable",
    "InternalError",
}
_STARTED = "dl_s3_started"  # keys this module keeps in botocore's per-call context
_TARGET = "dl_s3_target"


def max_attempts() -> int:
    return max(1, int(os.environ.get("AWS_MAX_ATTEMPTS") or DEFAULT_ATTEMPTS))


def client_config(**extra: Any) -> Any:
    """A botocore Config with bounded retries and timeouts (plus `extra`, e.g. s3={'addressing_style': 'path'})."""
    from botocore.config import Config

    return Config(
        retries={"mode": os.environ.get("AWS_RETRY_MODE") or "standard", "total_max_attempts": max_attempts()},
        connect_timeout=float(os.environ.get("DL_S3_CONNECT_TIMEOUT") or DEFAULT_CONNECT_TIMEOUT_S),
        read_timeout=float(os.environ.get("DL_S3_READ_TIMEOUT") or DEFAULT_READ_TIMEOUT_S),
        **extra,
    )


def s3_client(endpoint_url: str | None = None, **config: Any) -> Any:
    """A boto3 S3 client (credentials from the standard AWS chain) that raises Unavailable on an outage."""
    import boto3

    client = boto3.session.Session().client("s3", endpoint_url=endpoint_url, config=client_config(**config))
    name_outages(client)
    return client


def name_outages(client: Any) -> None:
    """Make `client` raise Unavailable, naming its endpoint and the operation, once botocore's retries are spent."""
    events = client.meta.events
    events.register("provide-client-params.s3", _remember_call)
    events.register("after-call-error.s3", lambda exception, context, **_: _no_answer(client, exception, context))
    events.register("after-call.s3", lambda http_response, parsed, context, **_: _bad_answer(client, parsed, context))


def _remember_call(params: dict[str, Any], model: Any, context: dict[str, Any], **_: Any) -> None:
    target = f"s3://{params.get('Bucket', '')}/{params.get('Key') or params.get('Prefix') or ''}".rstrip("/")
    context[_STARTED], context[_TARGET] = time.monotonic(), f"{model.name} {target}"


def _no_answer(client: Any, exception: BaseException, context: dict[str, Any]) -> None:
    """after-call-error: the request never got an answer (refused, reset, timed out)."""
    from botocore.exceptions import ConnectionClosedError, ConnectionError, ReadTimeoutError, ResponseStreamingError

    if isinstance(exception, (ConnectionError, ConnectionClosedError, ReadTimeoutError, ResponseStreamingError)):
        raise Unavailable(_line(client, "did not answer", context)) from exception


def _bad_answer(client: Any, parsed: dict[str, Any], context: dict[str, Any]) -> None:
    """after-call: an answer that says "not now" (5xx, throttling) even after the retries."""
    status = parsed.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0
    code = str(parsed.get("Error", {}).get("Code", ""))
    if status >= 500 or code in TEMPORARY_CODES:
        raise Unavailable(_line(client, f"answered {status} {code}".rstrip(), context))


def _line(client: Any, what: str, context: dict[str, Any]) -> str:
    attempts = context.get("retries", {}).get("attempt") or 1
    seconds = time.monotonic() - context.get(_STARTED, time.monotonic())
    return (
        f"S3 endpoint {client.meta.endpoint_url} {what} ({context.get(_TARGET, 'S3')}) "
        f"after {attempts} attempt{'s' if attempts != 1 else ''} in {seconds:.0f} s"
    )
