"""One local Ray instance for a whole flow run: started before the first train stage that needs it, stopped at the end.

Every train stage of a run joins it through `RAY_ADDRESS` (with `DL_PIPELINE_RAY_OWNED=1`:
the stage knows the instance is this run's own, on this machine), so Ray's start-up is paid
once per run instead of once per stage. The head is a `ray start --head --block` in its own
process group and its own temp dir, so stopping it stops exactly its processes (raylet,
gcs_server, workers), never another Ray instance on the machine (`ray stop` would).

With `RAY_ADDRESS` set by the user, nothing is started: the stages join that cluster.
`dvc repro` on its own is untouched: a stage that finds no `RAY_ADDRESS` starts its own.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from pipelines.training.cluster import TRAIN_CPUS_ENV
from pipelines.workspace import stop_process_group

OWNED_ENV = "DL_PIPELINE_RAY_OWNED"
READY_LINE = "Ray runtime started"
START_TIMEOUT_S = float(os.environ.get("DL_PIPELINE_RAY_START_TIMEOUT_S", "120"))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class RayHead:
    """A `ray start --head --block` subprocess on 127.0.0.1; `env` is what the stages need to join it."""

    def __init__(self, num_cpus: int | None = None) -> None:
        self.num_cpus = num_cpus or os.cpu_count() or 1
        # Short: Ray's unix sockets live under it (108-byte limit); unique: it names this instance's processes.
        self.temp_dir = tempfile.mkdtemp(prefix="dlp-ray-", dir="/tmp")
        self.port = free_port()
        self.address = f"127.0.0.1:{self.port}"
        self.token = secrets.token_hex(32)
        self.proc: subprocess.Popen | None = None
        self.start_seconds = 0.0

    @property
    def env(self) -> dict[str, str]:
        # Token auth as on a cluster: another local user cannot submit work to this instance.
        return {
            "RAY_ADDRESS": self.address,
            OWNED_ENV: "1",
            "RAY_AUTH_MODE": "token",
            "RAY_AUTH_TOKEN": self.token,
            "RAY_USAGE_STATS_ENABLED": "0",
        }

    @staticmethod
    def client_server_args() -> list[str]:
        """Where grpc is installed (Ray's full install, e.g. the `serve` extra), `ray start --head` also starts a
        Ray Client server, on port 10001 unless told: a second run's head would collide with the first's. Give it a
        free port of its own (it cannot be turned off; without grpc Ray refuses the flag)."""
        import importlib.util

        return ["--ray-client-server-port", str(free_port())] if importlib.util.find_spec("grpc") else []

    def start(self) -> RayHead:
        ray = str(Path(sys.executable).parent / "ray")
        cmd = [
            ray,
            "start",
            "--head",
            "--block",
            "--port",
            str(self.port),
            "--node-ip-address",
            "127.0.0.1",
            "--include-dashboard",
            "false",
            "--num-cpus",
            str(self.num_cpus),
            "--temp-dir",
            self.temp_dir,
            "--disable-usage-stats",
            *self.client_server_args(),
        ]
        log = Path(self.temp_dir) / "ray-start.log"
        started = time.perf_counter()
        with open(log, "wb") as out:
            self.proc = subprocess.Popen(
                cmd,
                env={**os.environ, **self.env},
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # its own group: a terminal's Ctrl-C is ours to pass on, in order
            )
        deadline = time.monotonic() + START_TIMEOUT_S
        try:
            while READY_LINE not in log.read_text(errors="replace"):
                proc = self.proc
                if proc is None or proc.poll() is not None or time.monotonic() > deadline:
                    text = log.read_text(errors="replace")[-2000:]
                    raise RuntimeError(f"could not start a local Ray instance ({' '.join(cmd)}):\n{text}")
                time.sleep(0.1)
        except BaseException:  # also a stop (signal) or a temp dir removed by one: never leave `ray start` running
            self.stop()
            raise
        self.start_seconds = time.perf_counter() - started
        return self

    def stop(self, grace_seconds: float = 5.0) -> None:
        """Stop the head and everything under it (about 2 s); SIGKILL what is left after the grace period.

        SIGTERM goes to `ray start` alone first: it stops its node's processes and reaps them
        (~2 s). Signalling the whole group at once kills it before it reaps: zombies. Idempotent.
        """
        proc, self.proc = self.proc, None
        if proc is not None:
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=grace_seconds)
            stop_group(proc.pid, 1.0, reap=proc.poll)
        kill_leftovers(self.temp_dir)
        shutil.rmtree(self.temp_dir, ignore_errors=True)


def stop_group(pgid: int, grace_seconds: float, reap=None, first: int = signal.SIGTERM) -> bool:
    """Signal a process group, wait for it to go, SIGKILL it after the grace period. True if it was there."""
    return stop_process_group(pgid, grace_seconds, reap=reap, first=first)


def processes_of(temp_dir: str) -> list[int]:
    """Pids of the processes whose command line names `temp_dir` (this instance's raylet, GCS, workers...)."""
    out = subprocess.run(["pgrep", "-f", temp_dir], capture_output=True, text=True).stdout
    return [int(p) for p in out.split() if int(p) != os.getpid()]


def kill_leftovers(temp_dir: str) -> None:
    """A process that left the head's group (Ray daemonizes some helpers) still names its temp dir: end it too."""
    for pid in processes_of(temp_dir):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signal.SIGKILL)


class RunRay:
    """The run's Ray: started on first use (a train stage needing it), stopped by `close()`; none with RAY_ADDRESS set.

    in_process: datasets whose train stage needs no Ray instance (`num_workers: auto` on this
    machine's CPUs trains in Ray Train's local mode: `training.cluster.trains_in_process`); a run
    made only of those starts none.
    """

    def __init__(self, train_cpus: int | None = None, in_process: frozenset[str] = frozenset()) -> None:
        self.in_process = in_process
        self.head: RayHead | None = None
        self._start_seconds = 0.0
        self.joined = os.environ.get("RAY_ADDRESS")
        self.train_cpus = train_cpus  # each train stage's share when the run's chains train side by side
        self._starting = threading.Lock()  # two chains may reach their train stage together
        self._prestart: threading.Thread | None = None
        self._closing: threading.Thread | None = None
        self._closed = False  # once closed, the run starts no head again (a straggling chain must not)

    def env(self) -> dict[str, str]:
        """What a train stage needs in its environment; starts the head the first time."""
        if self.joined:
            return {}  # the user's cluster: RAY_ADDRESS passes through as it is
        with self._starting:
            env = self._started_env()
        return {**env, TRAIN_CPUS_ENV: str(self.train_cpus)} if self.train_cpus else env

    def env_for(self, dataset: str) -> dict[str, str]:
        """What this dataset's train stage needs: the run's Ray (started now if need be), or only its CPU share."""
        if dataset in self.in_process:
            return {TRAIN_CPUS_ENV: str(self.train_cpus)} if self.train_cpus else {}
        return self.env()

    def needs_ray(self, dataset: str) -> bool:
        return dataset not in self.in_process

    def _started_env(self) -> dict[str, str]:
        if self._closed:
            raise RuntimeError("the run's Ray instance was stopped: the run is ending")
        if self.head is None:
            head = RayHead()
            _current.append(head)
            try:
                head.start()
            except BaseException:
                with contextlib.suppress(ValueError):
                    _current.remove(head)
                raise
            self.head = head
            # One line the log and tests can find: which instance served the run.
            print(
                f"Ray for this run: {head.address} (ray start pid {head.proc.pid}, {head.temp_dir}), "
                f"started in {head.start_seconds:.1f}s",
                flush=True,
            )
        return self.head.env

    def start_soon(self) -> None:
        """Start the head in the background (a train stage is coming): its start overlaps the stages before it.

        A start that fails here is tried again, and reported, by the train stage's own `env()`.
        """
        if self.joined or self.head is not None or self._prestart is not None or self._closed:
            return

        def start() -> None:
            with contextlib.suppress(Exception):
                self.env()

        self._prestart = threading.Thread(target=start, name="ray-head-start", daemon=True)
        self._prestart.start()

    @property
    def start_seconds(self) -> float:
        """How long starting this run's Ray instance took (0 when none was started)."""
        return self._start_seconds

    def close(self) -> None:
        """Stop the head for good (and wait for a stop begun by `close_soon`)."""
        with self._starting:
            self._closed = True
            self._close()
        if self._closing is not None and self._closing is not threading.current_thread():
            self._closing.join()

    def close_soon(self) -> None:
        """Stop the head in the background (its ~2-6 s need not delay the stage after the last train)."""
        if self.head is not None and self._closing is None:
            self._closing = threading.Thread(target=self.close, name="ray-head-stop", daemon=True)
            self._closing.start()

    def _close(self) -> None:
        if self.head is not None:
            self._start_seconds = self.head.start_seconds
            self.head.stop()
            with contextlib.suppress(ValueError):
                _current.remove(self.head)
            self.head = None


_current: list[RayHead] = []  # heads this process started and has not stopped: what a signal handler must stop


def stop_all(stage_pgids: tuple[int, ...] = (), grace_seconds: float = 3.0, reap=None) -> None:
    """Stop stages' process groups and every Ray head this process started, all at once (Ctrl-C, SIGTERM).

    SIGTERM goes to all of them together, so the run stops in one grace period, not one per
    process: what is left after it is SIGKILLed. `reap` collects our own exited children
    (a zombie would keep its group alive).
    """
    heads = list(_current)
    for pgid in stage_pgids:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pgid, signal.SIGTERM)
    for head in heads:
        if head.proc is not None:
            with contextlib.suppress(ProcessLookupError):
                head.proc.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + grace_seconds
    while time.monotonic() < deadline:
        if reap:
            reap()
        if not [g for g in stage_pgids if _alive(g)] and all(
            h.proc is None or h.proc.poll() is not None for h in heads
        ):
            break
        time.sleep(0.05)
    for pgid in stage_pgids:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pgid, signal.SIGKILL)
    if reap:
        reap()
    for head in heads:
        head.stop(grace_seconds=0.1)
        with contextlib.suppress(ValueError):
            _current.remove(head)


def _alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
        return True
    except ProcessLookupError:
        return False
