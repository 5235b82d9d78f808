"""A Prefect server database written by an older Prefect opens on the installed one, its runs intact.

tests/data/prefect-3.8.8.db.gz is the SQLite database of a real `prefect server` of Prefect 3.8.8
(made by tests/data/make_prefect_db.py): two flow runs (one completed, with a task run, logs and an
artifact; one failed), a deployment with a paused cron schedule and the zombie-run automation of
`make serve`. The server the project starts (pipelines/orchestration/prefect_server.py) runs the
database's migrations on start; the old runs are then read back through the API and the UI.
"""

from __future__ import annotations

import gzip
import shutil
import sqlite3
from pathlib import Path

import pytest

from pipelines.orchestration.prefect_server import start_server, stop_server
from tests.data.make_prefect_db import (
    ARTIFACT_KEY,
    DEPLOYMENT,
    FLOW_NAME,
    RUN_COMPLETED,
    RUN_FAILED,
    ZOMBIE_AFTER_SECONDS,
)
from tests.test_prefect_server import _page_shows, free_port
from tests.test_zombie_runs import api

pytestmark = pytest.mark.slow
DATABASE = Path(__file__).parent / "data" / "prefect-3.8.8.db.gz"
REVISION_3_8_8 = "a3b9c7d2e5f1"  # the last SQLite migration of Prefect 3.8.8


def revision(db: Path) -> str:
    with sqlite3.connect(db) as conn:
        (found,) = conn.execute("SELECT version_num FROM alembic_version").fetchone()
    return found


def installed_head() -> str:
    """The newest SQLite migration of the installed Prefect."""
    import prefect.server.database as database
    from alembic.script import ScriptDirectory

    migrations = Path(database.__file__).parent / "_migrations"
    (head,) = ScriptDirectory(str(migrations), version_locations=[str(migrations / "versions" / "sqlite")]).get_heads()
    return head


@pytest.fixture(scope="module")
def migrated(tmp_path_factory):
    """The project's Prefect server started on a copy of the 3.8.8 database: (its API URL, the database file)."""
    home = tmp_path_factory.mktemp("prefect-home")
    db = home / "prefect.db"  # the server's SQLite database is $PREFECT_HOME/prefect.db
    with gzip.open(DATABASE) as src, open(db, "wb") as dst:
        shutil.copyfileobj(src, dst)
    assert revision(db) == REVISION_3_8_8
    with pytest.MonkeyPatch.context() as env:
        env.setenv("PREFECT_HOME", str(home))
        env.delenv("PREFECT_API_DATABASE_CONNECTION_URL", raising=False)
        env.delenv("PREFECT_API_URL", raising=False)
        server, api_url = start_server("127.0.0.1", free_port())
    try:
        yield api_url, db
    finally:
        stop_server(server, 10)


def old_runs(api_url: str) -> dict[str, dict]:
    found = api(api_url, "/flow_runs/filter", {"flow_runs": {"name": {"any_": [RUN_COMPLETED, RUN_FAILED]}}})
    return {r["name"]: r for r in found}


def test_a_database_of_prefect_3_8_8_is_migrated_and_keeps_its_runs(migrated):
    api_url, db = migrated
    head = installed_head()
    assert head != REVISION_3_8_8, "the installed Prefect has no migration newer than 3.8.8's: nothing to prove"
    assert revision(db) == head  # the server ran the migrations on start

    runs = old_runs(api_url)
    assert {name: r["state_type"] for name, r in runs.items()} == {RUN_COMPLETED: "COMPLETED", RUN_FAILED: "FAILED"}
    done, failed = runs[RUN_COMPLETED], runs[RUN_FAILED]
    assert api(api_url, f"/flows/{done['flow_id']}")["name"] == FLOW_NAME
    assert done["parameters"] == {"n": 3, "fail": False} and failed["parameters"] == {"n": 4, "fail": True}
    assert "failed on purpose" in failed["state"]["message"]

    (task_run,) = api(api_url, "/task_runs/filter", {"flow_runs": {"id": {"any_": [done["id"]]}}})
    assert task_run["name"].startswith("add") and task_run["state_type"] == "COMPLETED"
    logs = api(api_url, "/logs/filter", {"logs": {"flow_run_id": {"any_": [done["id"]]}}})
    assert any(entry["message"] == "the total is 4" for entry in logs)
    (artifact,) = api(api_url, "/artifacts/filter", {"artifacts": {"key": {"any_": [ARTIFACT_KEY]}}})
    assert artifact["flow_run_id"] == done["id"] and "total = 4" in artifact["data"]

    deployment = api(api_url, f"/deployments/name/{FLOW_NAME}/{DEPLOYMENT}")
    assert [s["schedule"]["cron"] for s in deployment["schedules"]] == ["0 2 * * *"]
    assert deployment["paused"]

    # `make serve` on this database finds its automation as it left it: not updated, so the runs
    # it was watching are not forgotten (pipelines/orchestration/zombies.py).
    from prefect.settings import PREFECT_API_URL, temporary_settings

    from pipelines.orchestration.zombies import ensure_zombie_automation

    with temporary_settings(updates={PREFECT_API_URL: api_url}):
        assert ensure_zombie_automation(ZOMBIE_AFTER_SECONDS) == "unchanged"


def test_the_ui_shows_the_runs_of_the_old_database(migrated, chromium):
    api_url, _ = migrated
    runs = old_runs(api_url)
    ui_url = api_url.removesuffix("/api")
    chromium.get(f"{ui_url}/v2/runs/flow-run/{runs[RUN_FAILED]['id']}")
    _page_shows(chromium, RUN_FAILED, "Failed")
    chromium.get(f"{ui_url}/v2/runs/flow-run/{runs[RUN_COMPLETED]['id']}?tab=Artifacts")
    _page_shows(chromium, RUN_COMPLETED, "Completed", ARTIFACT_KEY)
