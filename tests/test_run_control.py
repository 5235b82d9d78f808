"""Fast checks of the pieces behind running the pipeline from the Prefect UI.

Which failures are retried, the workspace lock, stopping a stage's process group,
the run name, what the artifacts say, the deployments `make serve` registers and
the source watcher. The same pieces run for real against a Prefect server in
tests/test_prefect_server.py.
"""

from __future__ import annotations

import base64
import http.server
import json
import os
import signal
import subprocess
import threading
import time
from functools import partial
from pathlib import Path

import pytest
import yaml

from pipelines import workspace
from pipelines.errors import PipelineInputError, SourceUnavailable
from pipelines.modalities.sources import _download_http
from tests.conftest import small_params

# ------------------------------------------------------------------ sources: bad input vs unavailable


class _Status(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        code = int(self.path.strip("/"))
        self.send_response(code)
        self.end_headers()
        self.wfile.write(b"a,b\n1,2\n")

    def log_message(self, *args):
        pass


@pytest.fixture
def status_server():
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Status)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


def test_a_server_error_is_temporary_a_missing_file_is_bad_input(status_server, tmp_path):
    for code in (500, 503, 429):
        with pytest.raises(SourceUnavailable, match=f"HTTP {code}"):
            _download_http(f"{status_server}/{code}", tmp_path)
    for code in (404, 403):
        with pytest.raises(PipelineInputError, match=f"HTTP {code}"):
            _download_http(f"{status_server}/{code}", tmp_path)
    with pytest.raises(SourceUnavailable, match="refused"):
        _download_http("http://127.0.0.1:9/data.csv", tmp_path)  # nothing listens on the discard port
    assert _download_http(f"{status_server}/200", tmp_path).read_text() == "a,b\n1,2\n"


