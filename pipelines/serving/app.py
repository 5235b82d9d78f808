"""The Ray Serve side: one application per served model, and the model index in front of them.

    /v1/models/<name>:predict   the model's own application (its route), batched with @serve.batch
    /v1/models, /v1/models/<name>   the index: readiness and the version each model serves; a 404 naming
                                the served models for any other name
Ray Serve routes by path prefix and a prefix only matches up to a '/', so `<name>:predict` is the model
application's whole route: a predict request goes from the proxy straight to a model replica, no extra hop.

Each replica polls the registry (every `poll_s`) when it serves an alias or `latest`; when the alias moved,
it loads the new version beside the old one and swaps it in between batches: no restart, no failed request.
`model_app` and `index_app` are also the import paths a KubeRay RayService names (infra/kuberay/rayservice.yaml).
"""

from __future__ import annotations

import asyncio
import logging
import threading
from typing import Any

from ray import serve
from ray.serve.exceptions import RayServeException
from ray.serve.handle import DeploymentHandle
from starlette.requests import Request
from starlette.responses import Response

from pipelines.serving.model import ServedModel, resolve_version
from pipelines.serving.protocol import (
    MODELS_PREFIX,
    BadRequest,
    error_body,
    parse_instances,
    predict_response,
    status_response,
    to_json,
)

logger = logging.getLogger("ray.serve")
INDEX_APP = "models-index"
DEFAULTS = {"poll_s": 10.0, "max_batch_size": 64, "batch_wait_s": 0.01, "threads": 1}
# How long the index waits for a model's replica to say which version it serves. A model still loading (its
# replica not started yet) is reported as LOADING after this, instead of holding the readiness probe open.
STATUS_WAIT_S = 2.0


def json_response(body: dict[str, Any], status: int = 200) -> Response:
    return Response(to_json(body), status, media_type="application/json")


def fixed_version(ref: str) -> bool:
    """NAME:3 / NAME:v3 never moves; an alias or the latest version may."""
    spec = ref.partition(":")[2]
    return spec.removeprefix("v").isdigit()


@serve.deployment(ray_actor_options={"num_cpus": 0.25}, max_ongoing_requests=256)
class ModelServer:
    def __init__(self, ref: str, registry: str, options: dict[str, Any] | None = None):
        import torch

        opts = DEFAULTS | (options or {})
        torch.set_num_threads(int(opts["threads"]))  # one request's rows are few: more threads cost more than they give
        self.ref, self.registry, self.poll_s = ref, registry, float(opts["poll_s"])
        self.model = ServedModel.load(ref, registry)
        self.predict_batch.set_max_batch_size(int(opts["max_batch_size"]))
        self.predict_batch.set_batch_wait_timeout_s(float(opts["batch_wait_s"]))
        logger.info(f"{self.model.name}: serving v{self.model.version} ({ref})")
        self._stop = threading.Event()
        self.counts = {"requests": 0, "batches": 0}  # this replica's, since it started (GET /v1/models/<name>)
        if not fixed_version(ref) and self.poll_s > 0:
            threading.Thread(target=self._poll, name="alias-poll", daemon=True).start()

    def _poll(self) -> None:
        while not self._stop.wait(self.poll_s):
            try:
                version = resolve_version(self.ref, self.registry)
                if version != self.model.version:
                    fresh = ServedModel.load(f"{self.model.name}:{version}", self.registry)
                    old, self.model = self.model, fresh  # one reference swap: a batch uses one model throughout
                    logger.warning(f"{self.ref} moved: serving {fresh.name} v{fresh.version} (was v{old.version})")
            except Exception as err:  # a registry that did not answer, a damaged new version: keep serving the old
                logger.warning(f"{self.ref}: could not check or load a new version ({type(err).__name__}: {err})")

    def __del__(self) -> None:
        self._stop.set()

    def status(self) -> dict[str, Any]:
        return status_response(self.model.name, self.model.version, self.ref) | {"replica": dict(self.counts)}

    async def __call__(self, request: Request) -> Response:
        if request.method != "POST":
            return json_response(error_body(f'use POST {request.url.path} with {{"instances": [...]}}'), 405)
        try:
            instances = parse_instances(await request.body())
            name, version, result = await self.predict_batch(instances)
            if isinstance(result, BadRequest):
                raise result
        except BadRequest as err:
            return json_response(error_body(str(err)), err.status)
        return json_response(predict_response(name, version, result))

    @serve.batch(max_batch_size=DEFAULTS["max_batch_size"], batch_wait_timeout_s=DEFAULTS["batch_wait_s"])
    async def predict_batch(self, requests: list[list[Any]]) -> list[tuple[str, int, Any]]:
        model = self.model
        self.counts["requests"] += len(requests)
        self.counts["batches"] += 1
        # In a thread: the replica's event loop keeps taking requests (the next batch) while this one computes.
        results = await asyncio.to_thread(model.predict_requests, requests)
        return [(model.name, model.version, r) for r in results]


@serve.deployment(ray_actor_options={"num_cpus": 0})
class ModelIndex:
    def __init__(self, models: list[str]):
        self.models = list(models)
        self.handles: dict[str, DeploymentHandle] = {}

    async def __call__(self, request: Request) -> Response:
        rest = request.url.path[len(MODELS_PREFIX) :].strip("/")
        if not rest and request.method == "GET":
            return json_response({"models": [await self._status(name) for name in self.models]})
        name, _, verb = rest.partition(":")
        if name not in self.models:
            served = ", ".join(self.models)
            return json_response(error_body(f"no model {name!r} is served here; served: {served}"), 404)
        if verb or request.method != "GET":
            return json_response(
                error_body(f"use POST {MODELS_PREFIX}/{name}:predict or GET {MODELS_PREFIX}/{name}"), 405
            )
        return json_response(await self._status(name))

    async def _status(self, name: str) -> dict[str, Any]:
        try:
            return await asyncio.wait_for(self._replica_status(name), STATUS_WAIT_S)
        except (TimeoutError, RayServeException):  # not deployed yet, or its replica still starting
            return status_response(name, None, None)

    async def _replica_status(self, name: str) -> dict[str, Any]:
        if name not in self.handles:  # get_app_handle asks the controller and waits: not on the event loop
            self.handles[name] = await asyncio.to_thread(serve.get_app_handle, name)
        return await self.handles[name].status.remote()


def model_app(args: dict[str, Any]) -> serve.Application:
    """{"ref": NAME[:VERSION|:ALIAS], "registry": path or s3://, "replicas": N, "cpus": per replica, ...}."""
    server = ModelServer.options(
        num_replicas=int(args.get("replicas", 1)),
        ray_actor_options={"num_cpus": float(args.get("cpus", 0.25))},
    )
    options = {k: args[k] for k in DEFAULTS if k in args}
    return server.bind(args["ref"], args.get("registry", "data/registry"), options)


def index_app(args: dict[str, Any]) -> serve.Application:
    """{"models": [name, ...]}: the names of the model applications (each application is named as its model)."""
    return ModelIndex.bind(list(args["models"]))
