"""pipelines/training/ has no import circles: the driver side imports the worker side, never the reverse.

Every import counts, at module level or inside a function (a function-level import is how a circle
usually hides: it works until someone moves it to the top), and so do imports under TYPE_CHECKING.
"""

from __future__ import annotations

import ast
from pathlib import Path

from tests.conftest import ROOT

PACKAGE = "pipelines.training"
FOLDER = ROOT / "pipelines" / "training"


def imported_modules(path: Path, modules: set[str]) -> set[str]:
    """The modules of pipelines/training/ that the file imports, anywhere in it."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # from . import x / from .x import y
                base = ".".join([PACKAGE, *([base] if base else [])])
            names = [base, *(f"{base}.{alias.name}" for alias in node.names)]  # `from pkg import module` too
        else:
            continue
        found |= {name.removeprefix(f"{PACKAGE}.").split(".")[0] for name in names if name.startswith(f"{PACKAGE}.")}
    return (found & modules) - {path.stem}


def import_graph() -> dict[str, set[str]]:
    files = {path.stem: path for path in FOLDER.glob("*.py") if path.stem != "__init__"}
    return {name: imported_modules(path, set(files)) for name, path in files.items()}


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import circle as [a, b, ..., a], or None."""
    done: set[str] = set()

    def visit(name: str, path: list[str]) -> list[str] | None:
        if name in path:
            return path[path.index(name) :] + [name]
        if name in done:
            return None
        for target in sorted(graph[name]):
            if cycle := visit(target, [*path, name]):
                return cycle
        done.add(name)
        return None

    for name in sorted(graph):
        if cycle := visit(name, []):
            return cycle
    return None


def test_the_cycle_finder_finds_a_circle_and_names_it():
    assert find_cycle({"fit": {"worker"}, "worker": {"job"}, "job": set()}) is None
    assert find_cycle({"fit": {"worker"}, "worker": {"job", "fit"}, "job": set()}) == ["fit", "worker", "fit"]


def test_the_import_walker_sees_function_level_and_package_imports(tmp_path):
    source = tmp_path / "worker.py"
    source.write_text(
        "from pipelines.training import store\n"
        "def f():\n"
        "    from pipelines.training.fit import collect\n"
        "    import pipelines.training.progress\n"
    )
    assert imported_modules(source, {"store", "fit", "progress", "worker", "job"}) == {"store", "fit", "progress"}


def test_no_module_of_the_training_package_imports_itself_back():
    graph = import_graph()
    assert {"fit", "worker", "runtime", "job"} <= set(graph), sorted(graph)  # the walker found the package
    cycle = find_cycle(graph)
    assert cycle is None, "import circle in pipelines/training/: " + " -> ".join(f"{name}.py" for name in cycle)
    assert "fit" not in graph["worker"], "worker.py imports fit.py: shared plain data belongs in job.py"


def test_the_worker_picks_the_runtime_the_driver_picked(tmp_path):
    """One choice per side, from the same data: the stage's Scaling on the driver, its loop config in the worker."""
    from pipelines.training.job import Scaling
    from pipelines.training.runtime import LocalMode, RayWorkerGroup, runtime_for, runtime_of

    run = str(tmp_path / "run")
    for scaling, kind in (
        (Scaling(num_workers=2), RayWorkerGroup),
        (Scaling(cpus_per_worker=3, in_process=True), LocalMode),
    ):
        driver = runtime_of(scaling, run)
        worker = runtime_for({"run_uri": run, **driver.loop_config()})
        assert type(driver) is type(worker) is kind
        assert worker.in_process == scaling.in_process
    local = runtime_for({"run_uri": run, **runtime_of(Scaling(cpus_per_worker=3, in_process=True), run).loop_config()})
    assert local.cpus() == 3 and local.node_id() is None and local.num_workers(Scaling(num_workers=2)) == 0


def test_local_mode_keeps_its_resume_point_on_the_run_storage_and_a_worker_group_leaves_it_to_ray(tmp_path):
    from pipelines.training.progress import LIGHTNING_CKPT, RESUME_DIR, stored_resume_point
    from pipelines.training.runtime import LocalMode, RayWorkerGroup

    reported = tmp_path / "reported"
    reported.mkdir()
    (reported / LIGHTNING_CKPT).write_bytes(b"epoch 1")
    RayWorkerGroup().keep_resume_point(reported, {}, "ds/a", None)  # Ray keeps what was reported
    assert sorted(p.name for p in tmp_path.rglob("*")) == sorted(["reported", LIGHTNING_CKPT])
    run = str(tmp_path / "local-run")
    LocalMode(run, 1.0).keep_resume_point(reported, {"ds/b": {"status": "finished"}}, "ds/a", None)
    finished, current, ckpt = stored_resume_point(run)
    assert (finished, current, ckpt.read_bytes()) == ({"ds/b": {"status": "finished"}}, "ds/a", b"epoch 1")
    assert (tmp_path / "local-run" / RESUME_DIR).is_dir()
