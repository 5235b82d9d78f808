"""Shared fixtures: a throwaway copy of the project that is a real git + DVC repo."""

from __future__ import annotations

import functools
import os
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml
from filelock import FileLock

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


def pytest_configure(config: pytest.Config) -> None:
    """Each pytest process (each xdist worker of `make test`) gets its own Prefect home, never the user's ~/.prefect.

    A flow command run without the session's API (`flow_env()`, bench.fnn) starts its own temporary Prefect server
    on $PREFECT_HOME/prefect.db: two such runs at once in one home would share one SQLite file."""
    home = Path(tempfile.mkdtemp(prefix="pytest-prefect-home-"))
    os.environ["PREFECT_HOME"] = str(home)
    config.add_cleanup(lambda: shutil.rmtree(home, ignore_errors=True))


@functools.cache
def work_unit(module: str) -> str:
    """Under `make test` (pytest-xdist), the unit of work one worker takes whole: the test module `module` (a path
    relative to the repo), so its module-scoped fixtures (a Ray instance, a trained project) start once, not once
    per worker; and one unit for all the modules that go on from the session's `first_tabular_run`, so that run
    trains once."""
    return "first_tabular_run" if "first_tabular_run" in (ROOT / module).read_text() else module


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_make_scheduler(config: pytest.Config, log):
    # Not `--dist loadgroup`: pytest-xdist 3.8 marks a group by rewriting `item._nodeid`, which pytest 9 no longer
    # reads, so its groups silently fall apart into single tests.
    from xdist.scheduler import LoadScopeScheduling

    class ByWorkUnit(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            return work_unit(nodeid.split("::", 1)[0])

    return ByWorkUnit(config, log)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Under xdist, the units with the most slow tests come first (the scheduler keeps this order with
    `--no-loadscope-reorder`): the long ones start early and short ones fill the gaps at the end, instead of a long
    unit starting last while the other worker idles."""
    if "PYTEST_XDIST_WORKER" not in os.environ:
        return
    unit_of = {item.nodeid: work_unit(item.nodeid.split("::", 1)[0]) for item in items}
    slow_tests: dict[str, int] = {}
    for item in items:
        unit = unit_of[item.nodeid]
        slow_tests[unit] = slow_tests.get(unit, 0) + bool(item.get_closest_marker("slow"))
    # Stable: a unit's tests keep their order. The same slow count: by unit name, so a unit stays contiguous.
    items.sort(key=lambda item: (-slow_tests[unit_of[item.nodeid]], unit_of[item.nodeid]))


def project_env() -> dict[str, str]:
    env = dict(os.environ)
    env["PATH"] = f"{BIN}{os.pathsep}{env.get('PATH', '')}"
    env["PREFECT_SERVER_ANALYTICS_ENABLED"] = "false"
    env["DVC_NO_ANALYTICS"] = "1"
    return env


def run(cwd, *cmd, env: dict[str, str]) -> str:
    """Run a command (git, dvc, python -m ...) in a test project; fail the test with its output if it fails."""
    proc = subprocess.run(list(cmd), cwd=cwd, env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, f"{cmd}:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    return proc.stdout + proc.stderr


def copy_project(dest: Path, params: dict | None = None) -> Path:
    """Copy the tracked files of this repo into `dest` and make it a fresh git repo.

    Its default DVC remote (`local`, committed as ~/.local/share/...) is repointed at
    `local_remote_dir(dest)`, so no test pushes into the real home directory.
    """
    files = subprocess.run(
        ["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout.split("\0")
    for rel in filter(None, files):
        src = ROOT / rel
        if src.is_file():
            (dest / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / rel)
    for p in (
        "data/raw",
        "data/prepared",
        "data/train",
        "data/evaluate",
        "data/register",
        "data/registry",
        "data/ray_results",
        "dvc.lock",
    ):
        target = dest / p
        shutil.rmtree(target, ignore_errors=True) if target.is_dir() else target.unlink(missing_ok=True)
    if params is not None:
        (dest / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    git = ["git", "-c", "user.email=test@example.com", "-c", "user.name=test"]
    subprocess.run(["git", "init", "-q", "-b", "main"], cwd=dest, check=True)
    subprocess.run(git + ["add", "-A"], cwd=dest, check=True)
    subprocess.run(git + ["commit", "-qm", "test copy"], cwd=dest, check=True)
    point_local_remote(dest, local_remote_dir(dest))
    return dest


def local_remote_dir(project: Path) -> Path:
    """Where a test copy's default DVC remote lives: beside the copy, in the test's temp dir."""
    return project.parent / f"dvc-remote-{project.name}"


def point_local_remote(project: Path, url: Path) -> None:
    """Repoint the default remote `local` in .dvc/config.local (git-ignored), as the README tells users to."""
    run(project, str(BIN / "dvc"), "remote", "modify", "--local", "local", "url", str(url), env=project_env())


def small_params(datasets: tuple[str, ...] = ("tabular",), **train_overrides) -> dict:
    """The real default params, shrunk to some datasets and few epochs so a pipeline run takes about a minute."""
    from pipelines.config import PipelineParams

    params = PipelineParams().model_dump(mode="json")
    params["datasets"] = {name: params["datasets"][name] for name in datasets}
    for ds in params["datasets"].values():
        ds["train"].update({"epochs": 4, **train_overrides})
    return params


def one_fnn_params() -> dict:
    """The default table (breast cancer) with its ReLU FNN only, 2 epochs: the cheapest run of the default pipeline."""
    params = small_params(("tabular",), epochs=2)
    candidates = params["datasets"]["tabular"]["train"]["candidates"]
    params["datasets"]["tabular"]["train"]["candidates"] = {"fnn-relu": candidates["fnn-relu"]}
    return params


@dataclass(frozen=True)
class FirstRun:
    """A fresh project's first flow run (`one_fnn_params`), as the session's `first_tabular_run` left it."""

    project: Path
    result: dict  # what training_pipeline returned
    remote_url: str  # the copy's default remote `local`, as DVC read it before the run
    remote_existed: bool  # whether that remote's directory existed before the run


def copy_of(first: FirstRun, dest: Path) -> Path:
    """A copy of the first run's project (its git repo, DVC cache and outputs) and of its DVC remote, to go on from.

    The copy's default remote `local` is repointed at its own copy of the remote (local_remote_dir(dest))."""
    shutil.copytree(first.project, dest, symlinks=True)
    if local_remote_dir(first.project).exists():
        shutil.copytree(local_remote_dir(first.project), local_remote_dir(dest), symlinks=True)
    point_local_remote(dest, local_remote_dir(dest))
    return dest


@pytest.fixture(scope="session")
def first_tabular_run(tmp_path_factory, prefect_api) -> FirstRun:
    """The one training from scratch that several tests go on from (each on a `copy_of` it, never on this one).

    The flow in-process on a fresh copy of the project with `one_fnn_params`: every stage runs, the outputs are
    pushed to the copy's default remote. test_dvc_remote_local checks that run; test_register_runs,
    test_outage_flow and test_dvc_remote_s3 go on from copies of it instead of each training the same model again."""
    from dvc.repo import Repo

    from pipelines.orchestration.flow import training_pipeline

    project = copy_project(tmp_path_factory.mktemp("first-run") / "project", one_fnn_params())
    with Repo(str(project)) as repo:
        remote_url = repo.config["remote"]["local"]["url"]
    remote_existed = local_remote_dir(project).exists()
    result = training_pipeline(workdir=str(project))
    return FirstRun(project, result, remote_url, remote_existed)


@pytest.fixture
def in_tmp(tmp_path, monkeypatch):
    """Run a test with the current directory set to an empty temp dir."""
    monkeypatch.chdir(tmp_path)
    return tmp_path


@pytest.fixture(scope="session")
def prefect_api():
    """One temporary Prefect API (SQLite) for every test that runs the flow in-process: it takes ~14 s to start."""
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=120):
        yield


