"""Compare DVC experiments (a `dvc exp run --queue` sweep): a plain table and a PNG bar chart.

    # each dataset's primary test metric:
    python -m pipelines.orchestration.experiments compare
    # any number in the metrics files:
    python -m pipelines.orchestration.experiments compare --metric best.test/f1_macro
    python -m pipelines.orchestration.experiments compare --out sweep.png

It reads `dvc exp show --json` (the experiments of the current commit and that commit,
the baseline), labels each experiment with the params that differ between them, and
draws one panel per metrics file (one per dataset), one bar per experiment. The PNG
exists because DVC's own HTML plots load Vega from a CDN and are blank offline.
Queued, running and failed experiments have no metrics yet: they are named, not drawn.
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pipelines.atomic import atomic_path
from pipelines.errors import EXIT_BAD_INPUT, PipelineInputError, error_text
from pipelines.handoffs import upgrade_report

DEFAULT_OUT = Path("data/experiments/compare.png")  # git-ignored local state, like data/registry
PARAMS_FILE = "params.yaml"


class ExperimentsError(PipelineInputError):
    """Nothing to compare, an unknown metric, or `dvc exp show` failed: the message says which."""


@dataclass(frozen=True)
class Experiment:
    """One row of `dvc exp show`: an experiment, or the commit it is based on (`baseline`)."""

    name: str
    rev: str
    state: str  # baseline, success, queued, running, failed
    params: dict[str, Any] = field(default_factory=dict)  # flattened: "datasets.tabular.train.epochs" -> 2
    metrics: dict[str, dict[str, Any]] = field(default_factory=dict)  # metrics file -> its flattened numbers

    @property
    def baseline(self) -> bool:
        return self.state == "baseline"


# While a queue runs, `dvc exp show` can catch an experiment's temporary workspace (.dvc/tmp/exps/tmp...)
# half made or half removed and fail ("directory ... does not exist"); a moment later it reads fine.
QUEUE_WORKSPACE_RACE = re.compile(r"\.dvc/tmp/exps/tmp\w+.*does not exist")
SHOW_ATTEMPTS = 4


def show_json(workdir: str | Path = ".") -> list[dict[str, Any]]:
    """`dvc exp show --json` in `workdir`: a list of commits (and the workspace), each with its experiments."""
    dvc = Path(sys.executable).parent / "dvc"
    for attempt in range(1, SHOW_ATTEMPTS + 1):
        proc = subprocess.run(
            [str(dvc) if dvc.exists() else "dvc", "exp", "show", "--json"], cwd=workdir, capture_output=True, text=True
        )
        error = (proc.stderr or proc.stdout).strip()
        if proc.returncode == 0 or attempt == SHOW_ATTEMPTS or not QUEUE_WORKSPACE_RACE.search(error):
            break
        time.sleep(0.5 * attempt)
    if proc.returncode != 0:
        raise ExperimentsError(f"dvc exp show failed in {Path(workdir).resolve()}: {error[-500:]}")
    return json.loads(proc.stdout)


def flatten(data: Any, prefix: str = "") -> dict[str, Any]:
    """{"a": {"b": 1}} -> {"a.b": 1}; lists and other leaves are kept as they are."""
    if not isinstance(data, dict):
        return {prefix: data} if prefix else {}
    out: dict[str, Any] = {}
    for key, value in data.items():
        out.update(flatten(value, f"{prefix}.{key}" if prefix else str(key)))
    return out


def _files(results: dict[str, Any] | None, upgrade=None) -> dict[str, dict[str, Any]]:
    """A params/metrics section of `dvc exp show --json` ({file: {"data": ...} or {"error": ...}}),
    flattened per file (after `upgrade`, if given)."""
    upgrade = upgrade or (lambda data: data)
    return {path: flatten(upgrade(result.get("data") or {})) for path, result in (results or {}).items()}


def _row(state: dict[str, Any], status: str, name: str | None) -> Experiment:
    data = state.get("data") or {}
    params: dict[str, Any] = {}
    for path, values in _files(data.get("params")).items():
        params.update(values if path == PARAMS_FILE else {f"{path}:{k}": v for k, v in values.items()})
    return Experiment(
        name=name or state.get("name") or state["rev"][:7],
        rev=state["rev"],
        state=status,
        params=params,
        # An experiment from before schema_version 3 spelled `best.test_accuracy`: read as `best.test/accuracy`.
        metrics=_files(data.get("metrics"), upgrade_report),
    )


def parse_show(show: list[dict[str, Any]]) -> list[Experiment]:
    """The baselines and their experiments from `dvc exp show --json` (DVC 3: a list of ExpState).

    Each commit entry is {"rev", "name", "data": {"params", "metrics", ...}, "error",
    "experiments": [{"name", "executor": {"state", ...} | null, "revs": [ExpState, ...]}]};
    the newest state of an experiment is revs[0]. The "workspace" entry is the working tree,
    not an experiment, and is left out.
    """
    rows: list[Experiment] = []
    for commit in show:
        if commit.get("rev") == "workspace":
            continue
        rows.append(_row(commit, "baseline", commit.get("name")))
        for exp in commit.get("experiments") or []:
            if not exp.get("revs"):
                continue
            latest = exp["revs"][0]
            state = (exp.get("executor") or {}).get("state") or ("failed" if latest.get("error") else "success")
            rows.append(_row(latest, state, exp.get("name") or latest.get("name")))
    return rows


def differing_params(rows: list[Experiment]) -> list[str]:
    """The param keys whose values are not the same in every row (what the sweep varied)."""
    keys = sorted({k for row in rows for k in row.params})
    return [k for k in keys if len({json.dumps(row.params.get(k), sort_keys=True) for row in rows}) > 1]


def short_names(keys: list[str]) -> dict[str, str]:
    """The shortest dotted suffix (two parts at least) that tells each key apart:
    ...candidates.fnn-relu.lr -> fnn-relu.lr."""
    out = {}
    for key in keys:
        parts = key.split(".")
        for n in range(min(2, len(parts)), len(parts) + 1):
            suffix = ".".join(parts[-n:])
            if sum(1 for other in keys if other == suffix or other.endswith("." + suffix)) == 1:
                break
        out[key] = suffix
    return out


def metric_columns(rows: list[Experiment], metric: str | None) -> list[tuple[str, str]]:
    """(metrics file, key) pairs to compare: `metric` in every file that has it, or each file's primary test metric.

    Our metrics files (data/evaluate/<ds>/metrics.json) name their primary metric and
    hold the best candidate's test scores under `best`: the default is best.test/<primary>.
    """
    files = sorted({path for row in rows for path in row.metrics})
    if not files:
        raise ExperimentsError("no metrics in dvc exp show: run the pipeline (dvc repro) or an experiment first")
    numeric = {
        (path, key)
        for row in rows
        for path, values in row.metrics.items()
        for key, value in values.items()
        if _is_number(value)
    }
    if metric is not None:
        # The old spellings (best.test_accuracy, candidates.x.val.accuracy) name today's `split/metric` keys.
        metric = re.sub(r"(^|\.)(train|val|test)[._]", r"\1\2/", metric)
        found = [(path, metric) for path in files if (path, metric) in numeric]
        if not found:
            known = ", ".join(sorted({key for _, key in numeric}))
            raise ExperimentsError(f"--metric {metric}: no such number in {', '.join(files)}; they have: {known}")
        return found
    columns = []
    for path in files:
        primary = _field(rows, path, "primary_metric")
        if primary and (path, f"best.test/{primary}") in numeric:
            columns.append((path, f"best.test/{primary}"))
    if not columns:
        raise ExperimentsError(f"no primary_metric in {', '.join(files)}: choose one with --metric KEY")
    return columns


def _field(rows: list[Experiment], path: str, key: str) -> Any:
    """A metrics file's descriptive field (primary_metric, mode) from the first row that has it."""
    return next((row.metrics[path][key] for row in rows if row.metrics.get(path, {}).get(key)), None)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _column_title(path: str, key: str) -> str:
    """data/evaluate/tabular/metrics.json + best.test/accuracy -> tabular: best.test/accuracy."""
    parts = Path(path).parts
    dataset = parts[-2] if len(parts) >= 2 and parts[-1] == "metrics.json" else path
    return f"{dataset}: {key}"


