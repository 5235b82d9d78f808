"""No zombie runs: `make serve` (pipelines/orchestration/serve.py) with a real `prefect server`.

A run whose processes and server are killed (SIGKILL: the machine died) is marked Crashed
by Prefect's zombie-run automation once a server is back, from the heartbeats of the runner
settings serve.py uses (shortened here: a heartbeat every 30 s, Prefect's minimum, and
Crashed after 31 s of silence, the shortest accepted). serve.py stops within 10 s of SIGTERM,
whether or not the server is still there, and leaves no process behind.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
import yaml

from pipelines.orchestration.zombies import AUTOMATION_NAME, HEARTBEAT_SECONDS
from tests.conftest import BIN, ROOT, copy_project, project_env, small_params
from tests.test_prefect_server import _alive, _processes, free_port, wait_for

HEARTBEAT, CRASHED_AFTER = 30, 31  # the shortest the project accepts: the test waits it out


class Serve:
    """`python -m pipelines.orchestration.serve` on a project copy, starting its own server in `home`."""

    def __init__(self, project: Path, home: Path, port: int) -> None:
        self.api_url = f"http://127.0.0.1:{port}/api"
        env = project_env()
        env.pop("PREFECT_API_URL", None)
        env.update(PREFECT_HOME=str(home), PREFECT_RUNNER_POLL_FREQUENCY="2", PYTHONUNBUFFERED="1")
        self.log_path = home / f"serve-{time.monotonic_ns()}.log"
        with open(self.log_path, "w") as log:
            self.proc = subprocess.Popen(
                [str(BIN / "python"), "-m", "pipelines.orchestration.serve", "--workdir", str(project)]
                + ["--port", str(port), "--heartbeat", str(HEARTBEAT), "--crashed-after", str(CRASHED_AFTER)],
                cwd=project,
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        try:
            wait_for("serve.py to serve its deployments", self.serving, timeout=240, every=1)
        except BaseException:
            self.kill()
            raise

    def serving(self) -> bool:
        if self.proc.poll() is not None:
            raise AssertionError(f"serve.py exited {self.proc.returncode}:\n{self.log()[-3000:]}")
        if "Serving " not in self.log():  # printed once the automation is there
            return False
        try:  # READY: the runner polls for their runs (on a database used before: did)
            return {d["status"] for d in api(self.api_url, "/deployments/filter", {})} == {"READY"}
        except OSError:
            return False

    def log(self) -> str:
        return self.log_path.read_text()

    def tree(self) -> set[int]:
        """serve.py and every process under it: the server, a flow run, the stages it started."""
        table, tree = _processes(), {self.proc.pid}
        while more := {pid for pid, (ppid, _, _) in table.items() if ppid in tree} - tree:
            tree |= more
        return tree

    def kill(self) -> None:
        for pid in self.tree():
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        self.proc.wait(10)


def api(api_url: str, path: str, body: dict | None = None):
    request = urllib.request.Request(
        f"{api_url}{path}",
        data=None if body is None else json.dumps(body).encode(),
        headers={"Content-Type": "application/json"},
        method="GET" if body is None else "POST",
    )
    for attempt in range(4):
        try:
            with urllib.request.urlopen(request, timeout=10) as response:
                return json.loads(response.read())
        except urllib.error.HTTPError as err:
            # A server just started on SQLite answers 503 while its services hold the database: the request
            # was rolled back, and Prefect's own client retries it the same way.
            if err.code != 503 or attempt == 3:
                raise
            time.sleep(1 + attempt)


def zombie_automations(api_url: str) -> list[dict]:
    return [a for a in api(api_url, "/automations/filter", {}) if a["name"] == AUTOMATION_NAME]


def heartbeats(api_url: str, run_id: str) -> list[dict]:
    found = api(
        api_url,
        "/events/filter",
        {
            "filter": {
                "event": {"name": ["prefect.flow-run.heartbeat"]},
                "resource": {"id": [f"prefect.flow-run.{run_id}"]},
            }
        },
    )
    return found["events"]


@pytest.mark.slow
def test_a_run_whose_processes_and_server_died_is_marked_crashed_and_the_automation_is_made_once(tmp_path):
    project = copy_project(tmp_path / "project")
    home = tmp_path / "home"
    home.mkdir()
    port = free_port()
    serve = Serve(project, home, port)
    try:
        (automation,) = zombie_automations(serve.api_url)
        assert automation["trigger"]["posture"] == "Proactive" and automation["trigger"]["within"] == CRASHED_AFTER
        deployment = api(serve.api_url, "/deployments/name/training-pipeline/relu-vs-sigmoid")
        run = api(
            serve.api_url,
            f"/deployments/{deployment['id']}/create_flow_run",
            {"parameters": {"params": small_params(("tabular",), epochs=50), "datasets": ["tabular"]}},
        )
        # Running, and its first heartbeat (sent as the flow starts) has reached the server.
        wait_for("the run's first heartbeat", lambda: heartbeats(serve.api_url, run["id"]), timeout=120, every=1)
        assert api(serve.api_url, f"/flow_runs/{run['id']}")["state_type"] == "RUNNING"
        killed = time.monotonic()
        serve.kill()  # the runner, its flow-run process, the stages, the server: as if the machine died
        assert not _alive(serve.tree() | {serve.proc.pid})
    finally:
        serve.kill()

    again = Serve(project, home, port)  # the next `make serve`, on the same database
    try:
        assert "unchanged" in again.log()
        assert zombie_automations(again.api_url) == [automation]  # the same one, not updated: nothing forgotten

        def crashed():
            state = api(again.api_url, f"/flow_runs/{run['id']}")["state"]
            return state if state["type"] == "CRASHED" else None

        state = wait_for("the automation to mark the run Crashed", crashed, timeout=120, every=1)
        took = time.monotonic() - killed
        print(f"killed -> Crashed in {took:.1f} s (heartbeat {HEARTBEAT} s, Crashed after {CRASHED_AFTER} s)")
        tasks = api(again.api_url, "/task_runs/filter", {"flow_runs": {"id": {"any_": [run["id"]]}}})
        print("its task runs:", {t["name"]: t["state_type"] for t in tasks})
        assert f"No heartbeat for {CRASHED_AFTER} s" in state["message"]
        # At most the silence allowed after the last heartbeat, plus the server's 5 s proactive checks.
        assert took < HEARTBEAT + CRASHED_AFTER + 15

        # This `make serve` is stopped as a terminal stops it (SIGTERM to its group): the case "to-the-group" of
        # test_serve_exits_within_10_s_of_sigterm_and_leaves_no_process, checked here so as not to start one
        # more serve.py and server for it.
        assert_sigterm_stops_serve(again, server_gone=False)
    finally:
        again.kill()


def assert_sigterm_stops_serve(serve: Serve, server_gone: bool) -> None:
    """SIGTERM stops serve.py within 10 s and leaves no process: sent to its process group (as `kill -TERM -PGID`,
    or Ctrl-C in the terminal) while its server runs, or to serve.py alone after its server was killed."""
    tree = serve.tree()
    server = [pid for pid in tree if "prefect server start" in _processes().get(pid, (0, 0, ""))[2]]
    assert len(server) == 1 and len(tree) >= 2
    if server_gone:
        # What took 70 s: the server stopped first, the runner retried pausing the schedules.
        os.kill(server[0], signal.SIGKILL)
        wait_for("the server to go", lambda: not _alive(server), timeout=10, every=0.2)
    sent = time.monotonic()
    if server_gone:
        serve.proc.send_signal(signal.SIGTERM)
    else:
        os.killpg(serve.proc.pid, signal.SIGTERM)  # as `kill -TERM -PGID`, or Ctrl-C in the terminal
    code = serve.proc.wait(30)
    took = time.monotonic() - sent
    print(f"SIGTERM -> exit {code} in {took:.1f} s")
    assert took < 10, serve.log()[-3000:]
    wait_for("no process left", lambda: not _alive(tree), timeout=3, every=0.2)
    if server_gone:
        assert code == 75 and "no answer while pausing the schedules" in serve.log()
    else:
        assert code == 0 and "All deployments have been paused" in serve.log()


@pytest.mark.slow
def test_serve_exits_within_10_s_of_sigterm_and_leaves_no_process(tmp_path):
    """The case "server-already-gone"; the case "to-the-group" ends the test above."""
    project = copy_project(tmp_path / "project")
    home = tmp_path / "home"
    home.mkdir()
    serve = Serve(project, home, free_port())
    try:
        assert_sigterm_stops_serve(serve, server_gone=True)
    finally:
        serve.kill()


def test_worker_deployments_send_the_heartbeats_make_serve_sends():
    """prefect.yaml's pools send the heartbeat `make serve` sends; the comments say how the automation is made."""
    for path in (ROOT / "prefect.yaml", ROOT / "infra/prefect/prefect.yaml"):
        text = path.read_text()
        assert "python -m pipelines.orchestration.zombies" in text, path
        config = yaml.safe_load(text)
        for deployment in config["deployments"]:
            env = deployment["work_pool"]["job_variables"]["env"]
            assert env["PREFECT_FLOWS_HEARTBEAT_FREQUENCY"] == str(HEARTBEAT_SECONDS), (path, deployment["name"])
