"""The pipeline's command line (`make run`): validate, then run the Prefect flow; Ctrl-C/SIGTERM stop it cleanly.

    python -m pipelines.orchestration.flow                                  # every dataset in params.yaml
    python -m pipelines.orchestration.flow --dataset digits                 # one dataset's chain only
    python -m pipelines.orchestration.flow -S datasets.digits.train.epochs=5
    python -m pipelines.orchestration.flow --parallel 1                     # one dataset's chain at a time

Order matters for a fast answer: params and the datasets' local sources are checked before
Prefect, torch or Ray is imported (a bad param is refused in well under a second). Exit codes:
0 done, 2 bad input (params or data), 75 something unavailable (try again; also a run that
finished but could not push to the DVC remote: its summary, then "not pushed: ..."), the failing
stage's own code otherwise (1; also a damaged cache object found before the push), 130 after
SIGINT (Ctrl-C), 143 after SIGTERM.

On SIGINT or SIGTERM the running stages' process groups and the run's Ray instance are
stopped first (within seconds), then the Prefect run ends Crashed and the process exits. The
stages write through temp files renamed into place, so nothing half-written is left in data/,
and the same command again resumes (Ray run names are deterministic: training continues from
its last checkpoint).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import sys
import time
from collections.abc import Iterator
from pathlib import Path

from pipelines import paths, workspace
from pipelines.atomic import write_json
from pipelines.config import PipelineParams, load_params, validate_params
from pipelines.errors import (
    EXIT_BAD_INPUT,
    EXIT_DAMAGED,
    EXIT_UNAVAILABLE,
    DamagedData,
    PipelineInputError,
    Unavailable,
    error_text,
)
from pipelines.orchestration import lanes, ray_head
from pipelines.orchestration.failures import NotPushed, StageFailed
from pipelines.orchestration.overrides import parse_overrides
from pipelines.orchestration.preflight import check_model_lines, check_sources

TIMINGS_ENV = "DL_PIPELINE_TIMINGS"  # a JSON file the command line writes its run's timings to
EXIT_SIGNAL = {signal.SIGINT: 130, signal.SIGTERM: 143}  # 128 + the signal, as a shell reports it


class Terminated(BaseException):
    """SIGTERM (docker stop, a pod eviction, kill): unwinds like KeyboardInterrupt does for SIGINT."""


def stop_everything() -> None:
    """Stop the stages this process is running and the run's Ray instance, now (signal handlers)."""
    lanes.STOPPING.set()  # first: no chain starts or retries a stage, none that is stopped counts as done
    pgids = tuple(pgid for lock in workspace._held.values() for pgid in lock.stage_pgids())
    ray_head.stop_all(pgids, reap=lambda: [_reap(pgid) for pgid in pgids])


def _reap(pid: int) -> None:
    """The stage's `dvc repro` is our child (its pid is its group's id): collect it once it exited."""
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, os.WNOHANG)


@contextlib.contextmanager
def stop_on_signals() -> Iterator[list[int]]:
    """SIGINT/SIGTERM: stop the stage and Ray first, then unwind (Prefect records the run as Crashed).

    A second signal while stopping is only reported: cleanup is not cut short.
    """
    received: list[int] = []

    def handler(signum: int, frame) -> None:
        if received:
            print(f"\n{signal.Signals(signum).name}: already stopping", file=sys.stderr, flush=True)
            return
        received.append(signum)
        print(f"\n{signal.Signals(signum).name}: stopping the run", file=sys.stderr, flush=True)
        stop_everything()
        raise KeyboardInterrupt if signum == signal.SIGINT else Terminated()

    previous = {sig: signal.signal(sig, handler) for sig in EXIT_SIGNAL}
    try:
        yield received
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m pipelines.orchestration.flow", description=__doc__.split("\n")[0])
    parser.add_argument(
        "-S",
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a param, e.g. datasets.digits.train.epochs=5",
    )
    parser.add_argument(
        "--dataset", action="append", default=None, metavar="NAME", help="run only this dataset's stages (repeatable)"
    )
    parser.add_argument("--workdir", default=".", help="project root (holds dvc.yaml and params.yaml)")
    parser.add_argument(
        "--parallel",
        type=_positive_int,
        default=None,
        metavar="N",
        help="datasets' chains run at once (default: one per core on a local CPU-only machine, else 1)",
    )
    return parser.parse_args(argv)


