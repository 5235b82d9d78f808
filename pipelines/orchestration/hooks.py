"""The flow run's name and its cancel/crash hook."""

from __future__ import annotations

from pathlib import Path

import yaml

from pipelines import paths, workspace
from pipelines.config import PipelineParams
from pipelines.orchestration import ray_head

FLOW_NAME = "training-pipeline"


def run_name() -> str:
    """The flow run's name: its datasets and their model families, e.g. `tabular(fnn) text(gru,lstm)`."""
    from prefect.runtime import flow_run

    try:
        given = flow_run.parameters or {}
        params = given.get("params")
        if params is None:
            params = yaml.safe_load((Path(given.get("workdir") or ".") / paths.PARAMS_FILE).read_text())
        elif isinstance(params, PipelineParams):
            params = params.model_dump(mode="json")
        sets = params.get("datasets") or {}
        names = given.get("datasets") or list(sets)
        parts = []
        for name in names:
            candidates = ((sets.get(name) or {}).get("train") or {}).get("candidates") or {}
            families = sorted({c.get("family", "fnn") for c in candidates.values() if isinstance(c, dict)})
            parts.append(f"{name}({','.join(families)})" if families else name)
        return " ".join(parts)[:120] or FLOW_NAME
    except Exception:  # a name is never worth failing a run for; bad params fail with their own message
        return FLOW_NAME


def stop_running_stage(flow, flow_run, state) -> None:
    """on_cancellation / on_crashed hook: stop stages (and the run's Ray) the flow process left behind.

    The flow stops its stages and its Ray instance itself when it is cancelled; this covers a
    flow process that was killed outright (the runner's SIGKILL after its grace period, the
    OOM killer), using the process groups the workspace lock recorded.
    """
    ray_head.stop_all()
    root = Path((flow_run.parameters or {}).get("workdir") or ".")
    record = workspace.read_record(root) or {}
    if record.get("flow_run_id") != str(flow_run.id):
        return
    for stage, pgid in (record.get("stages") or {}).items():
        if workspace.stop_process_group(int(pgid)):
            print(f"stopped {stage} (process group {pgid}) of flow run {flow_run.name}")
    if record.get("ray_pgid"):
        ray_head.stop_group(int(record["ray_pgid"]), 5.0)
        ray_head.kill_leftovers(record["ray_temp_dir"])
