"""What a flow run shows on its page in the Prefect UI (the Artifacts tab), per dataset.

Keys are stable, so the Artifacts page keeps each one's history across runs
(`<ds>` is the dataset name in lowercase with anything but letters, digits and
dashes turned into dashes, as Prefect requires):

    <ds>-profile      table: the data profile of a table (each column's type, gaps, distinct values, range); its
                      description gives the label's classes and warns when one is rare
    <ds>-metrics      table: one row per candidate, val and test scores, the best one marked; then the
                      classical baselines and the failed candidates; the description says when no
                      candidate beats a baseline
    <ds>-plots        markdown: confusion matrices / forecasts / predicted-vs-true and the
                      learning curves, embedded as PNG data: URIs, then file links to each PNG
    <ds>-model        markdown: the registered model version, its aliases, checkpoint and lineage
    <ds>-checkpoint   link: the registered checkpoint (file:// or s3://)
    training-summary  table (one per run): each dataset's registered version and test score

The plots are embedded as data: URIs because an image artifact only holds a URL
and the PNGs are files on the machine that ran the stage; Prefect's UI renders
markdown images with data: URIs (tests/test_prefect_server.py checks it in Chromium).
"""

from __future__ import annotations

import base64
import math
import re
from pathlib import Path
from typing import Any

from pipelines.atomic import read_json
from pipelines.evaluation.comparison import champion_label, unbeaten, unbeaten_message
from pipelines.handoffs import upgrade_report
from pipelines.paths import DatasetPaths
from pipelines.registry.base import RegistryError
from pipelines.registry.card import render_markdown
from pipelines.registry.local import open_registry

SUMMARY_KEY = "training-summary"
MAX_EMBEDDED_PNG = 512 * 1024  # bytes; a bigger PNG is linked, not embedded


def artifact_key(dataset: str, kind: str) -> str:
    """A Prefect artifact key: lowercase letters, digits and dashes only."""
    slug = re.sub(r"[^a-z0-9-]+", "-", dataset.lower()).strip("-") or "dataset"
    return f"{slug}-{kind}"


def _number(value: Any) -> Any:
    if isinstance(value, float):
        return None if math.isnan(value) or math.isinf(value) else round(value, 4)
    return value


def _registry_location(root: Path, location: str) -> str | Path:
    """params.yaml's register.registry; a relative path is relative to the workspace."""
    if "://" in location:
        return location
    path = Path(location).expanduser()
    return path if path.is_absolute() else (root / path).resolve()


def metrics_rows(root: Path, dataset: str) -> list[dict[str, Any]]:
    """One row per candidate (family, val/test primary metric, then the other scalar test metrics), then one per
    baseline with the same columns (family `baseline`), then one per failed candidate (best: `failed`, no metrics)."""
    where = DatasetPaths(dataset)
    report = upgrade_report(read_json(root / where.metrics_file))
    primary = report["primary_metric"]
    families = {}
    if (root / where.train_summary).exists():
        families = {n: c.get("family") for n, c in read_json(root / where.train_summary)["candidates"].items()}
    rows = []
    for name, scores in report["candidates"].items():
        row: dict[str, Any] = {
            "candidate": name,
            "family": families.get(name, ""),
            "best": "yes" if name == report["best_candidate"] else "",
            f"val/{primary}": _number(scores[f"val/{primary}"]),
            f"test/{primary}": _number(scores[f"test/{primary}"]),
        }
        for key, value in scores.items():
            scalar = isinstance(value, (int, float)) and not isinstance(value, bool)
            if key.startswith("test/") and key not in row and scalar:
                row[key] = _number(float(value))
        rows.append(row)
    columns = [k for k in rows[0] if "/" in k] if rows else []
    for name, scores in report.get("baselines", {}).items():
        rows.append(
            {"candidate": name, "family": "baseline", "best": ""} | {k: _number(scores.get(k)) for k in columns}
        )
    champion = report.get("champion")
    if champion and champion.get("comparable"):  # the version the alias points to, on this run's test split
        row = {"candidate": champion_label(champion), "family": "champion", "best": ""}
        rows.append(row | {k: _number(champion.get(k)) for k in columns})
    for name in report.get("failed_candidates", {}):
        rows.append({"candidate": name, "family": families.get(name, ""), "best": "failed"} | dict.fromkeys(columns))
    return rows