def table(rows: list[Experiment], params: list[str], columns: list[tuple[str, str]]) -> str:
    """A plain-text table: one line per experiment, its differing params and the compared metrics."""
    short = short_names(params)
    header = ["experiment", "state", *(short[p] for p in params), *(_column_title(p, k) for p, k in columns)]
    lines = [header]
    for row in rows:
        values = [row.metrics.get(path, {}).get(key) for path, key in columns]
        lines.append([row.name, row.state, *(_fmt(row.params.get(p)) for p in params), *(_fmt(v) for v in values)])
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
    return "\n".join("  ".join(cell.ljust(w) for cell, w in zip(line, widths)).rstrip() for line in lines)


def _fmt(value: Any) -> str:
    if value is None:
        return "-"
    return f"{value:.4f}" if isinstance(value, float) else str(value)


def bar_chart(rows: list[Experiment], params: list[str], columns: list[tuple[str, str]], out: Path) -> None:
    """One panel per metric column, one bar per experiment (the baseline grey), labelled with its differing params."""
    from pipelines.evaluation.plots import plt  # Agg backend, as for the stage plots

    short = short_names(params)
    labels = [row.name + "".join(f"\n{short[p]}={_fmt(row.params.get(p))}" for p in params) for row in rows]
    fig, axes = plt.subplots(
        1, len(columns), figsize=(max(5.0, 1.3 * len(rows) + 1.5) * len(columns), 4.5), squeeze=False
    )
    for ax, (path, key) in zip(axes[0], columns):
        values = [row.metrics.get(path, {}).get(key) for row in rows]
        heights = [v if _is_number(v) else 0.0 for v in values]
        colors = ["tab:grey" if row.baseline else "tab:blue" for row in rows]
        bars = ax.bar(range(len(rows)), heights, color=colors)
        for bar, value in zip(bars, values):
            ax.annotate(
                _fmt(value), (bar.get_x() + bar.get_width() / 2, bar.get_height()), ha="center", va="bottom", fontsize=8
            )
        ax.set_xticks(range(len(rows)), labels, fontsize=8)
        primary = key == f"best.test/{_field(rows, path, 'primary_metric')}"
        better = (
            {"max": " (higher is better)", "min": " (lower is better)"}.get(_field(rows, path, "mode"), "")
            if primary
            else ""
        )
        ax.set(title=_column_title(path, key) + better, ylabel=key)
        ax.grid(alpha=0.3, axis="y")
    fig.suptitle("DVC experiments (grey: the baseline commit)")
    fig.tight_layout()
    with atomic_path(out) as tmp:
        fig.savefig(tmp, dpi=110, format="png")  # the temp name ends in .tmp: say the format
    plt.close(fig)


