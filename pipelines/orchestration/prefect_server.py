"""The Prefect server `make serve` starts (or finds running) and stops: a process tied to this one's life."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

PR_SET_PDEATHSIG = 1  # linux/prctl.h


def healthy(api_url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{api_url}/health", timeout=2) as response:
            return response.status == 200
    except (urllib.error.URLError, OSError):
        return False


def _die_with_parent() -> None:
    """In the server's process, before exec: Linux sends it SIGTERM when this process dies, even of SIGKILL."""
    if sys.platform.startswith("linux"):
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


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
    # Its own session: a Ctrl-C or SIGTERM sent to the whole group reaches this process only,
    # which stops the server after the runner has used it to pause the schedules (a server
    # stopped first left the runner retrying for 70 s). It still dies with this process.
    server = subprocess.Popen(
        [prefect, "server", "start", "--host", host, "--port", str(port)],
        env=env,
        start_new_session=True,
        preexec_fn=_die_with_parent,
    )
    deadline = time.monotonic() + timeout
    while not healthy(api_url):
        if server.poll() is not None:
            raise SystemExit(f"error: the Prefect server exited with {server.returncode} (is port {port} taken?)")
        if time.monotonic() > deadline:
            stop_server(server, 5)
            raise SystemExit(f"error: the Prefect server did not answer at {api_url} within {timeout:.0f}s")
        time.sleep(0.5)
    return server, api_url


def stop_server(server: subprocess.Popen | None, seconds: float) -> None:
    """SIGTERM, then SIGKILL if it is still there after `seconds`."""
    if server is None or server.poll() is not None:
        return
    server.terminate()
    try:
        server.wait(timeout=max(seconds, 0.5))
    except subprocess.TimeoutExpired:
        server.kill()
        server.wait()
