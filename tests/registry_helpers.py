"""Helpers shared by the model registry tests of both backends.

The functions run in child processes (multiprocessing 'spawn') take a registry
location string, so each child opens its own registry, as a separate program would.
"""

from __future__ import annotations

import json
import multiprocessing as mp
import os
import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pipelines.registry.local import open_registry

ROOT = Path(__file__).resolve().parents[1]


def card(accuracy: float, **extra: Any) -> dict[str, Any]:
    """A card in the shape register.py writes, small."""
    return {
        "created_at": "2026-01-01T00:00:00+00:00",
        "candidate": "fnn_small",
        "task": "multiclass",
        "primary_metric": "accuracy",
        "mode": "max",
        "metrics": {"val/accuracy": accuracy - 0.01, "test/accuracy": accuracy, "test/f1": accuracy - 0.02},
        "lineage": {"git": {"commit": "0123456789abcdef0123", "dirty": False}, "data": {"source": "sklearn:digits"}},
        **extra,
    }


def checkpoint(path: Path, payload: bytes) -> Path:
    path.write_bytes(payload)
    return path


def run_processes(
    target: Callable[..., None], arg_lists: list[tuple[Any, ...]], timeout: float = 120
) -> list[int | None]:
    """One spawned process per argument tuple; their exit codes.

    Each target gets a barrier as its first argument and waits on it once it is
    ready, so the processes really do their work at the same time (starting a
    Python process takes longer than most of these jobs)."""
    ctx = mp.get_context("spawn")
    barrier = ctx.Barrier(len(arg_lists))
    procs = [ctx.Process(target=target, args=(barrier, *args)) for args in arg_lists]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout)
    return [p.exitcode for p in procs]


