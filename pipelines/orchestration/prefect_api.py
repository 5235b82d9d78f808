"""A temporary Prefect API for one command-line run, in its own process group.

Without PREFECT_API_URL, Prefect starts a temporary server itself, as a child in the
caller's process group: a terminal's Ctrl-C reaches it too, it dies at once, and the run
can no longer record that it was interrupted. This starts the same server (the command
Prefect uses, prefect/server/api/server.py) in its own session instead, so the run ends
Cancelled/Crashed on it and it is stopped last, at exit.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

START_TIMEOUT_S = 90.0


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _healthy(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/health", timeout=1) as reply:
            return reply.status == 200
    except OSError:
        return False


def ensure_api() -> float:
    """Start a temporary API unless PREFECT_API_URL is set; returns the seconds it took (0 when none was needed).

    Call before Prefect is imported: its settings are read from the environment.
    """
    if os.environ.get("PREFECT_API_URL"):
        return 0.0
    started = time.perf_counter()
    port = _free_port()
    env = {**os.environ, "PREFECT_UI_ENABLED": "0", "PREFECT__SERVER_EPHEMERAL": "1", "PREFECT__SERVER_FINAL": "1"}
    import importlib.util

    prefect_dir = Path(importlib.util.find_spec("prefect").origin).parent  # no import of prefect itself
    cmd = [sys.executable, "-m", "uvicorn", "--app-dir", str(prefect_dir.parent), "--factory"]
    cmd += ["prefect.server.api.server:create_app", "--host", "127.0.0.1", "--port", str(port)]
    cmd += ["--log-level", "error", "--lifespan", "on"]
    proc = subprocess.Popen(cmd, env=env, stdin=subprocess.DEVNULL, start_new_session=True)
    atexit.register(_stop, proc)  # registered before Prefect's own atexit hooks: runs after them
    url = f"http://127.0.0.1:{port}/api"
    deadline = time.monotonic() + START_TIMEOUT_S
    while not _healthy(url):
        if proc.poll() is not None or time.monotonic() > deadline:
            _stop(proc)
            raise RuntimeError(f"the temporary Prefect server did not start ({' '.join(cmd)})")
        time.sleep(0.1)
    os.environ["PREFECT_API_URL"] = url
    return time.perf_counter() - started


def _stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.terminate()
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=5)
    if proc.poll() is None:
        proc.kill()
        proc.wait()