def _positive_int(text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"expected a whole number >= 1, got {text!r}")
    return int(text)


def checked_params(args: argparse.Namespace) -> PipelineParams:
    """The run's params, validated, and the chosen datasets' local sources checked: PipelineInputError if not."""
    workdir = Path(args.workdir)
    params = load_params(workdir / paths.PARAMS_FILE)
    if args.set:
        params = validate_params(parse_overrides(args.set, params.model_dump(mode="json")), "-S override")
    for name in args.dataset or []:
        params.dataset(name)
    check_sources(params, list(args.dataset or params.datasets), workdir)
    check_model_lines(params, list(args.dataset or params.datasets), workdir)
    return params


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        params = checked_params(args)
    except PipelineInputError as err:
        print(error_text(str(err)), file=sys.stderr)
        return EXIT_BAD_INPUT
    with stop_on_signals() as received:
        try:
            return _run(params, args)
        except KeyboardInterrupt:
            return EXIT_SIGNAL[signal.SIGINT]
        except Terminated:
            return EXIT_SIGNAL[signal.SIGTERM]
        except BaseException as err:  # Prefect's TerminationSignal, or a signal that arrived while unwinding
            if received:
                return EXIT_SIGNAL[signal.Signals(received[0])]
            if type(err).__name__ == "TerminationSignal":
                return EXIT_SIGNAL[signal.SIGTERM]
            raise
        finally:
            ray_head.stop_all()  # never leave a Ray instance behind


def _run(params: PipelineParams, args: argparse.Namespace) -> int:
    from pipelines.orchestration.prefect_api import ensure_api

    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    prefect_api_s = ensure_api()
    from pipelines.orchestration.flow import training_pipeline  # Prefect is imported here, after validation

    started = time.perf_counter()
    not_pushed = None
    try:
        result = training_pipeline(
            params=params if args.set else None, datasets=args.dataset, workdir=args.workdir, parallel=args.parallel
        )
    except StageFailed as err:
        print(error_text(str(err)), file=sys.stderr)
        return err.exit_code if err.exit_code in (2, 75) else 1
    except DamagedData as err:  # a damaged cache object, found before the push
        print(error_text(str(err)), file=sys.stderr)
        return EXIT_DAMAGED
    except NotPushed as err:  # the run is done and its models registered; only the DVC remote is missing them
        result, not_pushed = err.outcome, str(err)
    except Unavailable as err:  # e.g. the DVC remote, for outputs the run needs
        print(error_text(f"{err} (temporary: trying again may work)"), file=sys.stderr)
        return EXIT_UNAVAILABLE
    if os.environ.get(TIMINGS_ENV):  # where the time went, for bench/pipeline.py
        timings = {k: result[k] for k in ("stages", "ray_start_s")}
        write_json(os.environ[TIMINGS_ENV], {**timings, "prefect_api_s": prefect_api_s, "flow_s": _since(started)})
    print_summary(result, params.register.registry, pushed=not not_pushed and bool(result.get("remote")))
    if not_pushed:
        print(error_text(not_pushed), file=sys.stderr)
        return EXIT_UNAVAILABLE
    return 0


def print_summary(result: dict, registry: str, pushed: bool = True) -> None:
    """Each dataset's registered version and test score, then where to look."""
    print("\nDone.")
    for name, done in result["datasets"].items():
        reg, primary = done["registered"], done["primary_metric"]
        print(
            f"  {name:<10} {reg['name']} v{reg['version']} ({reg['candidate']}): "
            f"test {primary} {done['best']['test/' + primary]:.4f}"
            f"   plots: {paths.DatasetPaths(name).plots_dir}/"
        )
    print(f"Metrics: dvc metrics show   Plots: dvc plots show (or the PNGs above)   Models: {registry}")
    remote, to_commit = result.get("remote"), result.get("to_commit") or []
    if pushed:
        shared = f"Outputs pushed to the DVC remote {remote!r}."
    elif not remote:
        shared = "No DVC remote: `dvc remote add -d NAME URL`, then `dvc push`, shares the outputs."
    else:
        shared = ""  # not pushed: the error line after this says so
    kept = "Git: nothing to commit."
    if to_commit:
        kept = f"To keep this run in git: git add {' '.join(to_commit)} && git commit"
    print(" ".join(filter(None, (shared, kept))))


def _since(started: float) -> float:
    return round(time.perf_counter() - started, 2)


if __name__ == "__main__":
    sys.exit(main())