def cli(location: str, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    """Run the registry CLI as its own program, on this worktree's code."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    result = subprocess.run(
        [sys.executable, "-m", "pipelines.registry.cli", *args, "--registry", location],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    if check and result.returncode != 0:
        raise AssertionError(f"registry_cli {args} exited {result.returncode}:\n{result.stdout}\n{result.stderr}")
    return result


# -- child process targets ---------------------------------------------------------------------


def register_many(barrier: Any, location: str, tag: str, n: int, workdir: str) -> None:
    reg = open_registry(location)
    barrier.wait()
    for i in range(n):
        src = checkpoint(Path(workdir) / f"{tag}{i}.pt", f"{tag}-{i}".encode() * 1000)
        reg.register("m", src, card(0.5, who=tag))


def set_aliases(barrier: Any, location: str, tag: str, n: int) -> None:
    reg = open_registry(location)
    barrier.wait()
    for i in range(n):
        reg.set_alias("m", f"{tag}{i}", 1)


def promote_in_order(barrier: Any, location: str, versions: list[int]) -> None:
    reg = open_registry(location)
    barrier.wait()
    for v in versions:
        reg.promote("m", v)


def die(*_args: Any, **_kwargs: Any) -> None:
    os.kill(os.getpid(), signal.SIGKILL)  # a crash: no exception handler, no finally, no cleanup


def register_then_crash_before_card(barrier: Any, location: str, src: str) -> None:
    """Register, but be killed after the checkpoint blob is uploaded and before the card is."""
    from pipelines.registry.s3 import S3ModelRegistry

    S3ModelRegistry._publish_card = die  # type: ignore[method-assign]
    open_registry(location).register("m", src, card(0.99))


def register_then_crash_before_rename(barrier: Any, location: str, src: str) -> None:
    """Local backend: be killed after the staging directory is complete, before the rename."""
    os.rename = die  # type: ignore[assignment]
    open_registry(location).register("m", src, card(0.99))


# -- checks both backends pass -------------------------------------------------------------------


def check_register_get_list_download(location: str, tmp_path: Path) -> None:
    reg = open_registry(location)
    assert reg.list_models() == [] and reg.list_versions("m") == []
    v1 = reg.register("m", checkpoint(tmp_path / "a.pt", b"one"), card(0.8))
    v2 = reg.register("m", checkpoint(tmp_path / "b.pt", b"two"), card(0.9))
    assert (v1.version, v2.version) == (1, 2) and v1.checkpoint.read_bytes() == b"one"
    assert reg.list_models() == ["m"] and reg.list_versions("m") == [1, 2]

    fresh = open_registry(location, cache_dir=tmp_path / "other-cache")  # as another machine would
    latest = fresh.get("m")
    assert latest.version == 2 and latest.checkpoint.read_bytes() == b"two"
    assert latest.card["metrics"]["test/accuracy"] == 0.9 and len(latest.card["sha256"]) == 64
    assert fresh.get("m", 1).checkpoint.read_bytes() == b"one"
    assert fresh.get_card("m", 1)["sha256"] == v1.card["sha256"]

    got = fresh.download("m", 1, tmp_path / "dest")
    assert (tmp_path / "dest" / "model.pt").read_bytes() == b"one" and got.version == 1
    assert json.loads((tmp_path / "dest" / "card.json").read_text()) == v1.card


def check_concurrent_promotions(location: str, tmp_path: Path, aliases_each: int) -> None:
    """Two processes promote ever better versions and two set their own aliases; nothing is lost.

    Under a lost update, A could overwrite B's v6 with its v5, or drop B's aliases.
    """
    reg = open_registry(location)
    for v in range(1, 7):
        reg.register("m", checkpoint(tmp_path / f"{v}.pt", bytes([v])), card(0.5 + v / 100))
    codes = run_processes(promote_in_order, [(location, [1, 3, 5]), (location, [2, 4, 6])])
    codes += run_processes(set_aliases, [(location, "a", aliases_each), (location, "b", aliases_each)])
    assert codes == [0, 0, 0, 0]
    aliases = reg.aliases("m")
    assert aliases.pop("production") == 6
    assert sorted(aliases) == sorted([f"a{i}" for i in range(aliases_each)] + [f"b{i}" for i in range(aliases_each)])


def check_promotion(location: str, tmp_path: Path) -> None:
    reg = open_registry(location)
    for i, acc in enumerate((0.80, 0.90, 0.85)):
        reg.register("m", checkpoint(tmp_path / f"{i}.pt", bytes([i]) * 10), card(acc))
    first = reg.promote("m", 1)
    assert first.promoted and "not set" in first.reason and reg.aliases("m") == {"production": 1}
    better = reg.promote("m", 2)
    assert better.promoted and better.previous == 1 and (better.value, better.previous_value) == (0.90, 0.80)
    worse = reg.promote("m", 3)
    assert not worse.promoted and "0.85 < 0.9" in worse.reason and reg.aliases("m") == {"production": 2}
    again = reg.promote("m", 2)
    assert not again.promoted and "already" in again.reason
    forced = reg.promote("m", 3, policy="always")
    assert forced.promoted and reg.aliases("m") == {"production": 3}
    assert reg.get("m", "production").version == 3
    assert reg.promote("m", 1, alias="staging").promoted  # aliases are independent
    assert reg.aliases("m") == {"production": 3, "staging": 1}


def check_cli(location: str, tmp_path: Path) -> None:
    """list, show, promote, download through the command line, as a user would."""
    reg = open_registry(location)
    reg.register("m", checkpoint(tmp_path / "a.pt", b"one"), card(0.8))
    reg.register("m", checkpoint(tmp_path / "b.pt", b"two"), card(0.9))

    assert "m  versions: 2  latest: v2  aliases: -" in cli(location, "list").stdout
    assert "promoted: production -> v2" in cli(location, "promote", "m", "2").stdout
    kept = cli(location, "promote", "m", "v1").stdout
    assert "not promoted: production stays at v2" in kept and "accuracy 0.8 < 0.9" in kept

    rows = {line.split()[0]: line for line in cli(location, "list", "m").stdout.splitlines()[1:]}
    assert "production" in rows["v2"] and "accuracy=0.9000" in rows["v2"] and "production" not in rows["v1"]

    shown = cli(location, "show", "m:production").stdout
    for text in ("m v2  (aliases: production)", "accuracy=0.9000", "0123456789abcdef0123", "sklearn:digits", "plots"):
        assert text in shown, text
    assert json.loads(cli(location, "show", "m:1", "--json").stdout)["version"] == 1

    dest = tmp_path / "downloaded"
    assert "sha256 verified" in cli(location, "download", "m:production", str(dest)).stdout
    assert (dest / "model.pt").read_bytes() == b"two" and json.loads((dest / "card.json").read_text())["version"] == 2

    assert "promoted: production -> v1 (forced" in cli(location, "promote", "m", "1", "--force").stdout
    assert reg.aliases("m") == {"production": 1}

    for args, message in (
        (("show", "m:nope"), "no alias 'nope'"),
        (("download", "m:7", str(dest)), "no version 7; versions: [1, 2]"),
    ):
        bad = cli(location, *args, check=False)
        assert bad.returncode == 2 and message in bad.stderr and "Traceback" not in bad.stderr, bad.stderr


def register_then_crash_mid_copy(barrier: Any, location: str, src: str) -> None:
    """Local backend: be killed while the checkpoint is being copied into the staging directory."""
    import shutil

    def half_then_die(source: str, dest: str, *args: Any, **kwargs: Any) -> None:
        Path(dest).write_bytes(Path(source).read_bytes()[:1])
        die()

    shutil.copyfile = half_then_die  # type: ignore[assignment]
    open_registry(location).register("m", src, card(0.99))


def publish_then_crash_before_alias(barrier: Any, location: str, src: str) -> None:
    """register's order: publish the version, then be killed before the alias moves."""
    registry = open_registry(location)
    registry.publish("m", src, card(0.99), "digits")
    die()


def register_and_promote_with_umask(barrier: Any, location: str, src: str, umask: int) -> None:
    os.umask(umask)
    registry = open_registry(location)
    version, _ = registry.publish("m", src, card(0.9), "digits")
    registry.promote("m", version.version)


def promote_then_crash_before_alias_replace(barrier: Any, location: str, version: int) -> None:
    """Be killed after the new aliases.json is written to its temp file, before it replaces the old one."""
    registry = open_registry(location)
    os.replace = die  # type: ignore[assignment]
    registry.set_alias("m", "production", version)
