"""What the flow asks of DVC: the stage order from its graph, the default remote, what dvc.lock records,
`dvc exp save`, and the environment its stages run in."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

# dvc.lock has one reader, beside the lineage that also reads it.
from pipelines.registry.lineage import recorded_stages  # noqa: F401  (re-exported for the flow)

# No network here and none needed: keep DVC's telemetry off.
os.environ.setdefault("DVC_NO_ANALYTICS", "1")


def dvc_bin() -> str:
    return str(Path(sys.executable).parent / "dvc")


def stage_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    """Stages run `python`: make it this interpreter's, and keep DVC out of the tty."""
    env = dict(os.environ)
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    env["PYTHONUNBUFFERED"] = "1"
    env.update(extra or {})
    return env


def stage_order(workdir: Path, datasets: list[str] | None = None) -> list[str]:
    """Stage names of dvc.yaml in dependency order, as DVC sees the graph, one dataset after another.

    Stages are `<stage>@<dataset>` (dvc.yaml's foreach); `datasets` keeps only those datasets' chains.
    """
    import networkx as nx
    from dvc.repo import Repo

    with Repo(str(workdir)) as repo:
        graph = repo.index.graph  # edges point from a stage to the stages it depends on
        ordered = [stage.name for stage in reversed(list(nx.topological_sort(graph))) if getattr(stage, "cmd", None)]
    position = {name: i for i, name in enumerate(ordered)}
    wanted = [n for n in ordered if datasets is None or n.partition("@")[2] in datasets]
    rank = {name: i for i, name in enumerate(datasets or [])}
    for name in wanted:
        rank.setdefault(name.partition("@")[2], len(rank) + position[name])
    # Each dataset's chain runs through before the next starts (in the order asked for):
    # results arrive early and the logs read in order.
    return sorted(wanted, key=lambda n: (rank[n.partition("@")[2]], position[n]))


def default_remote(workdir: str) -> str | None:
    """The DVC remote named by `core.remote`: `local` as committed (None: a project without one, nothing to sync)."""
    from dvc.repo import Repo

    with Repo(workdir) as repo:
        return repo.config["core"].get("remote")


def remote_url(workdir: str, name: str) -> str:
    """Where the DVC remote `name` points (its url, as configured: .dvc/config, then config.local)."""
    from dvc.repo import Repo

    with Repo(workdir) as repo:
        return str(repo.config["remote"].get(name, {}).get("url", "?"))


def outputs_here(workdir: str | Path, stages: list[str]) -> bool:
    """Whether every output dvc.lock records for these stages is in the workspace or in DVC's cache.

    Then a pull has nothing the run needs: if the remote is down, the run can go on without it.
    """
    from dvc.repo import Repo

    with Repo(str(workdir)) as repo:
        wanted = [stage for stage in repo.index.stages if stage.name in stages]  # with dvc.lock's hashes
        return all(_output_here(out) for stage in wanted for out in stage.outs)


def _output_here(out) -> bool:
    """The output as dvc.lock records it: unchanged in the workspace, or every object of it in the cache."""
    if not out.hash_info:  # no recorded hash: nothing a pull could bring
        return True
    if out.exists and not out.changed_checksum():
        return True
    if not out.use_cache or out.changed_cache():
        return False
    from dvc_data.hashfile.tree import Tree

    obj = out.get_obj()  # a file's object (in the cache), or a directory's tree: its files must be there too
    return not isinstance(obj, Tree) or all(out.cache.exists(oid.value) for _, _, oid in obj)


def save_experiment(workdir: str, name: str) -> str:
    """Record this run's workspace (params, dvc.lock, metrics) as a DVC experiment: it shows in `dvc exp show`."""
    safe = re.sub(r"[^A-Za-z0-9_-]+", "-", name).strip("-") or "flow-run"
    # dvc.lock is what makes it an experiment of this run; include it even before it was ever committed.
    proc = subprocess.run(
        [dvc_bin(), "exp", "save", "--force", "-n", safe, "-I", "dvc.lock"],
        cwd=workdir,
        env=stage_env(),
        capture_output=True,
        text=True,
    )
    if proc.returncode != 0:
        raise RuntimeError(f"dvc exp save failed: {(proc.stdout + proc.stderr).strip()[-500:]}")
    return safe
