"""The pipeline run from a real Prefect server, the way the UI runs it.

`python -m pipelines.orchestration.serve` (what `make serve` runs) starts `prefect server start`
on a free port with its own PREFECT_HOME (SQLite) and serves the deployments on a
fresh copy of the project. The tests start runs through the API exactly as the
UI's Run button does (POST /deployments/{id}/create_flow_run, via run_deployment),
with non-default parameters, and read the results back from the API, the workspace,
the model registry and, in headless Chromium, the UI itself.

One small dataset (tabular, 2 epochs) keeps it to a few minutes on 2 cores.
"""

from __future__ import annotations

import contextlib
import http.server
import json
import os
import re
import signal
import socket
import subprocess
import threading
import time
import urllib.request
from functools import partial
from pathlib import Path

import pytest
import yaml

from pipelines.orchestration.serve import DATASET_FROM_EVENT
from tests.conftest import BIN, ROOT, copy_project, project_env, small_params

pytestmark = pytest.mark.slow
FLOW = "training-pipeline"
MAIN = f"{FLOW}/relu-vs-sigmoid"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(what: str, check, timeout: float, every: float = 1.0):
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(every)


# ------------------------------------------------------------------ fixtures: a data source, the project, the server


class FlakySource(http.server.SimpleHTTPRequestHandler):
    """Serves files; the first GET of each file answers 503 (a source that is briefly down)."""

    failed: set = set()

    def do_GET(self):
        if self.path not in self.failed:
            self.failed.add(self.path)
            self.send_error(503, "briefly unavailable")
            return
        super().do_GET()

    def log_message(self, *args):
        pass


@pytest.fixture(scope="module")
def source_url(tmp_path_factory):
    from sklearn.datasets import load_breast_cancer

    where = tmp_path_factory.mktemp("source")
    load_breast_cancer(as_frame=True).frame.to_csv(where / "breast_cancer.csv", index=False)
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), partial(FlakySource, directory=str(where)))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}/breast_cancer.csv"
    server.shutdown()


@pytest.fixture(scope="module")
def run_params(source_url) -> dict:
    """What the test 'types into the form': one dataset, 2 epochs, its data from an URL."""
    params = small_params(("tabular",), epochs=2)
    params["datasets"]["tabular"]["ingest"]["source"] = source_url
    return params


