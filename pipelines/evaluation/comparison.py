"""How an evaluation report reads to a person: the comparison table (plots/comparison.md, also shown in the
Prefect plots artifact) and evaluate's log lines. Candidates, baselines and failed candidates side by side,
with the verdict when no candidate beats a baseline.

No torch here: the Prefect flow's artifacts read the same verdict.
"""

from __future__ import annotations

import math
from typing import Any


def _better(a: float, b: float, mode: str) -> bool:
    return a < b if mode == "min" else a > b  # False when a is NaN


def _finite(value: object) -> float:
    """A metric value as a float, NaN when it is missing or not finite."""
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    return float(value) if ok else math.nan


def unbeaten(report: dict) -> list[dict[str, Any]]:
    """The baselines no candidate beats on the primary test metric, each with the numbers that show it.

    [{"baseline", "metric", "baseline_value", "best_candidate", "candidate_value"}]: the best
    candidate here is the best on that test metric (the one closest to beating the baseline).
    """
    key, mode = f"test/{report['primary_metric']}", report["mode"]
    values = {n: _finite(s.get(key)) for n, s in report.get("candidates", {}).items()}
    if not values:
        return []
    # A NaN score beats nothing: it ranks last whichever way the metric improves.
    top = max(values, key=lambda n: -math.inf if math.isnan(values[n]) else values[n] * (1 if mode == "max" else -1))
    out = []
    for name, scores in report.get("baselines", {}).items():
        base = _finite(scores.get(key) if isinstance(scores, dict) else None)
        if not math.isnan(base) and not _better(values[top], base, mode):
            out.append(
                {"baseline": name, "metric": key, "baseline_value": base}
                | {"best_candidate": top, "candidate_value": values[top]}
            )
    return out


def unbeaten_message(entry: dict[str, Any]) -> str:
    """The plain sentence a user reads in the log, the comparison table and the Prefect artifact."""
    return (
        f"No neural candidate beats {entry['baseline']} on {entry['metric']} "
        f"({entry['best_candidate']} {entry['candidate_value']:.4f} vs {entry['baseline_value']:.4f}): "
        "a neural network may not be the right tool for this data"
    )


def _cell(value: object) -> str:
    return f"{value:.4f}" if isinstance(value, float) else "–"


def _row(name: str, scores: dict, keys: list[str]) -> str:
    return f"| {name} | " + " | ".join(_cell(scores.get(k)) for k in keys) + " |"


def champion_label(champion: dict) -> str:
    """The champion's row name: `champion: v3 (production)`."""
    return f"champion: v{champion['version']} ({champion['alias']})"


def comparison_table(report: dict) -> str:
    """A Markdown table of the scalar test metrics of every candidate, then every baseline (same columns), then
    the failed candidates; below it, each baseline no candidate beats and why each failed candidate failed."""
    names = list(report["candidates"])
    keys = [k for k, v in report["candidates"][names[0]].items() if k.startswith("test/") and isinstance(v, float)]
    lines = [
        f"# {report['dataset']}: test metrics ({report['task']}; best by val {report['primary_metric']})",
        "",
        "| candidate | " + " | ".join(keys) + " |",
        "|---" * (len(keys) + 1) + "|",
    ]
    lines += [_row(name, report["candidates"][name], keys) for name in names]
    lines += [_row(f"baseline: {name}", scores, keys) for name, scores in report.get("baselines", {}).items()]
    champion = report.get("champion")
    if champion and champion.get("comparable"):
        lines.append(_row(champion_label(champion), champion, keys))
    failed = report.get("failed_candidates", {})
    lines += [_row(f"{name} (failed)", {}, keys) for name in failed]
    lines.append("")
    lines += [f"**{unbeaten_message(entry)}.**" for entry in unbeaten(report)]
    lines += [f"- {name} failed in training and was not evaluated: {error}" for name, error in failed.items()]
    if champion and not champion.get("comparable"):
        lines.append(f"- {champion['reason']}")
    return "\n".join(lines).rstrip() + "\n"


def log_lines(dataset: str, report: dict, plots_dir: str) -> list[str]:
    """What evaluate prints: each candidate's and baseline's primary metric, the failed candidates, the verdict."""
    primary = report["primary_metric"]
    lines = []
    for name, scores in [*report["candidates"].items(), *report.get("baselines", {}).items()]:
        what = name if name in report["candidates"] else f"baseline {name}"
        shown = [k for k in (f"val/{primary}", f"test/{primary}") if isinstance(scores.get(k), float)]
        shown = shown or [k for k, v in scores.items() if isinstance(v, float)][:2]  # e.g. a baseline's only metric
        lines.append(f"evaluate[{dataset}]: {what}: " + ", ".join(f"{k}={scores[k]:.4f}" for k in shown))
    champion = report.get("champion")
    if champion:
        key = f"test/{primary}"
        shown = f"{key}={champion[key]:.4f} on this test split" if champion.get("comparable") else champion["reason"]
        lines.append(f"evaluate[{dataset}]: {champion_label(champion)}: {shown}")
    for name, error in report.get("failed_candidates", {}).items():
        lines.append(f"evaluate[{dataset}]: {name} FAILED in training, not evaluated: {error}")
    lines += [f"evaluate[{dataset}]: {unbeaten_message(entry)}" for entry in unbeaten(report)]
    set_by = (report.get("selection") or {}).get("set_by")
    lines.append(
        f"evaluate[{dataset}]: best candidate by val {primary}"
        + (f" (set by {set_by})" if set_by else "")
        + f": {report['best_candidate']}; plots in {plots_dir}/"
    )
    return lines
