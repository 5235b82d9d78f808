"""Validation errors of params.yaml in a person's words: one line per problem, naming the dotted key.

pydantic reports locations with the union tags it picked (a family after a candidate's name, a
modality after a section); they are not keys a user wrote, so they are left out of the message.
"""

from __future__ import annotations

import re
from typing import get_args

from pydantic import ValidationError

from models import catalogue
from pipelines.config.modalities import Modality


def tag_values() -> set[str]:
    """Union tags pydantic puts in an error's location: family names and modalities."""
    return set(catalogue.list_models()) | set(get_args(Modality))


def _is_tag(loc: tuple, i: int, tags: set[str]) -> bool:
    """Whether loc[i] is a union tag pydantic put in: a family after a candidate name, a modality after a section."""
    if loc[i] not in tags:
        return False
    return (i >= 2 and loc[i - 2] == "candidates") or (i >= 1 and loc[i - 1] in ("ingest", "prepare"))


def _dotted_key(loc: tuple, problem_type: str) -> str:
    tags = tag_values()
    parts = [str(p) for i, p in enumerate(loc) if not _is_tag(loc, i, tags)]
    if problem_type in ("union_tag_invalid", "union_tag_not_found"):
        parts.append("family")  # the discriminator itself is the bad key
    return ".".join(parts)


def _unknown_key(loc: tuple) -> str:
    sections = [loc[i + 1] for i in range(len(loc) - 1) if loc[i] in ("ingest", "prepare")]
    if sections and sections[-1] in get_args(Modality):  # the key may belong to another modality
        return f"unknown key for {sections[-1]} data (misspelled, or another modality's key?)"
    return "unknown key (misspelled?)"


def describe_validation_error(err: ValidationError, source: str) -> str:
    """One line per problem, each naming the dotted key, e.g. datasets.tabular.train.candidates.fnn-relu.lr."""
    lines = []
    for problem in err.errors():
        key = _dotted_key(problem["loc"], problem["type"])
        msg = problem["msg"].removeprefix("Value error, ")
        if problem["type"] == "extra_forbidden":
            msg = _unknown_key(problem["loc"])
        nested = re.match(r"^([A-Za-z0-9_.-]+): (.*)$", msg, re.S)
        if nested:  # a cross-field check that names its own sub-key
            key, msg = f"{key}.{nested.group(1)}" if key else nested.group(1), nested.group(2)
        lines.append(f"{source}: {key or '(top level)'}: {msg}")
    return "\n".join(lines)
