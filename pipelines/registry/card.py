"""How a model card reads: the one place that knows a card's layout, rendered as terminal text
(`python -m pipelines.registry.cli show`) or as Markdown (the Prefect run's model artifact).

Cards of every schema version render: they go through handoffs.ModelCard, whose fields are optional.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pipelines.handoffs import ModelCard, card_metrics

DIRECTION = {"max": "higher is better", "min": "lower is better"}


def fmt(value: Any) -> str:
    return f"{value:.4f}" if isinstance(value, float) else str(value)


def scalars(scores: dict[str, Any]) -> dict[str, float]:
    """The scalar metrics of one split (no per-class tables or confusion matrices)."""
    return {k: v for k, v in scores.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}


def primary_text(card: dict[str, Any], split: str = "test") -> str:
    """'accuracy=0.9000' for the card's primary metric on `split`, or '-'."""
    metric = card.get("primary_metric")
    value = card_metrics(card).get(f"{split}/{metric}") if metric else None
    return f"{metric}={fmt(value)}" if value is not None else "-"


def selection_text(card: ModelCard) -> str | None:
    """'val/f1_macro (higher is better), set by datasets.x.evaluate.primary_metric: a 0.81, b 0.74'."""
    chosen = card.selection
    if chosen is None:
        return None
    values = ", ".join(f"{name} {fmt(value)}" for name, value in chosen.values.items())
    return f"{chosen.metric} ({DIRECTION[chosen.mode]}), set by {chosen.set_by}" + (f": {values}" if values else "")


def class_weights_text(card: ModelCard) -> str | None:
    """'balanced: no 0.5376, yes 7.1429 (training rows: no 930, yes 70)', or 'none (training rows: ...)'."""
    cw = card.class_weights
    if cw is None:
        return None
    weights = ", ".join(f"{c} {fmt(w)}" for c, w in (cw.weights or {}).items())
    rows = ", ".join(f"{c} {n}" for c, n in (cw.train_counts or {}).items())
    return cw.setting + (f": {weights}" if weights else "") + (f" (training rows: {rows})" if rows else "")


def versions_with_aliases(aliases: dict[str, int]) -> dict[int, list[str]]:
    out: dict[int, list[str]] = {}
    for alias, version in sorted(aliases.items()):
        out.setdefault(version, []).append(alias)
    return out


def render_text(card_data: dict[str, Any], aliases: dict[str, int], location: str) -> str:
    """The card for a terminal: header, facts, metrics per split, lineage, plots."""
    card = ModelCard.model_validate(card_data)
    on_version = versions_with_aliases(aliases).get(card.version, [])
    lines = [f"{card.name} v{card.version}" + (f"  (aliases: {', '.join(on_version)})" if on_version else "")]
    primary = f"{card.primary_metric} ({DIRECTION[card.mode]})" if card.primary_metric and card.mode else None
    facts = (
        ("registry", location),
        ("sha256", card.sha256),
        ("created", card.created_at),
        ("task", card.task),
        ("candidate", card.candidate),
        ("primary", primary or card.primary_metric),
        ("chosen by", selection_text(card)),
        ("weights", class_weights_text(card)),
    )
    lines += [f"  {label:<10}{value}" for label, value in facts if value is not None]
    if card.metrics:
        lines.append("metrics")
        for split in dict.fromkeys(k.partition("/")[0] for k in card.metrics):
            prefix = f"{split}/"
            scores = {k: v for k, v in card.metrics.items() if k.startswith(prefix)}
            shown = "  ".join(f"{k.partition('/')[2]}={fmt(v)}" for k, v in scalars(scores).items())
            lines.append(f"  {split:<10}{shown}")
    if card.baselines:  # the classical models it was compared with, on the same test split
        lines.append("baselines (test)")
        width = max(24, *(len(name) + 2 for name in card.baselines))  # e.g. hist_gradient_boosting_balanced
        for name, scores in card.baselines.items():
            test = {k.partition("/")[2]: v for k, v in scalars(scores).items() if k.startswith("test/")}
            lines.append(f"  {name:<{width}}" + "  ".join(f"{k}={fmt(v)}" for k, v in test.items()))
    lineage = card.lineage
    git = lineage.get("git") or {}
    if lineage:
        lines.append("lineage")
        if git:
            lines.append(f"  {'git':<10}{git.get('commit')}" + (" (dirty)" if git.get("dirty") else ""))
        lines += [f"  {'data':<10}{key}={value}" for key, value in (lineage.get("data") or {}).items()]
        packages = lineage.get("packages") or {}
        if packages:
            lines.append(f"  {'packages':<10}" + " ".join(f"{k}={v}" for k, v in packages.items()))
    # The first cards did not carry plot paths; the evaluate stage writes them to
    # data/evaluate/<dataset>/plots (DVC-tracked), reproducible at the card's git commit.
    lines.append("plots")
    if card.plots:
        lines += [f"  {item}" for item in (card.plots if isinstance(card.plots, list) else [card.plots])]
    else:
        commit = git.get("commit")
        lines.append(
            "  not recorded in the card; the evaluate stage writes them to data/evaluate/plots"
            + (f" (git {commit[:12]}, then dvc pull)" if commit else "")
        )
    return "\n".join(lines)


