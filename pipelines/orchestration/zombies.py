"""Zombie runs: a flow run whose process, machine or server died is marked Crashed, by Prefect's own means.

Each flow run sends the event `prefect.flow-run.heartbeat` every HEARTBEAT_SECONDS (the
runner's heartbeat setting: `make serve` sets it for the runs it serves; a work pool sets
PREFECT_FLOWS_HEARTBEAT_FREQUENCY in its job variables' env). This automation is Prefect's
"Detect zombie flows" recipe: after each heartbeat of a run it expects another event of that
run (a heartbeat or a state change) within `after` seconds; when none comes, it sets the run
Crashed. A server that was down meanwhile does it once it is back: the pending expectations
are kept in its database.

    python -m pipelines.orchestration.zombies [--after SECONDS]

creates it on the server of PREFECT_API_URL (for the work pools of prefect.yaml), or updates
it when `after` changed; `make serve` does the same on the server it uses.
"""

from __future__ import annotations

import argparse
import sys
from datetime import timedelta
from typing import TYPE_CHECKING

from pipelines.errors import EXIT_BAD_INPUT, EXIT_UNAVAILABLE

AUTOMATION_NAME = "dl-pipeline: crash zombie flow runs"
HEARTBEAT_SECONDS = 60  # Prefect's default is 180 s; Prefect refuses less than 30
MISSED_HEARTBEATS = 3  # a run is a zombie after this many heartbeats did not come
MIN_HEARTBEAT_SECONDS = 30

if TYPE_CHECKING:
    from prefect.automations import Automation


def default_after(heartbeat_seconds: int = HEARTBEAT_SECONDS) -> int:
    return heartbeat_seconds * MISSED_HEARTBEATS


def zombie_automation(after_seconds: int) -> Automation:
    """Prefect's zombie-flow automation, with `after_seconds` of silence before a run is marked Crashed."""
    from prefect.automations import Automation
    from prefect.client.schemas.objects import StateType
    from prefect.events.actions import ChangeFlowRunState
    from prefect.events.schemas.automations import EventTrigger, Posture
    from prefect.events.schemas.events import ResourceSpecification

    return Automation(
        name=AUTOMATION_NAME,
        description=(
            f"Marks a flow run Crashed when it sent no event for {after_seconds} s after a heartbeat: "
            "its process, machine or server died (pipelines/orchestration/zombies.py)."
        ),
        trigger=EventTrigger(
            after={"prefect.flow-run.heartbeat"},
            # Any event of the run disarms it: a heartbeat, or a state change whatever its name.
            expect={"prefect.flow-run.*"},
            match=ResourceSpecification({"prefect.resource.id": ["prefect.flow-run.*"]}),
            for_each={"prefect.resource.id"},
            posture=Posture.Proactive,
            threshold=1,
            within=timedelta(seconds=after_seconds),
        ),
        actions=[
            ChangeFlowRunState(
                state=StateType.CRASHED,
                message=f"No heartbeat for {after_seconds} s: the run's process, machine or Prefect server died.",
            )
        ],
    )


def _same(existing: Automation, wanted: Automation) -> bool:
    return (
        existing.enabled
        and existing.description == wanted.description
        and existing.trigger == wanted.trigger
        and existing.actions == wanted.actions
    )


def ensure_zombie_automation(after_seconds: int) -> str:
    """Create the automation on the current API once; update it only when it differs. Returns what it did.

    Left as it is when unchanged: an update gives the trigger a new id on the server, and
    the runs it was watching (a run that died while the server was down, say) would be
    forgotten. Copies made by two starts at once are deleted.
    """
    from prefect.automations import Automation
    from prefect.client.orchestration import get_client

    wanted = zombie_automation(after_seconds)
    with get_client(sync_client=True) as client:
        found = client.read_automations_by_name(AUTOMATION_NAME)
        for extra in found[1:]:
            client.delete_automation(extra.id)
        if not found:
            wanted.create()
            return "created"
        existing = Automation(**found[0].model_dump())
        if _same(existing, wanted):
            return "unchanged"
        wanted.id = existing.id
        wanted.update()
        return "updated"


def describe(after_seconds: int, done: str) -> str:
    return f"Automation '{AUTOMATION_NAME}' {done}: a run silent {after_seconds} s after a heartbeat is marked Crashed."


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m pipelines.orchestration.zombies", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument(
        "--after",
        type=int,
        default=default_after(),
        help="seconds without an event after a heartbeat before a run is marked Crashed; more than the "
        "runs' PREFECT_FLOWS_HEARTBEAT_FREQUENCY (default: %(default)s, 3 heartbeats of 60 s)",
    )
    args = parser.parse_args(argv)
    if args.after <= MIN_HEARTBEAT_SECONDS:
        print(f"error: --after: {args.after} s; expected more than the shortest heartbeat (30 s)", file=sys.stderr)
        return EXIT_BAD_INPUT
    from prefect.settings import PREFECT_API_URL

    api_url = PREFECT_API_URL.value()
    if not api_url:
        print("error: PREFECT_API_URL is not set; expected the URL of the Prefect server's API", file=sys.stderr)
        return EXIT_BAD_INPUT
    try:
        done = ensure_zombie_automation(args.after)
    except Exception as exc:  # httpx's connect errors and the API's HTTP errors alike
        print(f"error: {api_url}/automations: {type(exc).__name__}: {exc}", file=sys.stderr)
        return EXIT_UNAVAILABLE
    print(describe(args.after, done))
    return 0


if __name__ == "__main__":
    sys.exit(main())