def verdict(root: Path, dataset: str) -> str:
    """The baselines no candidate beats and the failed candidates, in plain sentences ('' when neither)."""
    report = upgrade_report(read_json(root / DatasetPaths(dataset).metrics_file))
    lines = [unbeaten_message(entry) + "." for entry in unbeaten(report)]
    lines += [f"{name} failed in training: {error}" for name, error in report.get("failed_candidates", {}).items()]
    return "\n\n".join(lines)


def _plot_order(png: Path, best: str) -> tuple[int, str]:
    """The best candidate's plots first, then the learning curves, then the rest."""
    stem = png.stem
    if stem.endswith(f"_{best}"):
        return (0, stem)
    if stem == "learning_curves":
        return (1, stem)
    return (2, stem)


def plots_markdown(root: Path, dataset: str) -> str:
    where = DatasetPaths(dataset)
    report = upgrade_report(read_json(root / where.metrics_file))
    best = report["best_candidate"]
    plots_dir = (root / where.plots_dir).resolve()
    pngs = sorted(plots_dir.glob("*.png"), key=lambda p: _plot_order(p, best))
    lines = [f"# {dataset}: plots (best candidate by val {report['primary_metric']}: {best})", ""]
    for png in pngs:
        title = png.stem.replace("_", " ")
        data = png.read_bytes()
        lines.append(f"## {title}")
        lines.append("")
        if len(data) <= MAX_EMBEDDED_PNG:
            lines.append(f"![{title}](data:image/png;base64,{base64.b64encode(data).decode()})")
        else:
            lines.append(f"({len(data) // 1024} KiB, not embedded: see the file below)")
        lines.append("")
    comparison = plots_dir / "comparison.md"
    if comparison.exists():
        # comparison.md starts with its own '# ' title: demote it under this page's.
        lines += ["#" + comparison.read_text().lstrip(), ""]
    lines.append("## Files")
    lines.append("")
    for path in pngs + ([comparison] if comparison.exists() else []):
        lines.append(f"- [{path.name}]({path.as_uri()}) `{path}`")
    return "\n".join(lines) + "\n"


def registered_version_missing(root: Path, dataset: str, registry_location: str) -> str | None:
    """Why the version data/register/<dataset>.json records is not in the registry (None when it is).

    The registry is a side effect DVC cannot see: a deleted `data/registry`, or a teammate's clone pointed at
    another registry, leaves register "unchanged" to DVC while the registry lacks what it recorded."""
    where = DatasetPaths(dataset)
    if not (root / where.registered_file).exists():
        return None  # register has not run yet: DVC will run it
    registered = read_json(root / where.registered_file)
    location = _registry_location(root, registry_location)
    try:
        card = open_registry(location).get_card(registered["name"], registered["version"])
    except RegistryError as exc:
        return f"{where.registered_file} records {registered['name']} v{registered['version']}, but {exc}"
    if card.get("sha256") != registered.get("sha256"):
        return (
            f"{where.registered_file} records {registered['name']} v{registered['version']} with sha256 "
            f"{str(registered.get('sha256'))[:12]}..., registry {location} holds another checkpoint under that version"
        )
    return None


def model_markdown(root: Path, dataset: str, registry_location: str, reused: bool = False) -> tuple[str, str]:
    """The registered version's page and the checkpoint's URI (`reused`: register was up to date, nothing new)."""
    where = DatasetPaths(dataset)
    registered = read_json(root / where.registered_file)
    location = _registry_location(root, registry_location)
    registry = open_registry(location)
    card = registry.get_card(registered["name"], registered["version"])
    aliases = registry.aliases(registered["name"])
    uri = registered.get("uri") or registered["path"]
    checkpoint = f"{uri.rstrip('/')}/model.pt" if "://" in uri else Path(uri, "model.pt").resolve().as_uri()
    page = render_markdown(card, aliases, location, checkpoint, registered.get("promoted_to"), reused)
    return page, checkpoint