def test_ingest_exits_75_for_an_unavailable_source_and_2_for_bad_input(status_server, tmp_path):
    from tests.conftest import BIN, project_env

    params = small_params(("tabular",))
    for code, exit_code in ((503, 75), (404, 2)):
        params["datasets"]["tabular"]["ingest"]["source"] = f"{status_server}/{code}"
        (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
        proc = subprocess.run(
            [str(BIN / "python"), "-m", "pipelines.stages.ingest", "tabular"],
            cwd=tmp_path,
            capture_output=True,
            text=True,
            env={**project_env(), "PYTHONPATH": str(Path(__file__).parents[1])},
        )
        assert proc.returncode == exit_code, proc.stderr
        assert f"HTTP {code}" in proc.stderr and "Traceback" not in proc.stderr


# ------------------------------------------------------------------ which stage failures are retried


def _failed_state(exc):
    from prefect.states import Failed

    return Failed(data=exc)


@pytest.mark.parametrize(
    "stage, exit_code, lock_busy, retried",
    [
        ("ingest@tabular", 2, False, False),  # bad input: never
        ("train@tabular", 2, False, False),
        ("ingest@tabular", 75, False, True),  # the source was unavailable
        ("ingest@tabular", 1, False, True),  # ingest reaches out: anything but bad input
        ("train@tabular", 1, False, False),  # a bug or a diverged model: retrying will not help
        ("train@tabular", None, True, True),  # another dvc command held DVC's lock
        ("evaluate@digits", 75, False, True),
    ],
)
def test_only_transient_stage_failures_are_retried(stage, exit_code, lock_busy, retried):
    from pipelines.orchestration.failures import StageFailed
    from pipelines.orchestration.failures import retry_transient as _retry_transient

    err = StageFailed(stage, "boom", exit_code=exit_code, lock_busy=lock_busy)
    assert _retry_transient(None, None, _failed_state(err)) is retried
    import pickle

    again = pickle.loads(pickle.dumps(err))  # Prefect may pickle the exception into the state
    assert (again.stage, again.exit_code, again.lock_busy, str(again)) == (stage, exit_code, lock_busy, "boom")
    assert _retry_transient(None, None, _failed_state(RuntimeError("other"))) is False


# A stage whose command exits with the codes of `plan` one run after another, logging each run.
_FLAKY_STAGE = """
import sys
from pathlib import Path

name = sys.argv[1]
runs = Path(f"runs-{name}.txt")
runs.write_text(runs.read_text() + "run\\n" if runs.exists() else "run\\n")
code = int(Path(f"plan-{name}.txt").read_text().split()[len(runs.read_text().split()) - 1])
Path(f"out-{name}.txt").write_text("done")
sys.exit(code)
"""
_RUN_TASK = """
import json, sys
from prefect import flow
from prefect.testing.utilities import prefect_test_harness
from pipelines.orchestration.failures import StageFailed
from pipelines.orchestration.stage_tasks import run_stage

@flow
def one_stage(stage: str, workdir: str) -> dict:
    return run_stage(stage, workdir)

with prefect_test_harness(server_startup_timeout=120):
    for stage in sys.argv[2:]:
        try:
            print(json.dumps({"stage": stage, "result": one_stage(stage, sys.argv[1])["stage"]}))
        except StageFailed as err:
            print(json.dumps({"stage": stage, "failed": err.exit_code}))
"""


@pytest.mark.slow
def test_the_stage_task_retries_a_transient_failure_and_not_bad_input(tmp_path):
    """The real task under a real Prefect API: exit 75 then 0 is retried to success; exit 2 runs once."""
    from tests.conftest import BIN, ROOT, project_env

    (tmp_path / "stage.py").write_text(_FLAKY_STAGE)
    (tmp_path / "plan-flaky.txt").write_text("75 75 0")
    (tmp_path / "plan-bad.txt").write_text("2 0")
    stages = {
        "train": {"foreach": ["flaky", "bad"], "do": {"cmd": "python stage.py ${item}", "outs": ["out-${item}.txt"]}}
    }
    (tmp_path / "dvc.yaml").write_text(yaml.safe_dump({"stages": stages}))
    env = {**project_env(), "PYTHONPATH": str(ROOT), "DL_PIPELINE_RETRY_BASE_SECONDS": "0.1"}
    subprocess.run([str(BIN / "dvc"), "init", "--no-scm", "-q"], cwd=tmp_path, env=env, check=True)
    proc = subprocess.run(
        [str(BIN / "python"), "-c", _RUN_TASK, str(tmp_path), "train@flaky", "train@bad"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]
    assert results == [{"stage": "train@flaky", "result": "train@flaky"}, {"stage": "train@bad", "failed": 2}]
    assert (tmp_path / "runs-flaky.txt").read_text().split() == ["run"] * 3  # two retries, then it passed
    assert (tmp_path / "runs-bad.txt").read_text().split() == ["run"]  # bad input: never retried


# ------------------------------------------------------------------ run names


def test_run_names_say_the_datasets_and_families(tmp_path, monkeypatch):
    import prefect.runtime.flow_run as runtime

    from pipelines.orchestration.hooks import run_name

    params = small_params(("tabular", "text"))
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    monkeypatch.setattr(runtime, "parameters", {"workdir": str(tmp_path)}, raising=False)
    assert run_name() == "tabular(fnn) text(gru,lstm)"
    monkeypatch.setattr(runtime, "parameters", {"workdir": str(tmp_path), "datasets": ["text"]}, raising=False)
    assert run_name() == "text(gru,lstm)"
    monkeypatch.setattr(
        runtime, "parameters", {"params": small_params(("digits",)), "workdir": "/nowhere"}, raising=False
    )
    assert run_name() == "digits(cnn)"
    monkeypatch.setattr(runtime, "parameters", {"workdir": "/nowhere"}, raising=False)
    assert run_name() == "training-pipeline"  # never fails the run over a name


# ------------------------------------------------------------------ the workspace lock


def test_a_second_run_waits_for_the_workspace_and_is_told_who_holds_it(tmp_path, monkeypatch):
    waits, order = [], []
    assert workspace.holder(tmp_path) is None
    workspace.refuse_if_held_elsewhere(tmp_path)  # a free workspace: stages run
    with workspace.hold(tmp_path, {"flow_run_name": "first", "flow_run_id": "1"}) as lock:
        lock.stage_started("train@tabular", 123)
        lock.stage_started("evaluate@digits", 124)  # the run's chains side by side: both are recorded
        assert lock.stage_pgids() == (123, 124)
        assert workspace.holder(tmp_path)["flow_run_name"] == "first"
        assert workspace.main([str(tmp_path)]) == 1  # `python -m pipelines.workspace` says it is held
        # A stage started by anything else (a `dvc repro` by hand) is refused; the run's own stages are not.
        with pytest.raises(
            workspace.WorkspaceBusy, match="in use by flow run 'first', running train@tabular, evaluate@digits"
        ):
            workspace.refuse_if_held_elsewhere(tmp_path)
        monkeypatch.setenv(workspace.TOKEN_ENV, lock.record["token"])
        workspace.refuse_if_held_elsewhere(tmp_path)

        def second():
            with workspace.hold(tmp_path, {"flow_run_name": "second"}, on_wait=waits.append):
                order.append("second")

        thread = threading.Thread(target=second)
        thread.start()
        time.sleep(0.5)
        assert thread.is_alive() and not order  # waiting
        order.append("first done")
    thread.join(5)
    assert order == ["first done", "second"]
    assert "in use by flow run 'first', running train@tabular" in waits[0]
    assert workspace.holder(tmp_path) is None and workspace.read_record(tmp_path) is None


def test_stopping_a_stage_stops_its_whole_process_group():
    proc = subprocess.Popen(["sh", "-c", "sleep 300 & sleep 300 & wait"], start_new_session=True)
    time.sleep(0.3)
    members = [
        int(p) for p in subprocess.run(["pgrep", "-g", str(proc.pid)], capture_output=True, text=True).stdout.split()
    ]
    assert len(members) == 3
    assert workspace.stop_process_group(proc.pid, grace_seconds=5, reap=proc.poll)
    for pid in members:
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0) if pid != proc.pid else os.killpg(proc.pid, 0)
    assert proc.returncode == -signal.SIGTERM
    assert not workspace.stop_process_group(proc.pid)  # nothing left


# ------------------------------------------------------------------ artifacts


PNG = base64.b64decode(
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwADhgGAWjR9awAAAABJRU5ErkJggg=="
)


def _evaluated_workspace(root: Path) -> None:
    """What evaluate and register leave for one dataset, in miniature."""
    from pipelines.registry.local import LocalModelRegistry

    ev = root / "data/evaluate/My_Data"
    (ev / "plots").mkdir(parents=True)
    for name in ("confusion_a.png", "confusion_b.png", "learning_curves.png"):
        (ev / "plots" / name).write_bytes(PNG)
    (ev / "plots/comparison.md").write_text(
        "# My_Data: test metrics\n\n| candidate | accuracy |\n|---|---|\n| a | 0.9 |\n"
    )
    report = {
        "dataset": "My_Data",
        "task": "binary",
        "primary_metric": "accuracy",
        "mode": "max",
        "best_candidate": "b",
        "candidates": {
            "a": {"val/accuracy": 0.8, "test/accuracy": 0.75, "test/f1_macro": 0.7, "test/confusion": [[1, 0], [0, 1]]},
            "b": {
                "val/accuracy": 0.9,
                "test/accuracy": 0.85,
                "test/f1_macro": float("nan"),
                "test/confusion": [[1, 0], [0, 1]],
            },
        },
        "best": {"candidate": "b", "test/accuracy": 0.85},
    }
    (ev / "metrics.json").write_text(json.dumps(report))
    (root / "data/train/My_Data").mkdir(parents=True)
    (root / "data/train/My_Data/summary.json").write_text(
        json.dumps({"candidates": {"a": {"family": "fnn"}, "b": {"family": "fnn"}}})
    )
    (root / "ckpt.pt").write_bytes(b"weights")
    card = {
        "dataset": "My_Data",
        "candidate": "b",
        "family": "fnn",
        "task": "binary",
        "primary_metric": "accuracy",
        "metrics": report["candidates"]["b"],
        "candidates_compared": ["a", "b"],
        "created_at": "2026-01-01T00:00:00+00:00",
        "lineage": {
            "git": {"commit": "c" * 40, "dirty": False},
            "data": {"source": "sklearn:breast_cancer", "prepared_dvc_md5": "m" * 32},
            "packages": {"torch": "2.13.0"},
        },
    }
    registry = LocalModelRegistry(root / "data/registry")
    version = registry.register("my-model", root / "ckpt.pt", card)
    registry.promote("my-model", version.version, "production", policy="always")
    (root / "data/register").mkdir(parents=True)
    (root / "data/register/My_Data.json").write_text(
        json.dumps(
            {
                "dataset": "My_Data",
                "name": "my-model",
                "version": 1,
                "uri": version.uri,
                "path": str(version.path),
                "sha256": version.card["sha256"],
                "candidate": "b",
                "promoted_to": "production",
            }
        )
    )


def test_artifacts_hold_the_metrics_plots_model_and_lineage(tmp_path):
    from pipelines.orchestration import artifacts

    _evaluated_workspace(tmp_path)
    assert artifacts.artifact_key("My_Data", "metrics") == "my-data-metrics"

    rows = artifacts.metrics_rows(tmp_path, "My_Data")
    assert [r["candidate"] for r in rows] == ["a", "b"] and rows[1]["best"] == "yes"
    assert rows[1] == {
        "candidate": "b",
        "family": "fnn",
        "best": "yes",
        "val/accuracy": 0.9,
        "test/accuracy": 0.85,
        "test/f1_macro": None,
    }

    plots = artifacts.plots_markdown(tmp_path, "My_Data")
    assert plots.count("](data:image/png;base64,") == 3
    assert plots.index("confusion b") < plots.index("learning curves") < plots.index("confusion a")  # the best first
    assert "| a | 0.9 |" in plots and (tmp_path / "data/evaluate/My_Data/plots/confusion_a.png").as_uri() in plots

    model, checkpoint = artifacts.model_markdown(tmp_path, "My_Data", "data/registry")
    assert checkpoint == (tmp_path / "data/registry/my-model/versions/v1/model.pt").as_uri()
    for words in (
        "# my-model v1",
        "candidate **b**",
        "`production` → v1",
        "c" * 40,
        "sklearn:breast_cancer",
        "torch 2.13.0",
        "Promoted to `production`",
    ):
        assert words in model, words
    assert "earlier run" in artifacts.model_markdown(tmp_path, "My_Data", "data/registry", reused=True)[0]
    assert artifacts.summary_row(tmp_path, "My_Data") == {
        "dataset": "My_Data",
        "model": "my-model:1",
        "candidate": "b",
        "metric": "test/accuracy",
        "value": 0.85,
        "promoted_to": "production",
    }


# ------------------------------------------------------------------ the deployments `make serve` registers


def test_serve_registers_a_nightly_schedule_the_presets_and_an_event_trigger(tmp_path):
    from pipelines.orchestration.serve import build_deployments

    (tmp_path / "params.yaml").write_text(yaml.safe_dump(small_params(("tabular", "digits"))))
    deployments = {d.name: d for d in build_deployments(tmp_path, cron="30 3 * * *", timezone="Europe/Paris")}
    assert set(deployments) == {
        "nightly",
        "relu-vs-sigmoid",
        "digits-cnn",
        "on-new-data",
    }  # presets for the datasets there are
    nightly = deployments["nightly"]
    (schedule,) = nightly.schedules
    assert (schedule.schedule.cron, schedule.schedule.timezone, schedule.active) == ("30 3 * * *", "Europe/Paris", True)
    assert nightly.parameters == {"workdir": str(tmp_path.resolve())}
    digits = deployments["digits-cnn"]
    assert (
        digits.parameters["datasets"] == ["digits"]
        and digits.parameters["params"]["datasets"]["digits"]["train"]["epochs"] == 4
    )
    (trigger,) = deployments["on-new-data"].triggers
    assert trigger.expect == {"dl-pipeline.source.changed"} and trigger.parameters["refresh"] is True
    assert trigger.parameters["datasets"] == [{"__prefect_kind": "jinja", "template": "{{ event.payload.dataset }}"}]

    # The UI's form is built from this schema: the typed config, every section and key.
    schema = nightly._parameter_openapi_schema.model_dump()
    assert set(schema["properties"]) == {"params", "datasets", "workdir", "refresh", "save_experiment_as", "parallel"}
    defs = schema["definitions"]
    assert {"datasets", "train", "evaluate", "register"} <= set(defs["PipelineParams"]["properties"])
    assert {"epochs", "batch_size", "candidates", "early_stopping"} <= set(defs["DatasetTrainParams"]["properties"])
    assert defs["DatasetTrainParams"]["properties"]["epochs"]["minimum"] == 1
    assert defs["FnnCandidate"]["additionalProperties"] is False  # a misspelled key is refused by the server too
    assert "replaces params.yaml" in schema["properties"]["params"]["description"]


def test_prefect_yaml_has_the_same_deployments_for_a_process_pool_with_a_git_pull():
    from pipelines.orchestration.serve import PRESETS

    config = yaml.safe_load((Path(__file__).parents[1] / "prefect.yaml").read_text())
    names = {d["name"]: d for d in config["deployments"]}
    assert set(names) == {"nightly", "on-new-data", *PRESETS}
    assert any("git_clone" in next(iter(step)) for step in config["pull"])
    for name, deployment in names.items():
        assert deployment["entrypoint"] == "pipelines/orchestration/flow.py:training_pipeline"
        assert deployment["work_pool"]["name"] == "local-process"
        if name in PRESETS:
            assert deployment["parameters"]["datasets"] == [PRESETS[name][0]]
    assert names["nightly"]["schedules"][0]["cron"] == "0 2 * * *"
    # `prefect deploy` templates the file with the environment first: the trigger's Jinja must survive it.
    from prefect.utilities.templating import apply_values

    (trigger,) = names["on-new-data"]["triggers"]
    deployed = apply_values(trigger["parameters"], os.environ, remove_notset=False)
    assert deployed["datasets"] == [{"__prefect_kind": "jinja", "template": "{{ event.payload.dataset }}"}]


# ------------------------------------------------------------------ the source watcher


def test_the_watcher_reports_a_changed_source_once(tmp_path):
    from pipelines.orchestration.watch import poll

    params = small_params(("tabular", "digits"))
    params["datasets"]["tabular"]["ingest"]["source"] = "houses.csv"
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    (tmp_path / "houses.csv").write_text("a,target\n1,0\n")
    changes, state = poll(tmp_path)
    assert changes == [] and set(state) == {"tabular"}  # the first look only records; sklearn:digits is built in
    assert poll(tmp_path, state=state)[0] == []
    time.sleep(0.01)
    (tmp_path / "houses.csv").write_text("a,target\n1,0\n2,1\n")
    changes, state = poll(tmp_path, state=state)
    assert [c["dataset"] for c in changes] == ["tabular"] and changes[0]["source"] == "houses.csv"
    assert poll(tmp_path, state=state)[0] == []


def test_the_watcher_reads_http_sources_with_a_head_request(tmp_path):
    from pipelines.orchestration.watch import fingerprint

    (tmp_path / "t.csv").write_text("a,b\n")
    server = http.server.ThreadingHTTPServer(
        ("127.0.0.1", 0), partial(http.server.SimpleHTTPRequestHandler, directory=str(tmp_path))
    )
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        first = fingerprint(f"http://127.0.0.1:{server.server_address[1]}/t.csv", tmp_path)
        os.utime(tmp_path / "t.csv", (time.time() + 10, time.time() + 10))
        assert first and fingerprint(f"http://127.0.0.1:{server.server_address[1]}/t.csv", tmp_path) != first
    finally:
        server.shutdown()


def test_the_flow_pulls_only_stages_that_dvc_lock_records(tmp_path):
    """A first run has no dvc.lock: nothing to pull (DVC would only warn per output);
    later runs pull what it records."""
    from pipelines.orchestration.dvc_ops import recorded_stages

    stages = ["ingest@tabular", "prepare@tabular", "ingest@digits"]
    assert recorded_stages(tmp_path, stages) == []
    (tmp_path / "dvc.lock").write_text(
        "schema: '2.0'\nstages:\n  ingest@tabular:\n    cmd: python -m pipelines.stages.ingest tabular\n"
    )
    assert recorded_stages(tmp_path, stages) == ["ingest@tabular"]
