"""The KServe / TF-Serving v1 protocol: what a request body must hold, and the bodies the endpoint answers.

    POST /v1/models/<name>:predict   {"instances": [...]}  ->  {"predictions": [...], "model_name", "model_version"}
    GET  /v1/models/<name>           -> {"name", "ready", "model_version", "model_version_status": [...]}
A bad request gets {"error": "<what is wrong, naming the field or row>"} with a 4xx status.
"""

from __future__ import annotations

import json
from typing import Any

import orjson

PREDICT_SUFFIX = ":predict"
MODELS_PREFIX = "/v1/models"


class BadRequest(ValueError):
    """A request the endpoint refuses: the message names the field or row; `status` is the HTTP 4xx code."""

    def __init__(self, message: str, status: int = 400):
        super().__init__(message)
        self.status = status


def predict_route(name: str) -> str:
    return f"{MODELS_PREFIX}/{name}{PREDICT_SUFFIX}"


def parse_instances(body: bytes) -> list[Any]:
    """The `instances` list of a predict request body; BadRequest naming what is missing or malformed.

    orjson first (a 256-row body decodes several times faster); what it refuses goes through the standard
    library, which also takes what Python's json.dumps writes but JSON does not have (NaN, Infinity) and
    words its errors as before."""
    try:
        payload = orjson.loads(body)
    except orjson.JSONDecodeError:
        try:
            payload = json.loads(body)
        except (UnicodeDecodeError, json.JSONDecodeError) as err:
            raise BadRequest(f'request body: not JSON ({err}); expected {{"instances": [...]}}') from None
    if not isinstance(payload, dict) or "instances" not in payload:
        raise BadRequest('request body: missing "instances" (a list of inputs, one per prediction)')
    instances = payload["instances"]
    if not isinstance(instances, list) or not instances:
        raise BadRequest(f'request body: "instances" must be a non-empty list, got {json.dumps(instances)[:80]}')
    return instances


def to_json(body: dict[str, Any]) -> bytes:
    """A response body as JSON bytes (orjson: NaN and infinities become null, NumPy scalars and arrays are taken)."""
    return orjson.dumps(body, option=orjson.OPT_SERIALIZE_NUMPY)


def predict_response(name: str, version: int, predictions: list[Any]) -> dict[str, Any]:
    return {"predictions": predictions, "model_name": name, "model_version": str(version)}


def status_response(name: str, version: int | None, ref: str | None) -> dict[str, Any]:
    """Readiness in TF-Serving's shape (model_version_status), plus the plain fields KServe's v1 clients read."""
    ready = version is not None
    return {
        "name": name,
        "ready": ready,
        "model_version": str(version) if ready else None,
        "ref": ref,
        "model_version_status": [
            {"version": str(version) if ready else "", "state": "AVAILABLE" if ready else "LOADING"}
        ],
    }


def error_body(message: str) -> dict[str, str]:
    return {"error": message}