class Served:
    """`python -m pipelines.orchestration.serve` running on a project copy, with the server it started."""

    def __init__(self, project: Path, home: Path, port: int):
        self.project, self.home, self.port = project, home, port
        self.api_url = f"http://127.0.0.1:{port}/api"
        self.ui_url = f"http://127.0.0.1:{port}"
        self.env = project_env()
        self.env.pop("PREFECT_API_URL", None)
        self.env.update(
            PREFECT_HOME=str(home),
            PREFECT_RUNNER_POLL_FREQUENCY="2",  # pick scheduled runs up quickly
            DL_PIPELINE_RETRY_BASE_SECONDS="1",  # retry a failed ingest after 1 s, not 10
        )
        self.log = open(home / "serve.log", "w")
        self.proc = subprocess.Popen(
            [
                str(BIN / "python"),
                "-m",
                "pipelines.orchestration.serve",
                "--workdir",
                str(project),
                "--port",
                str(port),
            ],
            cwd=project,
            env=self.env,
            stdout=self.log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def client(self):
        from prefect.client.orchestration import get_client

        return get_client(sync_client=True)

    def stop(self) -> None:
        """What Ctrl-C on `make serve` does: the runner stops and so does the server it started."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(60)
            except subprocess.TimeoutExpired:
                pass
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.log.close()


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    from prefect.settings import PREFECT_API_URL, temporary_settings

    project = copy_project(tmp_path_factory.mktemp("project"))  # the repo's own params.yaml: all four datasets
    home = tmp_path_factory.mktemp("prefect-home")
    served = Served(project, home, free_port())
    try:
        with temporary_settings(updates={PREFECT_API_URL: served.api_url}):
            wait_for("the server and the deployments", lambda: _deployments(served) >= 6, timeout=240, every=2)
            yield served
    finally:
        served.stop()


def _deployments(served: Served) -> int:
    if served.proc.poll() is not None:
        raise AssertionError(
            "pipelines.orchestration.serve exited:\n" + (served.home / "serve.log").read_text()[-3000:]
        )
    try:
        with urllib.request.urlopen(f"{served.api_url}/health", timeout=2):
            pass
        return len(api(served, "/deployments/filter", {"limit": 50, "offset": 0, "sort": "NAME_ASC"}))
    except Exception:
        return 0


# ------------------------------------------------------------------ API helpers


def api(served: Served, path: str, body: dict):
    """POST to the REST API: a flow run's artifacts, its own and its tasks' (the client's filter joins task runs)."""
    request = urllib.request.Request(
        f"{served.api_url}{path}",
        data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json"},
        method="POST",
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.loads(response.read())


def run(served: Served, deployment: str, parameters: dict):
    """What the UI's Run button does: create a flow run of the deployment with these parameters."""
    from prefect.deployments import run_deployment

    return run_deployment(deployment, parameters=parameters, timeout=0)


def flow_run(served: Served, run_id):
    with served.client() as client:
        return client.read_flow_run(run_id)


def wait_final(served: Served, run_id, timeout: float):
    def final():
        fr = flow_run(served, run_id)
        return fr if fr.state and fr.state.is_final() else None

    return wait_for(f"flow run {run_id} to finish", final, timeout, every=2)


def task_runs(served: Served, run_id) -> dict:
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId
    from prefect.client.schemas.sorting import TaskRunSort

    with served.client() as client:
        runs = client.read_task_runs(
            flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[run_id])),
            limit=200,
            sort=TaskRunSort.EXPECTED_START_TIME_DESC,
        )
    return {t.name: t for t in runs}


def log_entries(served: Served, run_id) -> list:
    from prefect.client.schemas.filters import LogFilter, LogFilterFlowRunId
    from prefect.client.schemas.sorting import LogSort

    entries, offset = [], 0
    with served.client() as client:
        while True:
            page = client.read_logs(
                LogFilter(flow_run_id=LogFilterFlowRunId(any_=[run_id])),
                limit=200,
                offset=offset,
                sort=LogSort.TIMESTAMP_ASC,
            )
            entries += page
            offset += len(page)
            if len(page) < 200:
                return entries


def logs(served: Served, run_id) -> str:
    return "\n".join(entry.message for entry in log_entries(served, run_id))


def artifacts(served: Served, run_id) -> dict:
    """The run's artifacts by key: {key: {"id", "type", "data", ...}}."""
    found = api(
        served,
        "/artifacts/filter",
        {"artifacts": {"flow_run_id": {"any_": [str(run_id)]}}, "limit": 200, "offset": 0, "sort": "CREATED_DESC"},
    )
    return {a["key"]: a for a in found}


def runs_of(served: Served, deployment: str) -> list:
    from prefect.client.schemas.filters import DeploymentFilter, DeploymentFilterName
    from prefect.client.schemas.sorting import FlowRunSort

    with served.client() as client:
        return client.read_flow_runs(
            deployment_filter=DeploymentFilter(name=DeploymentFilterName(any_=[deployment.split("/")[1]])),
            limit=200,
            sort=FlowRunSort.EXPECTED_START_TIME_DESC,
        )


# ------------------------------------------------------------------ the tests


@pytest.fixture(scope="module")
def main_run(served, run_params):
    """One run of the relu-vs-sigmoid preset with the form changed: tabular only, 2 epochs, data from an URL."""
    started = run(served, MAIN, {"params": run_params, "datasets": ["tabular"]})
    return wait_final(served, started.id, timeout=420)


def test_a_run_started_like_the_run_button_completes_with_its_results_on_the_run_page(served, main_run, source_url):
    assert main_run.state.is_completed(), main_run.state.message
    assert main_run.name == "tabular(fnn)"  # says the datasets and families
    assert main_run.parameters["params"]["datasets"]["tabular"]["train"]["epochs"] == 2

    tasks = task_runs(served, main_run.id)
    assert set(tasks) == {
        f"{s}@tabular" for s in ("ingest", "profile", "prepare", "train", "evaluate", "register", "artifacts")
    } | {"dvc-push"}  # to the default DVC remote (a temp dir here: copy_project); no dvc.lock yet, so nothing to pull
    # The source answered 503 first: ingest exited 75 and was retried once (after 1 s here, 10 s by default).
    assert tasks["ingest@tabular"].run_count == 2 and tasks["train@tabular"].run_count == 1
    text = logs(served, main_run.id)
    assert "HTTP 503" in text and "temporary: trying again may work" in text

    found = artifacts(served, main_run.id)
    assert {"tabular-profile", "tabular-metrics", "tabular-plots", "tabular-model", "tabular-checkpoint"} <= set(found)
    assert "training-summary" in found
    progress = found["tabular-training-progress"]  # the train stage's progress, at its end
    assert progress["type"] == "progress" and float(progress["data"]) == 100
    metrics = found["tabular-metrics"]
    assert metrics["type"] == "table"
    rows = json.loads(metrics["data"]) if isinstance(metrics["data"], str) else metrics["data"]
    assert sorted(r["candidate"] for r in rows if r["family"] != "baseline") == ["fnn-relu", "fnn-sigmoid"]
    assert sorted(r["candidate"] for r in rows if r["family"] == "baseline") == [
        "hist_gradient_boosting",
        "logistic_regression",
    ]
    assert all(0 <= r["test/accuracy"] <= 1 for r in rows) and sum(r["best"] == "yes" for r in rows) == 1
    # The verdict is in the artifact's description exactly when metrics.json records an unbeaten baseline.
    report = json.loads((served.project / "data/evaluate/tabular/metrics.json").read_text())
    said = [f"No neural candidate beats {name} on test/accuracy" for name in report["unbeaten_baselines"]]
    assert all(words in (metrics.get("description") or "") for words in said)
    assert ("No neural candidate beats" in (metrics.get("description") or "")) == bool(said)
    plots = found["tabular-plots"]["data"]
    assert plots.count("](data:image/png;base64,") == 3  # two confusion matrices and the learning curves
    model = found["tabular-model"]["data"]
    assert "# tabular-fnn v1" in model and source_url in model and "Promoted to `production`" in model
    registry_dir = served.project / "data/registry/tabular-fnn/versions/v1"
    assert (registry_dir / "model.pt").as_uri() in found["tabular-checkpoint"]["data"]

    from pipelines.registry.local import LocalModelRegistry

    version = LocalModelRegistry(served.project / "data/registry").get("tabular-fnn", "production")
    assert version.version == 1 and version.card["lineage"]["data"]["source"] == source_url
    assert version.card["metrics"]["test/accuracy"] == pytest.approx(
        next(r["test/accuracy"] for r in rows if r["best"] == "yes"), abs=1e-4
    )


def test_bad_parameters_are_refused_by_the_api_naming_the_key_and_no_run_starts(served, main_run, run_params):
    from prefect.exceptions import PrefectHTTPStatusError

    before = len(runs_of(served, MAIN))
    for change, key, words in (
        (("epochs", 0), "params.datasets.tabular.train.epochs", "0 is less than the minimum of 1"),
        (("epochz", 3), "params.datasets.tabular.train", "'epochz' was unexpected"),
    ):
        bad = yaml.safe_load(yaml.safe_dump(run_params))
        bad["datasets"]["tabular"]["train"][change[0]] = change[1]
        with pytest.raises(PrefectHTTPStatusError) as refused:
            run(served, MAIN, {"params": bad, "datasets": ["tabular"]})
        assert refused.value.response.status_code == 409
        assert f"Validation failed for field '{key}'" in refused.value.response.json()["detail"] and words in str(
            refused.value
        )
    with pytest.raises(PrefectHTTPStatusError, match="Validation failed for field 'datasets'"):
        run(served, MAIN, {"datasets": "tabular"})  # a string, not a list
    assert len(runs_of(served, MAIN)) == before  # nothing was started

    # A rule JSON schema cannot state (which families fit which data) passes the API,
    # then fails the run at once, before any stage, naming the key.
    bad = yaml.safe_load(yaml.safe_dump(run_params))
    bad["datasets"]["tabular"]["train"]["candidates"]["fnn-relu"] = {"family": "cnn"}
    failed = wait_final(served, run(served, MAIN, {"params": bad}).id, timeout=120)
    assert (
        failed.state.is_failed()
        and "train.candidates.fnn-relu.family: cnn cannot learn from table data" in failed.state.message
    )
    assert task_runs(served, failed.id) == {}
    assert yaml.safe_load((served.project / "params.yaml").read_text()) == run_params  # untouched


def test_the_nightly_cron_schedule_creates_scheduled_runs(served):
    import datetime as dt

    with served.client() as client:
        nightly = client.read_deployment_by_name(f"{FLOW}/nightly")
    (schedule,) = nightly.schedules
    assert schedule.schedule.cron == "0 2 * * *" and schedule.active

    def scheduled():
        return [r for r in runs_of(served, f"{FLOW}/nightly") if r.state_type.value == "SCHEDULED"]

    upcoming = wait_for("the scheduler to schedule nightly runs", scheduled, timeout=90, every=2)
    now = dt.datetime.now(dt.UTC)
    for r in upcoming:
        when = r.expected_start_time.astimezone(dt.UTC)
        assert (when.hour, when.minute) == (2, 0) and now < when < now + dt.timedelta(days=101)
        assert r.auto_scheduled and r.parameters == {"workdir": str(served.project)}


def _processes() -> dict[int, tuple[int, int, str]]:
    """pid -> (ppid, pgid, cmdline) of every process."""
    table = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
                cmd = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            except OSError:
                continue
            fields = stat[stat.rindex(")") + 2 :].split()
            table[int(entry.name)] = (int(fields[1]), int(fields[2]), cmd)
    return table


def _stage_tree(pgid: int) -> dict[int, str]:
    """The stage's process group and every descendant (Ray's processes included)."""
    table = _processes()
    tree = {pid for pid, (_, group, _) in table.items() if group == pgid}
    grew = True
    while grew:
        more = {pid for pid, (ppid, _, _) in table.items() if ppid in tree} - tree
        tree |= more
        grew = bool(more)
    return {pid: table[pid][2] for pid in tree}


def _alive(pids) -> list[int]:
    alive = []
    for pid in pids:
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if state != "Z":
            alive.append(pid)
    return alive


def test_cancelling_a_run_stops_its_training_and_runs_in_one_workspace_take_turns(served, main_run, run_params):
    from prefect.states import Cancelling

    from pipelines import workspace

    long = yaml.safe_load(yaml.safe_dump(run_params))
    long["datasets"]["tabular"]["train"].update(epochs=500, early_stopping={"patience": 500})
    cancelled = run(served, MAIN, {"params": long, "datasets": ["tabular"]})

    def training():
        record = workspace.holder(served.project) or {}
        stages = record.get("stages") or {}
        if record.get("flow_run_id") != str(cancelled.id) or "train@tabular" not in stages:
            return None
        tree = _stage_tree(stages["train@tabular"])
        if record.get("ray_pgid"):  # the run's one Ray instance, in its own process group
            tree.update(_stage_tree(record["ray_pgid"]))
        # Training has started once its first epoch is logged: by default in the train stage's own process
        # (`num_workers: auto`, Ray Train's local mode), else in Ray Train's workers of the run's Ray instance.
        started = re.search(r"\] epoch \d+/500", logs(served, cancelled.id))
        return tree if started else None

    tree = wait_for("the cancelled run's training to start", training, timeout=240, every=1)
    assert any("pipelines.stages.train" in cmd for cmd in tree.values())

    # While it trains, the run page's progress artifact of the train stage advances (percent of its epochs).
    def progress() -> tuple[float, str] | None:
        found = artifacts(served, cancelled.id).get("tabular-training-progress")
        return (float(found["data"]), found["description"]) if found else None

    first, _ = wait_for("the train stage's progress artifact", progress, timeout=120, every=0.5)
    later, said = wait_for(
        "the progress artifact to advance", lambda: (now := progress()) and now[0] > first and now, 120, every=0.5
    )
    assert 0 <= first < later < 100, (first, later)
    shape = r"train@tabular: \d+% of its epochs, (<= \d+ (s|min)|< 1 s) left; candidate fnn-\w+ \(\d of 2\)"
    assert re.match(shape, said), said

    # A `dvc repro` by hand meanwhile: DVC's own lock on the outputs in use refuses it, naming the stage
    # that holds them; a stage DVC would let run refuses itself, naming the flow run that holds the workspace.
    def by_hand(*args):
        done = subprocess.run(
            [str(BIN / "dvc"), "repro", *args], cwd=served.project, capture_output=True, text=True, env=project_env()
        )
        return done.returncode, done.stdout + done.stderr

    name = flow_run(served, cancelled.id).name
    code, out = by_hand()
    assert code != 0 and "is busy, it is being blocked by" in out and "repro --single-item train@tabular" in out, out
    code, out = by_hand("--single-item", "--force", "ingest@tabular")
    assert code != 0 and f"is in use by flow run '{name}', running train@tabular" in out and "exited with 75" in out, (
        out
    )
    who = subprocess.run(
        [str(BIN / "python"), "-m", "pipelines.workspace", str(served.project)],
        capture_output=True,
        text=True,
        env=project_env(),
        cwd=served.project,
    )
    assert who.returncode == 1 and f"held by flow run '{name}', running train@tabular" in who.stdout

    # A second run of the same workspace waits for the first, and says so.
    waiting = run(served, MAIN, {"params": run_params, "datasets": ["tabular"]})
    wait_for(
        "the second run to wait for the workspace",
        lambda: "is in use by flow run" in logs(served, waiting.id),
        timeout=120,
        every=2,
    )
    assert task_runs(served, waiting.id) == {}

    with served.client() as client:  # the UI's Cancel button
        client.set_flow_run_state(cancelled.id, Cancelling(message="cancelled by the test"))
    ended = wait_final(served, cancelled.id, timeout=120)
    assert ended.state.is_cancelled(), ended.state
    wait_for("every process of the cancelled training to exit", lambda: not _alive(tree), timeout=60)
    (stopping,) = [e for e in log_entries(served, cancelled.id) if "train@tabular: stopping its processes" in e.message]

    done = wait_final(served, waiting.id, timeout=240)
    assert done.state.is_completed(), done.state.message
    first_task = min(t.start_time for t in task_runs(served, waiting.id).values() if t.start_time)
    assert first_task > stopping.timestamp  # its stages ran only after the cancelled run had stopped its training
    assert (served.project / "data/train/tabular/summary.json").exists()  # DVC restored the 2-epoch outputs


def test_new_data_at_a_source_starts_the_on_new_data_deployment(served, main_run, source_url):
    # The watcher last saw another version of the file: this poll finds it changed and emits the event.
    state = served.project / ".dvc/tmp/watch.json"
    state.write_text(json.dumps({"tabular": {"source": source_url, "fingerprint": "last-modified:long ago"}}))
    env = {**served.env, "PREFECT_API_URL": served.api_url}
    watch = subprocess.run(
        [str(BIN / "python"), "-m", "pipelines.orchestration.watch", "--workdir", str(served.project), "--once"],
        cwd=served.project,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert watch.returncode == 0 and "tabular: " + source_url + " changed" in watch.stdout, watch.stdout + watch.stderr

    started = wait_for(
        "the automation to start on-new-data", lambda: runs_of(served, f"{FLOW}/on-new-data"), timeout=120, every=2
    )
    (triggered,) = started
    assert triggered.parameters["datasets"] == ["tabular"] and triggered.parameters["refresh"] is True
    done = wait_final(served, triggered.id, timeout=240)
    assert done.state.is_completed(), done.state.message
    text = logs(served, done.id)
    assert "Running stage 'ingest@tabular'" in text  # ingested again although the source's name is unchanged
    assert "Stage 'train@tabular' didn't change, skipping" in text  # the same data: nothing else re-ran


def _page_shows(driver, *texts: str, timeout: float = 60) -> str:
    from selenium.webdriver.common.by import By

    def shown():
        body = driver.find_element(By.TAG_NAME, "body").text
        return body if all(t in body for t in texts) else None

    return wait_for(f"the page to show {texts}", shown, timeout, every=0.5)


def test_the_ui_shows_the_run_its_state_and_its_artifacts(served, main_run, chromium, tmp_path):
    from selenium.webdriver.common.by import By

    # The screenshots go to a temp dir; UPDATE_SCREENSHOTS=1 refreshes the README's copies in docs/
    # (a test run never rewrites tracked files on its own).
    docs = ROOT / "docs" if os.environ.get("UPDATE_SCREENSHOTS") == "1" else tmp_path
    docs.mkdir(exist_ok=True)
    # The run page, Artifacts tab (the UI at / is Prefect's v2 UI), tall enough for all the artifact cards.
    chromium.set_window_size(1400, 1300)
    chromium.get(f"{served.ui_url}/v2/runs/flow-run/{main_run.id}?tab=Artifacts")
    _page_shows(
        chromium, "tabular(fnn)", "Completed", "tabular-metrics", "tabular-plots", "tabular-model", "training-summary"
    )
    time.sleep(1)  # let the timeline finish drawing
    chromium.save_screenshot(str(docs / "prefect-ui-run.png"))

    # The metrics table and the plots, each on its artifact's page.
    chromium.set_window_size(1400, 1000)
    found = artifacts(served, main_run.id)
    chromium.get(f"{served.ui_url}/v2/artifacts/artifact/{found['tabular-metrics']['id']}")
    _page_shows(chromium, "fnn-relu", "fnn-sigmoid", "val/accuracy", "test/accuracy")
    chromium.get(f"{served.ui_url}/v2/artifacts/artifact/{found['tabular-plots']['id']}")
    _page_shows(chromium, "confusion fnn-relu", "learning curves")

    def drawn():
        images = [
            i
            for i in chromium.find_elements(By.TAG_NAME, "img")
            if (i.get_attribute("src") or "").startswith("data:image/png")
        ]
        return (
            images
            if len(images) == 3
            and all(chromium.execute_script("return arguments[0].naturalWidth", i) > 100 for i in images)
            else None
        )

    wait_for("the embedded PNGs to be drawn", drawn, timeout=30, every=0.5)
    chromium.save_screenshot(str(docs / "prefect-ui-plots.png"))
    assert (docs / "prefect-ui-run.png").stat().st_size > 20_000


def test_prefect_yaml_deploys_to_a_process_pool_that_pulls_from_git_and_bad_input_fails_the_run_once(
    served, main_run, tmp_path
):
    """Last: it replaces the served deployments (same names) with prefect.yaml's, on a plain `prefect server start`."""
    import fastapi

    assert tuple(int(p) for p in fastapi.__version__.split(".")[:2]) < (0, 151), (
        f"FastAPI {fastapi.__version__}: from 0.151 the server refuses the null limits `prefect deploy` sends; "
        "install the locked versions: pip install -c constraints.txt -e '.[dev]'"
    )
    served.stop()  # Ctrl-C on `make serve`: the server it started goes too
    wait_for("the served server to stop", lambda: not _deployments_alive(served), timeout=30)

    env = {
        **served.env,
        "PREFECT_API_URL": served.api_url,
        "PREFECT_SERVER_API_PORT": str(served.port),
        "PREFECT_WORKER_QUERY_SECONDS": "2",
        "PREFECT_WORKER_PREFETCH_SECONDS": "5",
    }
    prefect = str(BIN / "prefect")
    server = subprocess.Popen(
        [prefect, "server", "start", "--host", "127.0.0.1", "--port", str(served.port)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    worker = None
    try:
        wait_for("prefect server start", lambda: _deployments_alive(served), timeout=180, every=1)
        home = tmp_path / "home"
        (home / "dl-pipeline").mkdir(parents=True)
        deploy_env = {**env, "HOME": str(home), "DL_PIPELINE_GIT_URL": str(served.project)}
        subprocess.run(
            [prefect, "work-pool", "create", "local-process", "--type", "process"],
            env=env,
            check=True,
            capture_output=True,
        )
        deployed = subprocess.run(
            [prefect, "--no-prompt", "deploy", "--all"],
            cwd=served.project,
            env=deploy_env,
            capture_output=True,
            text=True,
        )
        assert deployed.returncode == 0, deployed.stdout[-3000:] + deployed.stderr[-3000:]
        with served.client() as client:
            nightly = client.read_deployment_by_name(f"{FLOW}/nightly")
            preset = client.read_deployment_by_name(MAIN)
        assert nightly.work_pool_name == "local-process" and nightly.schedules[0].schedule.cron == "0 2 * * *"
        assert nightly.job_variables["working_dir"] == f"{home}/dl-pipeline"
        assert any("git_clone" in next(iter(step)) for step in preset.pull_steps)
        with served.client() as client:
            on_new_data = client.read_deployment_by_name(f"{FLOW}/on-new-data")
        automations = [
            a
            for a in api(served, "/automations/filter", {})
            if a["actions"][0].get("deployment_id") == str(on_new_data.id)
        ]
        assert {"datasets": [DATASET_FROM_EVENT], "refresh": True, "workdir": "."} in [
            a["actions"][0]["parameters"] for a in automations
        ]  # the trigger's template survived `prefect deploy`

        # HOME as deployed: the run's git clone has no .dvc/config.local, so the committed default
        # remote (~/.local/share/...) must resolve under the temp home, not the real one.
        worker = subprocess.Popen(
            [prefect, "worker", "start", "--pool", "local-process"],
            env={**env, "HOME": str(home)},
            cwd=tmp_path,
            stdout=open(tmp_path / "worker.log", "w"),
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        params = small_params(("tabular",), epochs=2)
        params["datasets"]["tabular"]["ingest"]["source"] = "/nonexistent/houses.csv"
        failed = wait_final(served, run(served, MAIN, {"params": params}).id, timeout=240)
        worker_log = (tmp_path / "worker.log").read_text()
        assert failed.state.is_failed(), (failed.state, worker_log[-3000:])  # Failed, not Crashed
        tasks = task_runs(served, failed.id)
        assert set(tasks) == {"ingest@tabular"} and tasks["ingest@tabular"].state.is_failed()
        assert tasks["ingest@tabular"].run_count == 1  # bad input (exit 2) is not retried
        text = logs(served, failed.id)
        assert "error: ingest.source: /nonexistent/houses.csv: file does not exist" in text
        assert (
            home / "dl-pipeline/dl-pipeline/dvc.yaml"
        ).exists()  # the run's code came from git, into the pool's working_dir
    finally:
        for proc in (worker, server):
            if proc is not None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGTERM)
                    proc.wait(30)


def _deployments_alive(served: Served) -> bool:
    try:
        with urllib.request.urlopen(f"{served.api_url}/health", timeout=2):
            return True
    except Exception:
        return False