def summary_row(root: Path, dataset: str) -> dict[str, Any]:
    where = DatasetPaths(dataset)
    registered = read_json(root / where.registered_file)
    report = upgrade_report(read_json(root / where.metrics_file))
    primary = report["primary_metric"]
    return {
        "dataset": dataset,
        "model": f"{registered['name']}:{registered['version']}",
        "candidate": registered["candidate"],
        "metric": f"test/{primary}",
        "value": _number(report["best"].get(f"test/{primary}")),
        "promoted_to": registered.get("promoted_to") or "",
    }


def publish_dataset(root: str | Path, dataset: str, registry_location: str, reused: bool = False) -> dict[str, str]:
    """Create this dataset's artifacts in the current flow or task run; returns {key: artifact id}."""
    from prefect.artifacts import create_link_artifact, create_markdown_artifact, create_table_artifact

    root = Path(root).resolve()
    rows = metrics_rows(root, dataset)
    model_md, checkpoint = model_markdown(root, dataset, registry_location, reused)
    registered = read_json(root / DatasetPaths(dataset).registered_file)
    made = {
        artifact_key(dataset, "metrics"): create_table_artifact(
            rows,
            key=artifact_key(dataset, "metrics"),
            description="\n\n".join(
                filter(
                    None, [f"{dataset}: val and test metrics of every candidate and baseline", verdict(root, dataset)]
                )
            ),
        ),
        artifact_key(dataset, "plots"): create_markdown_artifact(
            plots_markdown(root, dataset),
            key=artifact_key(dataset, "plots"),
            description=f"{dataset}: evaluation plots",
        ),
        artifact_key(dataset, "model"): create_markdown_artifact(
            model_md,
            key=artifact_key(dataset, "model"),
            description=f"{dataset}: registered {registered['name']} v{registered['version']} and its lineage",
        ),
        artifact_key(dataset, "checkpoint"): create_link_artifact(
            checkpoint,
            link_text=f"{registered['name']} v{registered['version']} model.pt",
            key=artifact_key(dataset, "checkpoint"),
            description=f"{dataset}: the registered checkpoint",
        ),
    }
    return {key: str(value) for key, value in made.items()}


def publish_summary(root: str | Path, datasets: list[str], registry_location: str) -> str:
    """The run's table: each dataset's registered version, in the registry params.yaml names (register.registry)."""
    from prefect.artifacts import create_table_artifact

    rows = [summary_row(Path(root).resolve(), name) for name in datasets]
    description = f"Registered model of each dataset in this run, in {registry_location}"
    return str(create_table_artifact(rows, key=SUMMARY_KEY, description=description))


def publish_profile(root: str | Path, dataset: str) -> str | None:
    """The table's data profile (data/raw/<ds>/profile.json) as a table artifact; None for other modalities."""
    from prefect.artifacts import create_table_artifact

    path = Path(root).resolve() / DatasetPaths(dataset).raw_profile
    if not path.exists():
        return None
    profile = read_json(path)
    rows = [{k: ("" if v is None else v) for k, v in row.items()} for row in profile["columns"]]
    key = artifact_key(dataset, "profile")
    description = f"{dataset}: {profile['rows']} rows of {profile['source']}: each column's type and what was done"
    shares = profile.get("label_distribution")  # classification: the label's classes (profiles of older runs: none)
    if shares:
        description += ". Label classes: " + ", ".join(f"{r['class']} {r['share']:.1%}" for r in shares)
    description += "".join(f". WARNING: {warning}" for warning in profile.get("warnings", []))
    return str(create_table_artifact(rows, key=key, description=description))
