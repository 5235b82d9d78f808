"""The README and docs/ say what the project does today: their links resolve, every `-S` override they
show is valid against the schema, every module, make target and stage they name exists, and their cheap
commands (`--help`, `python -m pipelines.config`, the registry CLI) run as written."""

from __future__ import annotations

import importlib.util
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from pipelines.config import PipelineParams, validate_params
from pipelines.orchestration.overrides import parse_overrides
from tests.conftest import ROOT

README = ROOT / "README.md"
PAGES = [README, ROOT / "infra" / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
LINK = re.compile(r"\]\(([^)\s]+)\)")
BLOCK = re.compile(r"```(\w*)\n(.*?)```", re.S)


def commands(page: Path) -> list[str]:
    """Every command line in the page's shell blocks and inline code (`make run ARGS="..."`), comments cut."""
    text = page.read_text()
    found = []
    for lang, body in BLOCK.findall(text):
        if lang in ("bash", "sh"):
            body = body.replace("\\\n", " ")  # continuation lines
            found += [line.split("  #")[0].strip() for line in body.splitlines()]
    found += re.findall(r"`((?:make|dvc|python|\.venv/bin/python) [^`]+)`", BLOCK.sub("", text))
    return [c for c in found if c and not c.startswith("#")]


def anchors(page: Path) -> set[str]:
    """GitHub's anchors of the page's headings."""
    slugs = set()
    for heading in re.findall(r"^#+ (.+)$", BLOCK.sub("", page.read_text()), re.M):
        slug = re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")
        slugs.add(slug)
    return slugs


def test_the_readme_starts_with_the_two_commands_and_stays_short():
    text = README.read_text()
    first_block = BLOCK.search(text).group(2)
    assert [line.split()[:2] for line in first_block.splitlines()] == [["make", "run"], ["make", "test"]]
    assert len(text.splitlines()) <= 200
    headings = re.findall(r"^## (.+)$", text, re.M)
    assert headings[:4] == [
        "The default run: every model family on data that ships offline",
        "What you get, and where to look",
        "Train on your own data",
        "Where to start reading",
    ], headings
    linked = {m for m in LINK.findall(text)}
    for page in sorted((ROOT / "docs").glob("*.md")):  # every reference page is reachable from the README
        assert f"docs/{page.name}" in linked, f"README.md does not link docs/{page.name}"


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_relative_link_resolves(page):
    for target in LINK.findall(page.read_text()):
        if re.match(r"[a-z]+:", target):
            continue  # http(s), file: not checked offline
        path, _, anchor = target.partition("#")
        resolved = (page.parent / path).resolve() if path else page
        assert resolved.exists(), f"{page.relative_to(ROOT)}: link {target!r} points at nothing"
        if anchor and resolved.suffix == ".md":
            assert anchor in anchors(resolved), f"{page.relative_to(ROOT)}: no heading for #{anchor} in {path}"


def overrides(command: str) -> list[str]:
    words = []
    for word in shlex.split(command):
        words += shlex.split(word[len("ARGS=") :]) if word.startswith("ARGS=") else [word]
    pairs = [words[i + 1] for i, w in enumerate(words[:-1]) if w == "-S"]
    # a queued sweep (`lr=0.0003,0.001,0.003`) is checked with its first value
    return [p.split(",")[0] if not re.search(r"[\[{]", p) else p for p in pairs]


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_override_shown_is_valid(page):
    base = yaml.safe_load((ROOT / "params.yaml").read_text())
    for command in commands(page):
        pairs = overrides(command)
        if pairs:
            validate_params(parse_overrides(pairs, base), f"{page.name}: {command}")


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_module_make_target_and_stage_named_exists(page):
    makefile = (ROOT / "Makefile").read_text()
    targets = set(re.findall(r"^([a-z][\w-]*):", makefile, re.M))
    stages = {
        f"{stage}@{ds}"
        for stage in ("ingest", "prepare", "train", "evaluate", "register")
        for ds in PipelineParams().datasets
    }
    for command in commands(page):
        for module in re.findall(r"python -m ([\w.]+)", command):
            assert importlib.util.find_spec(module), f"{page.name}: {command!r}: no module {module}"
        if command.startswith("make "):
            target = command.split()[1]
            assert target in targets, f"{page.name}: {command!r}: no make target {target}"
        for stage in re.findall(r"\b((?:ingest|prepare|train|evaluate|register)@\w+)", command):
            assert stage in stages or "<" in stage, f"{page.name}: {command!r}: no stage {stage}"


def test_the_cheap_commands_run_as_written(tmp_path):
    """`--help` of every CLI the docs name, the config printer and the registry CLI on an empty registry."""
    named = {m for page in PAGES for c in commands(page) for m in re.findall(r"python -m (pipelines[\w.]*)", c)}
    assert {"pipelines.predict", "pipelines.registry.cli", "pipelines.config"} <= named
    for module in sorted(named - {"pipelines.config"}):
        proc = subprocess.run([sys.executable, "-m", module, "--help"], cwd=ROOT, capture_output=True, text=True)
        assert proc.returncode == 0 and "usage" in proc.stdout.lower(), f"{module} --help:\n{proc.stderr[-2000:]}"
    printed = subprocess.run([sys.executable, "-m", "pipelines.config"], cwd=ROOT, capture_output=True, text=True)
    assert printed.returncode == 0 and validate_params(yaml.safe_load(printed.stdout)) == PipelineParams.model_validate(
        yaml.safe_load((ROOT / "params.yaml").read_text())
    )
    listed = subprocess.run(
        [sys.executable, "-m", "pipelines.registry.cli", "list", "--registry", str(tmp_path / "registry")],
        capture_output=True,
        text=True,
    )
    assert listed.returncode == 0, listed.stderr
