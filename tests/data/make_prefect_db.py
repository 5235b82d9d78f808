"""Write tests/data/prefect-3.8.8.db: a Prefect server's SQLite database as Prefect 3.8.8 leaves it.

Run it from the repository root with the Python of an environment that has prefect==3.8.8 and this
project's other dependencies (a checkout installed from a lock with prefect==3.8.8):

    python tests/data/make_prefect_db.py tests/data/prefect-3.8.8.db.gz

It starts `prefect server start` in a temporary PREFECT_HOME, runs two flow runs through it (one
completed, with a task run, logs and an artifact; one failed), applies a deployment with a paused cron
schedule, creates the zombie-run automation as `make serve` does (pipelines/orchestration/zombies.py),
stops the server and writes a vacuumed, gzipped copy of the database. tests/test_prefect_upgrade.py
starts the current Prefect on a copy of it and reads all that back.
"""

from __future__ import annotations

import gzip
import os
import shutil
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

FLOW_NAME = "legacy-pipeline"
RUN_COMPLETED = "written-by-3-8-8-completed"
RUN_FAILED = "written-by-3-8-8-failed"
DEPLOYMENT = "legacy-nightly"
ARTIFACT_KEY = "legacy-report"
ZOMBIE_AFTER_SECONDS = 180
ROOT = Path(__file__).resolve().parents[2]


def runs() -> None:
    """In a child process whose PREFECT_API_URL is the server: the runs the database will hold."""
    from prefect import flow, task
    from prefect.artifacts import create_markdown_artifact

    @task
    def add(x: int, y: int) -> int:
        return x + y

    @flow(name=FLOW_NAME, log_prints=True)
    def legacy(n: int = 3, fail: bool = False) -> int:
        total = add(n, 1)
        print(f"the total is {total}")
        if fail:
            raise ValueError("failed on purpose")
        create_markdown_artifact(f"# Written by Prefect 3.8.8\n\ntotal = {total}", key=ARTIFACT_KEY)
        return total

    legacy.with_options(flow_run_name=RUN_COMPLETED)(n=3)
    legacy.with_options(flow_run_name=RUN_FAILED)(n=4, fail=True, return_state=True)
    legacy.to_deployment(name=DEPLOYMENT, cron="0 2 * * *", paused=True).apply()


def main(out: Path) -> None:
    import prefect

    assert prefect.__version__ == "3.8.8", f"run this with Prefect 3.8.8, not {prefect.__version__}"
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with tempfile.TemporaryDirectory() as home:
        env = dict(os.environ, PREFECT_HOME=home, PREFECT_SERVER_ANALYTICS_ENABLED="false")
        env.pop("PREFECT_API_URL", None)
        prefect_cli = str(Path(sys.executable).parent / "prefect")
        server = subprocess.Popen([prefect_cli, "server", "start", "--host", "127.0.0.1", "--port", str(port)], env=env)
        api_url = f"http://127.0.0.1:{port}/api"
        try:
            deadline = time.monotonic() + 180
            while True:
                try:
                    with urllib.request.urlopen(f"{api_url}/health", timeout=2):
                        break
                except OSError:
                    if time.monotonic() > deadline or server.poll() is not None:
                        raise SystemExit("the Prefect server did not start") from None
                    time.sleep(0.5)
            env = dict(env, PREFECT_API_URL=api_url, PYTHONPATH=str(ROOT))
            subprocess.run([sys.executable, __file__, "--runs"], env=env, check=True)
            zombies = ["-m", "pipelines.orchestration.zombies", "--after", str(ZOMBIE_AFTER_SECONDS)]
            subprocess.run([sys.executable, *zombies], env=env, cwd=ROOT, check=True)
        finally:
            server.terminate()
            server.wait(60)
        vacuumed = Path(home) / "vacuumed.db"
        with sqlite3.connect(Path(home) / "prefect.db") as db:
            db.execute("VACUUM INTO ?", (str(vacuumed),))
        with open(vacuumed, "rb") as src, gzip.GzipFile(out, "wb", compresslevel=9, mtime=0) as dst:
            shutil.copyfileobj(src, dst)
    print(f"wrote {out} ({out.stat().st_size} bytes)")


if __name__ == "__main__":
    if sys.argv[1:] == ["--runs"]:
        runs()
    else:
        main(Path(sys.argv[1]).resolve())
