"""Where a train stage's worker runs: a Ray Train worker group, or local mode. One interface, two implementations.

Ray Train runs the same training function (`training.worker.train_worker`) either way; everything
that differs between the two lives here, chosen once per side:

- `RayWorkerGroup`: worker processes that Ray starts and restarts, DDP between them (Ray's strategy,
  environment and `prepare_trainer`), each worker's CPUs as Ray reserved them, its resume point Ray's
  latest reported checkpoint (which Ray keeps on the run's storage), its placement a Ray node.
- `LocalMode`: Ray Train's local mode (`ScalingConfig(num_workers=0)`), the training function in the
  stage's own process: Lightning's single-device strategy, the CPUs the stage gave it, and its resume
  point also on the run's storage (`<run>/resume/`), because Ray keeps local mode's reported checkpoints
  in memory only and they die with the process. Signals end the process with their own exit codes.

The driver picks the runtime from the stage's `Scaling` (`runtime_of`) and hands the worker its
`loop_config()`; the worker picks the same runtime again from its config (`runtime_for`). Nothing here
imports Ray, torch or Lightning at module level: the driver imports this module in stages that never train.
"""

from __future__ import annotations

import contextlib
import signal
import threading
from abc import ABC, abstractmethod
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pipelines.training import store
from pipelines.training.job import Scaling

if TYPE_CHECKING:
    import lightning.pytorch as pl

# (finished candidates -> their status, the candidate in flight, its Lightning checkpoint): `training.progress`.
ResumePoint = tuple[dict[str, Any], str | None, Path | None]

# The worker config's key that picks local mode: the CPUs the stage gives its one worker (None: a Ray worker group).
LOCAL_CPUS = "in_process_cpus"


class Runtime(ABC):
    """What the driver builds and the worker trains with, wherever the worker runs."""

    in_process: bool  # recorded in each rank's placement record

    # --- The driver's side: how the TorchTrainer is built and run.

    @abstractmethod
    def num_workers(self, scaling: Scaling) -> int:
        """ScalingConfig's num_workers."""

    @abstractmethod
    def loop_config(self) -> dict[str, Any]:
        """The train_loop_config entries from which `runtime_for` picks this runtime again in the worker."""

    @abstractmethod
    def driving(self) -> contextlib.AbstractContextManager[None]:
        """Around building the TorchTrainer and its fit, in the driver."""

    # --- The worker's side: one candidate's Lightning Trainer and what it reports.

    @abstractmethod
    def cpus(self) -> float:
        """The CPUs this worker may use."""

    @abstractmethod
    def strategy(self) -> pl.strategies.Strategy:
        """The Lightning strategy of each candidate's Trainer."""

    @abstractmethod
    def plugins(self) -> list[Any]:
        """The Lightning plugins of each candidate's Trainer."""

    @abstractmethod
    def prepare(self, trainer: pl.Trainer) -> pl.Trainer:
        """The Trainer, made ready to run in this runtime."""

    @abstractmethod
    def resume_point(self) -> ResumePoint:
        """Where the stage's run resumes: nothing done and nothing in flight when it starts afresh."""

    @abstractmethod
    def keep_resume_point(
        self, checkpoint_dir: Path, finished: dict[str, Any], current: str | None, fence: store.Fence | None
    ) -> None:
        """Rank 0 keeps the resume point it reports to Ray (`progress.json` and the Lightning checkpoint) where
        `resume_point` finds it after a restart, while `fence` allows."""

    @abstractmethod
    def node_id(self) -> str | None:
        """The Ray node this worker runs on, for its placement record."""


class RayWorkerGroup(Runtime):
    """Ray Train worker processes (1..many, on one or many nodes), DDP between them."""

    in_process = False

    def num_workers(self, scaling: Scaling) -> int:
        return scaling.num_workers

    def loop_config(self) -> dict[str, Any]:
        return {LOCAL_CPUS: None}

    def driving(self) -> contextlib.AbstractContextManager[None]:
        from pipelines.training.ray_private import start_autoscaling_coordinator

        # Ray Train's controller waits for this actor's start on a fresh instance: started now, it comes up
        # while the fit is built and the controller starts (2-3 s less to the first epoch; BENCHMARKS.md).
        start_autoscaling_coordinator()
        return contextlib.nullcontext()  # the workers are other processes: Ray stops them

    def cpus(self) -> float:
        import ray

        return ray.get_runtime_context().get_assigned_resources().get("CPU", 0)

    def strategy(self) -> pl.strategies.Strategy:
        from ray.train.lightning import RayDDPStrategy

        return _ddp_strategy(RayDDPStrategy)

    def plugins(self) -> list[Any]:
        from ray.train.lightning import RayLightningEnvironment

        return [RayLightningEnvironment()]

    def prepare(self, trainer: pl.Trainer) -> pl.Trainer:
        from ray.train.lightning import prepare_trainer

        return prepare_trainer(trainer)

    def resume_point(self) -> ResumePoint:
        import ray.train

        from pipelines.training.progress import resume_point

        return resume_point(ray.train.get_checkpoint())

    def keep_resume_point(
        self, checkpoint_dir: Path, finished: dict[str, Any], current: str | None, fence: store.Fence | None
    ) -> None:
        pass  # Ray keeps the reported checkpoint under the run's storage itself

    def node_id(self) -> str | None:
        import ray

        return ray.get_runtime_context().get_node_id()


