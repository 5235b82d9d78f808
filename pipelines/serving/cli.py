"""`python -m pipelines.serving NAME[:VERSION|:ALIAS] ...` (make serve-model): serve registered models over HTTP.

Starts a local Ray instance (or joins RAY_ADDRESS), starts Ray Serve's HTTP proxy on --host/--port, deploys
one application per model and the model index, then logs each version change until Ctrl-C or SIGTERM, which
stop what it started: the Serve applications and controller, and the Ray instance if it started one.
"""

from __future__ import annotations

import argparse
import os
import signal
import socket
import sys
import time

from pipelines.errors import PipelineInputError, cli_entry
from pipelines.registry.errors import RegistryError
from pipelines.serving.protocol import MODELS_PREFIX, predict_route

DEFAULT_ALIAS = "production"
# Ray Serve's per-request path, set on a Ray instance this process starts (its proxy, controller and replicas
# inherit the environment), each only where the user has not set it. Measured on 2 cores (BENCHMARKS.md,
# "Issue 21"): the proxy and the replica each spent ~4 ms of CPU on a one-row request, more than the model.
SERVE_ENV = {
    # The proxy sends a request to the replica over gRPC instead of as pickled ASGI messages through Ray actor
    # calls (Ray's own "throughput optimized" setting); the handles of the index and of this process follow.
    "RAY_SERVE_USE_GRPC_BY_DEFAULT": "1",
    "RAY_SERVE_PROXY_USE_GRPC": "1",
    # The replica runs our handler on its own event loop instead of handing each request to a second thread.
    "RAY_SERVE_RUN_USER_CODE_IN_SEPARATE_THREAD": "0",
    # How long a new proxy may take to start (a process importing Serve, uvicorn and gRPC) before the controller
    # kills it as unhealthy; Ray's 5 s is missed on a busy 2-core machine, and serve.start then fails outright.
    "RAY_SERVE_PROXY_READY_CHECK_TIMEOUT_S": "30",
}
QUIET = {"enable_access_log": False}  # a log line per request costs more than a small model's forward pass


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m pipelines.serving", description=__doc__.split("\n\n")[0])
    parser.add_argument("models", nargs="+", help=f"NAME[:VERSION|:ALIAS] (default alias: {DEFAULT_ALIAS})")
    parser.add_argument("--registry", default="data/registry", help="registry path or s3://bucket/prefix")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--replicas", type=int, default=1, help="replicas per model")
    parser.add_argument("--cpus", type=float, default=0.25, help="CPUs Ray reserves per replica")
    parser.add_argument("--threads", type=int, default=1, help="torch threads per replica")
    parser.add_argument("--poll", type=float, default=10.0, help="seconds between alias checks (0: never)")
    parser.add_argument("--max-batch-size", type=int, default=64, help="requests one forward pass takes at most")
    parser.add_argument("--batch-wait-ms", type=float, default=10.0, help="how long a batch waits to fill")
    args = parser.parse_args(argv)
    if args.replicas < 1:
        parser.error("--replicas must be at least 1")
    return args


def with_alias(ref: str) -> str:
    return ref if ":" in ref else f"{ref}:{DEFAULT_ALIAS}"


def check_models(refs: list[str], registry: str) -> dict[str, int]:
    """Each model's name -> the version it names now; a clear error (exit 2) before Ray starts otherwise."""
    from pipelines.serving.model import resolve_version

    versions: dict[str, int] = {}
    for ref in refs:
        name = ref.partition(":")[0]
        if name in versions:
            raise PipelineInputError(f"{ref}: model {name!r} is given twice; serve one version of each model")
        try:
            versions[name] = resolve_version(ref, registry)
        except RegistryError as err:
            raise PipelineInputError(f"{ref}: {err}") from None
    return versions


def check_port(host: str, port: int) -> None:
    with socket.socket() as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError as err:
            raise PipelineInputError(f"--host {host} --port {port}: cannot listen there ({err.strerror})") from None


class Stopped(BaseException):
    """SIGINT or SIGTERM: unwind to the shutdown (a BaseException, so no `except Exception` swallows it)."""

    def __init__(self, signum: int):
        super().__init__(signum)
        self.signum = signum


