"""`make serve`: a local Prefect server and the pipeline's deployments, ready to run from the UI.

    python -m pipelines.orchestration.serve [--workdir .] [--port 4200] [--cron "0 2 * * *"] [--timezone UTC]

Starts `prefect server start` on 127.0.0.1:4200 (its SQLite database is
$PREFECT_HOME/prefect.db, ~/.prefect by default; PREFECT_API_DATABASE_CONNECTION_URL
points it at PostgreSQL) unless PREFECT_API_URL names a server already, or one
already answers on that port. Then it serves, from this process, these deployments
of the `training-pipeline` flow, all on the workspace `--workdir`:

    training-pipeline/nightly            every dataset of params.yaml, on a cron schedule (02:00 UTC)
    training-pipeline/relu-vs-sigmoid    ready-made experiments: one dataset's chain each
    training-pipeline/digits-cnn
    training-pipeline/text-next-word
    training-pipeline/sunspots-forecast
    training-pipeline/on-new-data        started by the event `dl-pipeline.source.changed`
                                         (python -m pipelines.orchestration.watch emits it)

The UI shows each deployment's parameters as a form built from the typed config
(pipelines/config/) and the server refuses a run whose parameters do not fit it.
Runs execute in subprocesses of this one; stopping it (Ctrl-C) stops the server it
started and pauses the schedules.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")

from pipelines.orchestration.watch import SOURCE_CHANGED  # noqa: E402  (the event pipelines.orchestration.watch emits)

NIGHTLY_CRON = "0 2 * * *"
# The trigger's `datasets`: the event's dataset, rendered by Prefect when the event arrives
# (the same explicit Jinja form as prefect.yaml's, where a bare "{{ ... }}" list item would not survive).
DATASET_FROM_EVENT = {"__prefect_kind": "jinja", "template": "{{ event.payload.dataset }}"}
# Ready-made experiments: deployment name -> (dataset, what it shows).
PRESETS = {
    "relu-vs-sigmoid": ("tabular", "FNN with ReLU vs FNN with Sigmoid on a table (breast cancer, binary)"),
    "digits-cnn": ("digits", "A CNN on 8x8 handwritten digits (10 classes), narrow vs wide"),
    "text-next-word": ("text", "LSTM vs GRU next-word prediction on Python's documentation"),
    "sunspots-forecast": ("series", "LSTM vs GRU forecasting yearly sunspot numbers"),
}


def build_deployments(workdir: str | Path, cron: str = NIGHTLY_CRON, timezone: str = "UTC") -> list:
    """The RunnerDeployments that `serve` registers (presets only for datasets params.yaml has)."""
    from prefect.events import DeploymentEventTrigger
    from prefect.schedules import Cron

    from pipelines.config import load_params
    from pipelines.orchestration.flow import training_pipeline

    root = Path(workdir).resolve()
    current = load_params(root / "params.yaml")
    # The presets' forms start from params.yaml as it is now (the nightly run reads the file when it runs).
    snapshot = current.model_dump(mode="json")
    deployments = [
        training_pipeline.to_deployment(
            "nightly",
            schedule=Cron(cron, timezone=timezone),
            description=f"Retrain every dataset of params.yaml in {root} on the cron schedule {cron} ({timezone}).",
            tags=["nightly"],
            parameters={"workdir": str(root)},
        )
    ]
    for name, (dataset, about) in PRESETS.items():
        if dataset in current.datasets:
            deployments.append(
                training_pipeline.to_deployment(
                    name,
                    description=f"{about}: the `{dataset}` chain of {root}. The form starts from params.yaml "
                    f"as it was when serving started; a run writes the params it was given to params.yaml.",
                    tags=["experiment"],
                    parameters={"params": snapshot, "datasets": [dataset], "workdir": str(root)},
                )
            )
    deployments.append(
        training_pipeline.to_deployment(
            "on-new-data",
            description=(
                "Ingest a dataset again when `python -m pipelines.orchestration.watch` "
                f"reports its source changed ({SOURCE_CHANGED})."
            ),
            tags=["event"],
            parameters={"workdir": str(root)},
            triggers=[
                DeploymentEventTrigger(
                    name="new data at an ingest source",
                    expect={SOURCE_CHANGED},
                    match={"prefect.resource.id": "dl-pipeline.dataset.*"},
                    parameters={"datasets": [DATASET_FROM_EVENT], "refresh": True, "workdir": str(root)},
                )
            ],
        )
    )
    return deployments


def healthy(api_url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{api_url}/health", timeout=2) as response:
            return response.status == 200
    except (urllib.error.URLError, OSError):
        return False


def start_server(host: str, port: int, timeout: float = 180) -> tuple[subprocess.Popen | None, str]:
    """Start `prefect server start` (or find one running) and wait until its API answers."""
    api_url = f"http://{host}:{port}/api"
    if healthy(api_url):
        print(f"A Prefect server already answers at {api_url}: using it.")
        return None, api_url
    env = dict(os.environ)
    # The UI asks the server where its API is: tell it the host and port it really has.
    env.update(
        PREFECT_SERVER_API_HOST=host, PREFECT_SERVER_API_PORT=str(port), PREFECT_SERVER_ANALYTICS_ENABLED="false"
    )
    prefect = str(Path(sys.executable).parent / "prefect")
    database = (
        env.get("PREFECT_API_DATABASE_CONNECTION_URL")
        or f"SQLite at {env.get('PREFECT_HOME', '~/.prefect')}/prefect.db"
    )
    print(f"Starting the Prefect server on {host}:{port} ({database.split('@')[-1]}) ...")
    server = subprocess.Popen([prefect, "server", "start", "--host", host, "--port", str(port)], env=env)
    deadline = time.monotonic() + timeout
    while not healthy(api_url):
        if server.poll() is not None:
            raise SystemExit(f"error: the Prefect server exited with {server.returncode} (is port {port} taken?)")
        if time.monotonic() > deadline:
            server.terminate()
            raise SystemExit(f"error: the Prefect server did not answer at {api_url} within {timeout:.0f}s")
        time.sleep(0.5)
    return server, api_url


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m pipelines.orchestration.serve", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--workdir", default=".", help="the project (DVC workspace) the runs use")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=4200)
    parser.add_argument(
        "--cron", default=NIGHTLY_CRON, help="schedule of the nightly deployment (default: %(default)s)"
    )
    parser.add_argument("--timezone", default="UTC", help="time zone of --cron (default: %(default)s)")
    args = parser.parse_args(argv)

    server = None
    api_url = os.environ.get("PREFECT_API_URL")
    if api_url:
        print(f"Using the Prefect server at PREFECT_API_URL={api_url}")
    else:
        server, api_url = start_server(args.host, args.port)
        os.environ["PREFECT_API_URL"] = api_url  # also for the flow-run subprocesses
    ui_url = api_url.removesuffix("/api")
    try:
        from prefect import serve
        from prefect.settings import PREFECT_API_URL, PREFECT_UI_URL, temporary_settings

        with temporary_settings(updates={PREFECT_API_URL: api_url, PREFECT_UI_URL: ui_url}):
            deployments = build_deployments(args.workdir, args.cron, args.timezone)
            print(
                f"Serving {len(deployments)} deployments of training-pipeline on {Path(args.workdir).resolve()}; "
                f"UI: {ui_url}/deployments  (Ctrl-C stops)"
            )
            serve(*deployments)
    except KeyboardInterrupt:
        pass
    finally:
        if server is not None and server.poll() is None:
            server.terminate()
            try:
                server.wait(timeout=20)
            except subprocess.TimeoutExpired:
                server.kill()
    return 0


if __name__ == "__main__":
    sys.exit(main())