class LocalMode(Runtime):
    """Ray Train's local mode: one worker, the training function in the stage's own process, on `cpus` threads."""

    in_process = True

    def __init__(self, run: str, cpus: float) -> None:
        self.run, self._cpus = run, cpus

    def num_workers(self, scaling: Scaling) -> int:
        return 0  # what tells Ray Train to run in local mode

    def loop_config(self) -> dict[str, Any]:
        return {LOCAL_CPUS: self._cpus}  # no Ray resources in local mode to read the worker's CPUs from

    @contextlib.contextmanager
    def driving(self) -> Iterator[None]:
        from pipelines.training.ray_logging import quiet

        quiet()  # the worker's Ray Train loggers are this process's
        with _signals_exit():
            yield

    def cpus(self) -> float:
        return self._cpus

    def strategy(self) -> pl.strategies.Strategy:
        return _seeded_single_device_strategy()  # no worker group to join

    def plugins(self) -> list[Any]:
        return []

    def prepare(self, trainer: pl.Trainer) -> pl.Trainer:
        return trainer

    def resume_point(self) -> ResumePoint:
        import ray.train

        from pipelines.training.progress import resume_point, stored_resume_point

        checkpoint = ray.train.get_checkpoint()
        if checkpoint is None:  # a new process: what Ray kept in memory died with the last one
            return stored_resume_point(self.run)
        return resume_point(checkpoint)

    def keep_resume_point(
        self, checkpoint_dir: Path, finished: dict[str, Any], current: str | None, fence: store.Fence | None
    ) -> None:
        from pipelines.training.progress import save_resume_point

        save_resume_point(self.run, checkpoint_dir, finished, current, fence)

    def node_id(self) -> str | None:
        return None  # no Ray node: the stage's own process


def runtime_of(scaling: Scaling, run: str) -> Runtime:
    """The driver's choice, from the stage's scaling (`training.plan`)."""
    return LocalMode(run, scaling.cpus_per_worker) if scaling.in_process else RayWorkerGroup()


def runtime_for(config: dict[str, Any]) -> Runtime:
    """The worker's choice, from its train_loop_config: the same runtime as the driver's (`Runtime.loop_config`)."""
    cpus = config.get(LOCAL_CPUS)
    return RayWorkerGroup() if cpus is None else LocalMode(config["run_uri"], cpus)


def _ddp_strategy(ray_ddp_strategy: type) -> pl.strategies.Strategy:
    """Ray's DDP strategy, minus the DDP wrapper when the run has a single worker.

    With one worker there is nothing to all-reduce, yet DistributedDataParallel still
    copies every gradient into its buckets and runs a (one-rank) all-reduce each step:
    ~10 % of a small model's step on CPU (BENCHMARKS.md). With several workers,
    gradients are DDP's bucket views (one copy fewer per step, less memory).
    """

    class RayTrainStrategy(ray_ddp_strategy):
        def configure_ddp(self) -> None:
            if self.world_size > 1:
                super().configure_ddp()

    return RayTrainStrategy(gradient_as_bucket_view=True)


def _seeded_single_device_strategy() -> pl.strategies.Strategy:
    """Lightning's single-device strategy for local mode, seeded as DDP's set-up seeds a Ray worker.

    Ray's DDP strategy re-seeds every RNG from `seed_everything`'s seed when the fit starts (after the
    model's weights were drawn); doing the same here makes dropout draw the same masks, so one worker
    trains the same weights in local mode as in a one-worker Ray group.
    """
    import torch
    from lightning.fabric.utilities.seed import reset_seed
    from lightning.pytorch.strategies import SingleDeviceStrategy

    class SeededSingleDeviceStrategy(SingleDeviceStrategy):
        def setup_environment(self) -> None:
            super().setup_environment()
            reset_seed()  # where DDPStrategy.setup_distributed does

    return SeededSingleDeviceStrategy(device=torch.device("cpu"))


@contextlib.contextmanager
def _signals_exit() -> Iterator[None]:
    """SIGTERM and SIGINT end this process with 143 / 130 while Lightning trains in its main thread (local mode).

    Lightning's fit takes both over: SIGTERM finishes the step and stops with an exception that exits 0,
    Ctrl-C shuts down "gracefully" with exit 1. A stage stopped by `kill`, a supervisor or a terminal must
    not look successful, nor like a failure of its own. Lightning calls a SIGTERM handler that was there
    before its own, and a SIGINT handler that raises instead of KeyboardInterrupt passes through its
    fit. The resume point is never half-written (training.progress writes, then renames): a re-run resumes.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def exit_on(signum: int, frame) -> None:
        raise SystemExit(128 + signum)

    ours = {  # only where the default is in place: a caller's own handler stays in charge
        signum: default
        for signum, default in ((signal.SIGTERM, signal.SIG_DFL), (signal.SIGINT, signal.default_int_handler))
        if signal.getsignal(signum) is default
    }
    for signum in ours:
        signal.signal(signum, exit_on)
    try:
        yield
    finally:
        for signum, default in ours.items():
            signal.signal(signum, default)