def compare(show: list[dict[str, Any]], metric: str | None = None, out: Path = DEFAULT_OUT) -> str:
    """Table and PNG of the finished experiments (and their baseline); returns the table, with a note on the rest."""
    rows = parse_show(show)
    done = [row for row in rows if row.baseline or (row.state == "success" and row.metrics)]
    pending = [row for row in rows if row not in done]
    if not any(not row.baseline for row in done):
        waiting = f" ({', '.join(f'{r.name}: {r.state}' for r in pending)})" if pending else ""
        raise ExperimentsError(
            f"no finished experiments in dvc exp show{waiting}; queue some with "
            "dvc exp run --queue -S KEY=V1,V2 and run them with dvc queue start"
        )
    columns = metric_columns(done, metric)
    params = differing_params(done)
    bar_chart(done, params, columns, out)
    text = table(done, params, columns)
    if pending:
        text += "\nnot finished: " + ", ".join(f"{r.name} ({r.state})" for r in pending)
    return text


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m pipelines.orchestration.experiments", description=__doc__.split("\n\n")[0]
    )
    commands = parser.add_subparsers(dest="command", required=True)
    cmp = commands.add_parser("compare", help="table and PNG of the experiments in dvc exp show")
    cmp.add_argument(
        "--metric",
        default=None,
        metavar="KEY",
        help="a number in the metrics files, e.g. best.test/f1_macro (default: each dataset's primary test metric)",
    )
    cmp.add_argument("--out", type=Path, default=None, help=f"the PNG to write (default: {DEFAULT_OUT} in the project)")
    cmp.add_argument("--workdir", default=".", help="the DVC project (default: here)")
    args = parser.parse_args(argv)
    try:
        out = args.out or Path(args.workdir) / DEFAULT_OUT
        print(compare(show_json(args.workdir), args.metric, out))
    except PipelineInputError as err:
        print(error_text(str(err)), file=sys.stderr)
        return EXIT_BAD_INPUT
    print(f"plot: {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
