"""dvc.yaml is complete: every stage declares the code it runs and the params it reads.

A stage that imports a module not in its deps is not re-run when that module changes, and `dvc repro`
then serves stale outputs. The imports are found by walking the source (every `import` statement,
also inside functions), so modules added later are checked without editing this test.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest
import yaml

from pipelines.stages.cli import READS, inputs_for, reads_for
from tests.conftest import ROOT

PACKAGES = ("pipelines", "models")
# Imported by every stage but unable to change what a stage writes: exit codes and error types, the
# workspace lock, the write-then-rename helper, the check of the inputs' bytes against dvc.lock, the
# S3 client's timeouts and error translation, and the progress lines of long loops. Listing them would re-run
# everything for a comment.
NOT_DEPS = {
    "pipelines/errors.py",
    "pipelines/workspace.py",
    "pipelines/atomic.py",
    "pipelines/integrity.py",
    "pipelines/s3_endpoint.py",
    "pipelines/loop_progress.py",
}
STAGES = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]


def module_file(name: str) -> Path | None:
    """The file of module `name` inside this repo (a package's __init__.py), or None."""
    base = ROOT.joinpath(*name.split("."))
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def imported_names(path: Path) -> set[str]:
    """Every module an import statement in `path` may load: parent packages included, as Python runs them."""
    names: set[str] = set()
    package = ".".join(path.relative_to(ROOT).with_suffix("").parts[:-1])
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative import
                parent = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*parent, base] if base else parent)
            names.add(base)
            names.update(f"{base}.{alias.name}" for alias in node.names)  # `from pkg import module`
    with_parents = set()
    for name in names:
        parts = name.split(".")
        with_parents.update(".".join(parts[:i]) for i in range(1, len(parts) + 1))
    return {n for n in with_parents if n.split(".")[0] in PACKAGES}


def code_of(module: str) -> set[str]:
    """The repo files `python -m module` may execute (transitively, within pipelines/ and models/)."""
    seen: set[Path] = set()
    todo = [module]
    while todo:
        path = module_file(todo.pop())
        if path is None or path in seen:
            continue
        seen.add(path)
        todo.extend(imported_names(path))
    return {p.relative_to(ROOT).as_posix() for p in seen if not is_docstring_only(p)}


def is_docstring_only(path: Path) -> bool:
    body = ast.parse(path.read_text()).body
    return all(isinstance(n, ast.Expr) and isinstance(n.value, ast.Constant) for n in body)


def stage_module(stage: dict) -> str:
    match = re.fullmatch(r"python -m ([\w.]+) \$\{key\}", stage["do"]["cmd"])
    assert match, f"unexpected command {stage['do']['cmd']!r}"
    return match.group(1)


def covered(path: str, entries: list[str]) -> bool:
    return any(path == e or path.startswith(e.rstrip("/") + "/") for e in entries)


def test_the_walker_follows_function_level_and_package_imports():
    code = code_of("pipelines.stages.train")
    assert "pipelines/training/fit.py" in code  # imported inside a function
    assert "models/networks.py" in code and "models/__init__.py" in code


@pytest.mark.parametrize("name", sorted(STAGES))
def test_every_module_a_stage_runs_is_in_its_deps(name):
    stage = STAGES[name]["do"]
    missing = sorted(f for f in code_of(stage_module(STAGES[name])) - NOT_DEPS if not covered(f, stage["deps"]))
    assert not missing, f"dvc.yaml stage {name}: deps lack {missing}"


@pytest.mark.parametrize("name", sorted(STAGES))
def test_every_param_a_stage_reads_is_in_its_params(name):
    declared = [p.replace("${key}", "{dataset}") for p in STAGES[name]["do"]["params"]]
    missing = [p for p in reads_for(name) if not covered(p.replace(".", "/"), [d.replace(".", "/") for d in declared])]
    assert not missing, f"dvc.yaml stage {name}: params lack {missing}"


def test_every_stage_declares_what_it_reads():
    assert set(READS) == set(STAGES)


@pytest.mark.parametrize("name", sorted(STAGES))
def test_every_stage_checks_the_data_deps_it_reads(name):
    """The stage verifies (stages/cli.py INPUTS, against dvc.lock) exactly the data/ deps dvc.yaml gives it."""
    deps = {d.replace("${key}", "x") for d in STAGES[name]["do"]["deps"] if d.startswith("data/")}
    assert {p.as_posix() for p in inputs_for(name, "x")} == deps