def render_markdown(
    card_data: dict[str, Any],
    aliases: dict[str, int],
    location: str | Path,
    checkpoint: str,
    promoted_to: str | None = None,
    reused: bool = False,
) -> str:
    """The card as a Markdown page (`reused`: registered by an earlier run; `promoted_to`: the alias it took)."""
    card = ModelCard.model_validate(card_data)
    name, version, primary = card.name, card.version, card.primary_metric
    test = {k: v for k, v in card.metrics.items() if k.startswith("test/")}
    git, data = card.lineage.get("git", {}), card.lineage.get("data", {})
    on_alias = [a for a, v in sorted(aliases.items()) if v == version]
    lines = [
        f"# {name} v{version}",
        "",
        f"Dataset **{card.dataset}**, candidate **{card.candidate}** ({card.family}), "
        f"task {card.task}: test/{primary} **{test.get(f'test/{primary}', float('nan')):.4f}**.",
        "",
        ("Registered by an earlier run (nothing changed since). " if reused else "")
        + ("Promoted to `" + promoted_to + "` when registered." if promoted_to else "Not promoted when registered.")
        + " Aliases now: "
        + (", ".join(f"`{a}` → v{v}" for a, v in sorted(aliases.items())) or "none")
        + ".",
        "",
        "| | |",
        "|---|---|",
        f"| model | `{name}:{version}`" + (f" (= `{name}:{on_alias[0]}`)" if on_alias else "") + " |",
        f"| registry | `{location}` |",
        f"| checkpoint | [{checkpoint}]({checkpoint}) |",
        f"| sha256 | `{card.sha256}` |",
        f"| created | {card.created_at} |",
        f"| candidates compared | {', '.join(card.candidates_compared)} |",
    ]
    lines += [
        f"| {label} | {text} |"
        for label, text in (("chosen by", selection_text(card)), ("class weights", class_weights_text(card)))
        if text is not None
    ]
    lines += [
        "",
        "## Test metrics",
        "",
        "| metric | value |",
        "|---|---|",
    ]
    lines += [f"| {k.partition('/')[2]} | {v:.4f} |" for k, v in test.items() if isinstance(v, float)]
    lines += [
        f"| baseline {name}: {key.partition('/')[2]} | {value:.4f} |"
        for name, scores in card.baselines.items()
        for key, value in scores.items()
        if key.startswith("test/") and isinstance(value, float)
    ]
    lines += [
        "",
        "## Lineage",
        "",
        f"- git commit: `{git.get('commit')}`" + (" (uncommitted changes)" if git.get("dirty") else ""),
        f"- data source: `{data.get('source')}`",
        f"- prepared data: DVC md5 `{data.get('prepared_dvc_md5')}`, sha256 `{data.get('prepared_sha256')}`",
        "- packages: " + ", ".join(f"{k} {v}" for k, v in sorted(card.lineage.get("packages", {}).items())),
        "",
        f"Use it: `python -m pipelines.predict {name}:{version} INPUT OUTPUT`",
    ]
    return "\n".join(lines) + "\n"