def stop_on_signals() -> None:
    """SIGINT/SIGTERM raise Stopped in the main thread; a second one while stopping is only reported.

    Called again after Ray starts: ray.init installs its own SIGTERM handler (a stack dump and exit)."""
    stopping: list[int] = []

    def handler(signum: int, frame) -> None:
        if stopping:
            print(f"serve: {signal.Signals(signum).name}: already stopping", flush=True)
            return
        stopping.append(signum)
        raise Stopped(signum)

    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, handler)


@cli_entry
def main(argv: list[str] | None = None) -> None:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    refs = [with_alias(r) for r in args.models]
    versions = check_models(refs, args.registry)
    joined = bool(os.environ.get("RAY_ADDRESS"))
    if not joined:
        check_port(args.host, args.port)
    stop_on_signals()
    code = 0
    try:
        serve_models(refs, versions, args)
    except Stopped as stop:
        print(f"serve: {signal.Signals(stop.signum).name}: stopping", flush=True)
        code = 128 + stop.signum  # 130 after Ctrl-C, 143 after SIGTERM, as a shell reports them
    finally:
        shutdown(started_ray=not joined, apps=[ref.partition(":")[0] for ref in refs])
    raise SystemExit(code)


def serve_env() -> dict[str, str]:
    """SERVE_ENV, the user's own values winning."""
    return {k: os.environ.get(k, v) for k, v in SERVE_ENV.items()}


def serve_models(refs: list[str], versions: dict[str, int], args: argparse.Namespace) -> None:
    from ray import serve

    from pipelines.serving.app import INDEX_APP, index_app, model_app
    from pipelines.training.cluster import ensure_ray

    started = time.perf_counter()
    if not os.environ.get("RAY_ADDRESS"):  # a cluster joined keeps its own settings (set them on its nodes)
        os.environ.update(serve_env())
    ensure_ray()
    stop_on_signals()
    serve.start(http_options={"host": args.host, "port": args.port}, logging_config=QUIET)  # the proxy's log
    options = {
        "registry": args.registry,
        "replicas": args.replicas,
        "cpus": args.cpus,
        "threads": args.threads,
        "poll_s": args.poll,
        "max_batch_size": args.max_batch_size,
        "batch_wait_s": args.batch_wait_ms / 1000,
    }
    targets = [
        serve.RunTarget(model_app({"ref": ref, **options}), name, predict_route(name), QUIET)
        for ref, name in ((ref, ref.partition(":")[0]) for ref in refs)
    ]
    targets.append(serve.RunTarget(index_app({"models": list(versions)}), INDEX_APP, MODELS_PREFIX, QUIET))
    serve.run_many(targets)  # the applications start side by side
    base = f"http://{args.host}:{args.port}"
    for ref in refs:
        name = ref.partition(":")[0]
        print(f"serve: {name} v{versions[name]} ({ref}) at POST {base}{predict_route(name)}", flush=True)
    print(f"serve: ready in {time.perf_counter() - started:.1f} s; Ctrl-C stops", flush=True)
    watch_versions(list(versions), versions, max(args.poll, 1.0))


def watch_versions(names: list[str], versions: dict[str, int], every: float) -> None:
    """Say when a model's replicas serve another version (an alias moved); runs until interrupted."""
    from ray import serve

    served = dict(versions)
    while True:
        time.sleep(every)
        for name in names:
            try:
                now = int(serve.get_app_handle(name).status.remote().result(timeout_s=30)["model_version"])
            except Exception as err:  # a replica restarting: say so, keep watching
                print(f"serve: {name}: no status ({type(err).__name__}: {err})", flush=True)
                continue
            if now != served[name]:
                print(f"serve: {name}: now serving v{now} (was v{served[name]})", flush=True)
                served[name] = now


def shutdown(started_ray: bool, apps: list[str]) -> None:
    """On the Ray instance this process started: stop Serve (applications, controller, proxy) and Ray.
    On a cluster it joined (RAY_ADDRESS): delete only its own applications; Serve and Ray stay for others."""
    import ray
    from ray import serve

    from pipelines.serving.app import INDEX_APP

    if ray.is_initialized():
        if started_ray:
            serve.shutdown()
            ray.shutdown()
        else:
            for name in [*apps, INDEX_APP]:
                serve.delete(name)
    print("serve: stopped", flush=True)