@pytest.fixture(scope="module")
def ray_instance():
    """One local Ray instance for a module's stages (as a flow run shares one), stopped at the end."""
    from pipelines.training.cluster import ensure_ray, session, shutdown_ray

    old = os.environ.get("PYTHONPATH")
    os.environ["PYTHONPATH"] = str(ROOT)  # Ray's worker processes import this checkout's pipelines
    ensure_ray()
    try:
        yield session()
    finally:
        shutdown_ray()
        if old is None:
            os.environ.pop("PYTHONPATH", None)
        else:
            os.environ["PYTHONPATH"] = old


def install_chromium() -> None:
    """Debian's chromium and chromium-driver, installed with apt-get when missing."""
    if shutil.which("chromium") and shutil.which("chromedriver"):
        return
    if os.geteuid() != 0 or not shutil.which("apt-get"):
        # A failure, not a skip: a UI test that did not run must not read as passed.
        pytest.fail(
            "the UI tests need Debian's chromium and chromium-driver, which are not installed and cannot be "
            "installed here (needs root and apt-get): run `sudo apt-get install chromium chromium-driver`"
        )
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    subprocess.run(["apt-get", "update", "-qq"], check=True, env=env, capture_output=True)
    subprocess.run(
        ["apt-get", "install", "-y", "-qq", "chromium", "chromium-driver"], check=True, env=env, capture_output=True
    )


@pytest.fixture
def chromium():
    """Debian's chromium and chromedriver (installed with apt-get when missing; no browser download).

    One browser per test, quit after it: a headless chromium left on a Prefect UI page keeps a core busy
    (its GPU process redraws the live page), which slowed every test after it by 2-3x when it lived as long
    as the session."""
    # Under `make test` two xdist workers may both get here first: apt-get holds dpkg's lock, so one installs and
    # the other waits, then finds it installed.
    with FileLock(Path(tempfile.gettempdir()) / "dl-pipeline-tests-chromium.lock"):
        install_chromium()
    from selenium import webdriver  # a dev dependency: `make test` installs it
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = shutil.which("chromium")
    for arg in (
        "--headless=new",
        "--no-sandbox",
        "--disable-dev-shm-usage",
        "--disable-gpu",
        "--window-size=1400,1000",
    ):
        options.add_argument(arg)
    driver = webdriver.Chrome(service=Service(shutil.which("chromedriver")), options=options)
    driver.implicitly_wait(0)
    try:
        yield driver
    finally:
        driver.quit()
