"""Tell Prefect when new data arrives at an ingest source.

    python -m pipelines.orchestration.watch [--workdir .] [--interval 300] [--once] [--dataset NAME ...]

Polls the `ingest.source` of each dataset in params.yaml — a local file or folder
(size and modification time), s3://bucket/key (the object's ETag) or an http(s)://
URL (ETag, Last-Modified or Content-Length from a HEAD request) — and when one
differs from what it saw last, emits the Prefect event

    dl-pipeline.source.changed    resource dl-pipeline.dataset.<name>, payload {dataset, source, fingerprint}

The `on-new-data` deployment that `make serve` registers has a trigger on that
event: Prefect starts it with datasets=[<name>] and refresh=true, which ingests the
dataset again (DVC tracks the name of a source, not its contents) and re-runs what
follows only if the data really changed. Built-in sources (sklearn:, python:,
statsmodels:) never change and are not polled. The last fingerprints are kept in
.dvc/tmp/watch.json: the first poll of a source only records it, and a restarted
watcher does not fire again for data it already reported.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

from pipelines.config import load_params

SOURCE_CHANGED = "dl-pipeline.source.changed"
STATE_FILE = Path(".dvc") / "tmp" / "watch.json"
BUILTIN = ("sklearn:", "python:", "statsmodels:")


def fingerprint(source: str, root: Path) -> str | None:
    """Something that changes when the data at `source` changes; None for built-in data."""
    if source.startswith(BUILTIN):
        return None
    if source.startswith("s3://"):
        import boto3

        bucket, _, key = source[len("s3://") :].partition("/")
        head = boto3.client("s3").head_object(Bucket=bucket, Key=key)
        return f"etag:{head['ETag']}"
    if source.startswith(("http://", "https://")):
        request = urllib.request.Request(source, method="HEAD")
        with urllib.request.urlopen(request, timeout=30) as response:
            for header in ("ETag", "Last-Modified", "Content-Length"):
                if response.headers.get(header):
                    return f"{header.lower()}:{response.headers[header]}"
        return None
    path = Path(source).expanduser()
    path = path if path.is_absolute() else root / path
    files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
    return ";".join(f"{p.name}:{p.stat().st_size}:{p.stat().st_mtime_ns}" for p in files)


def poll(root: Path, datasets: list[str] | None = None, state: dict | None = None) -> tuple[list[dict], dict]:
    """One look at every source: the changes since `state`, and the new state."""
    params = load_params(root / "params.yaml")
    state = dict(state or {})
    changes = []
    for name, ds in params.datasets.items():
        if datasets and name not in datasets:
            continue
        source = ds.ingest.source
        try:
            now = fingerprint(source, root)
        except Exception as err:  # unreachable now (or no credentials): look again next time
            print(f"watch: {name}: cannot look at {source}: {err}", file=sys.stderr)
            continue
        if now is None:
            continue
        seen = state.get(name)
        if seen and (seen["source"] != source or seen["fingerprint"] != now):
            changes.append({"dataset": name, "source": source, "fingerprint": now, "previous": seen["fingerprint"]})
        state[name] = {"source": source, "fingerprint": now}
    return changes, state


def emit(change: dict) -> None:
    from prefect.events import emit_event

    emit_event(
        event=SOURCE_CHANGED,
        resource={
            "prefect.resource.id": f"dl-pipeline.dataset.{change['dataset']}",
            "prefect.resource.name": change["dataset"],
        },
        payload=change,
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m pipelines.orchestration.watch", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--workdir", default=".")
    parser.add_argument("--interval", type=float, default=300, help="seconds between polls (default: %(default)s)")
    parser.add_argument("--once", action="store_true", help="poll once and exit")
    parser.add_argument("--dataset", action="append", help="watch only this dataset (repeatable)")
    args = parser.parse_args(argv)
    root = Path(args.workdir).resolve()
    state_file = root / STATE_FILE
    state = json.loads(state_file.read_text()) if state_file.exists() else {}
    while True:
        changes, state = poll(root, args.dataset, state)
        for change in changes:
            print(f"watch: {change['dataset']}: {change['source']} changed; emitting {SOURCE_CHANGED}")
            emit(change)
        if changes:
            from prefect.events.worker import EventsWorker

            EventsWorker.drain_all(timeout=30)  # sent before we sleep or exit
        state_file.parent.mkdir(parents=True, exist_ok=True)
        state_file.write_text(json.dumps(state, indent=1))
        if args.once:
            return 0
        time.sleep(args.interval)


if __name__ == "__main__":
    sys.exit(main())
