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
Runs execute in subprocesses of this one and send a heartbeat every --heartbeat
seconds; the automation of pipelines/orchestration/zombies.py (created on the server
once) marks a run Crashed when its heartbeats stop for --crashed-after seconds (its
process or this one died, or the server did). Stopping this (Ctrl-C, SIGTERM) pauses
the schedules, then stops the server it started, within SHUTDOWN_SECONDS.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")

from pipelines.errors import EXIT_BAD_INPUT, EXIT_UNAVAILABLE  # noqa: E402
from pipelines.orchestration.prefect_server import start_server, stop_server  # noqa: E402
from pipelines.orchestration.watch import SOURCE_CHANGED  # noqa: E402  (the event pipelines.orchestration.watch emits)
from pipelines.orchestration.zombies import (  # noqa: E402
    HEARTBEAT_SECONDS,
    MIN_HEARTBEAT_SECONDS,
    MISSED_HEARTBEATS,
    default_after,
    describe,
    ensure_zombie_automation,
)

NIGHTLY_CRON = "0 2 * * *"
SHUTDOWN_SECONDS = 8  # from Ctrl-C or SIGTERM to exit, at most
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


class Shutdown:
    """Ctrl-C or SIGTERM: the runner stops (pausing the schedules), then the server; all within SHUTDOWN_SECONDS.

    Past the deadline (the API did not answer: Prefect's client retries for over a minute)
    the server is stopped and the process exits 75 at once, the schedules left as they were.
    """

    def __init__(self, api_url: str, server: subprocess.Popen | None, seconds: float = SHUTDOWN_SECONDS) -> None:
        self.api_url, self.server, self.seconds = api_url, server, seconds
        self.deadline: float | None = None
        self.task: asyncio.Task | None = None

    def on_signal(self, signum: int, frame: object = None) -> None:
        if self.deadline is not None:
            return  # already stopping: the deadline bounds it
        self.deadline = time.monotonic() + self.seconds
        timer = threading.Timer(self.seconds - 1, self._expire)
        timer.daemon = True
        timer.start()
        if self.task is None:
            raise KeyboardInterrupt  # still starting
        # As asyncio.run does on Ctrl-C: cancel the runner, which pauses the schedules on its way out.
        self.task.get_loop().call_soon_threadsafe(self.task.cancel)

    async def serve(self, runner) -> None:
        self.task = asyncio.current_task()
        await runner.start()

    def _expire(self) -> None:
        print(
            f"error: {self.api_url}: no answer while pausing the schedules; stopped without",
            file=sys.stderr,
            flush=True,
        )
        stop_server(self.server, 0.5)
        os._exit(EXIT_UNAVAILABLE)

    def left(self) -> float:
        return self.seconds if self.deadline is None else self.deadline - time.monotonic() - 1

    def runner(self, heartbeat_seconds: int):
        """Prefect's Runner (what `prefect.serve` uses), its runs sending heartbeats, stopped by this on SIGTERM."""
        from prefect.runner import Runner

        shutdown = self

        class ServeRunner(Runner):
            # Runner.start() installs this for SIGTERM; Prefect's own calls a stop() that
            # does nothing from a signal handler, then sys.exit(0).
            def handle_sigterm(self, signum: int, frame: object) -> None:
                shutdown.on_signal(signum, frame)

        return ServeRunner(heartbeat_seconds=heartbeat_seconds, pause_on_shutdown=True)


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
    parser.add_argument(
        "--heartbeat",
        type=int,
        default=HEARTBEAT_SECONDS,
        help="seconds between a run's heartbeats (default: %(default)s; Prefect's minimum is 30)",
    )
    parser.add_argument(
        "--crashed-after",
        type=int,
        help=f"seconds without a heartbeat before a run is marked Crashed (default: {MISSED_HEARTBEATS} heartbeats)",
    )
    args = parser.parse_args(argv)
    after = args.crashed_after or default_after(args.heartbeat)
    if args.heartbeat < MIN_HEARTBEAT_SECONDS or after <= args.heartbeat:
        parser.exit(
            EXIT_BAD_INPUT,
            f"error: --heartbeat {args.heartbeat} --crashed-after {after}: expected a heartbeat of at least "
            f"{MIN_HEARTBEAT_SECONDS} s and more seconds than that before Crashed\n",
        )

    server = None
    api_url = os.environ.get("PREFECT_API_URL")
    if api_url:
        print(f"Using the Prefect server at PREFECT_API_URL={api_url}")
    else:
        server, api_url = start_server(args.host, args.port)
        os.environ["PREFECT_API_URL"] = api_url  # also for the flow-run subprocesses
    ui_url = api_url.removesuffix("/api")
    shutdown = Shutdown(api_url, server)
    signal.signal(signal.SIGINT, shutdown.on_signal)
    signal.signal(signal.SIGTERM, shutdown.on_signal)
    try:
        from prefect.settings import PREFECT_API_URL, PREFECT_UI_URL, temporary_settings

        with temporary_settings(updates={PREFECT_API_URL: api_url, PREFECT_UI_URL: ui_url}):
            print(describe(after, ensure_zombie_automation(after)))
            runner = shutdown.runner(args.heartbeat)
            deployments = build_deployments(args.workdir, args.cron, args.timezone)
            for deployment in deployments:
                runner.add_deployment(deployment)
            print(
                f"Serving {len(deployments)} deployments of training-pipeline on "
                f"{Path(args.workdir).resolve()}; UI: {ui_url}/deployments  (Ctrl-C stops)"
            )
            asyncio.run(shutdown.serve(runner))
    except (KeyboardInterrupt, asyncio.CancelledError):
        pass
    finally:
        stop_server(server, shutdown.left())
    return 0


if __name__ == "__main__":
    sys.exit(main())
