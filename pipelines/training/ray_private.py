"""Everything this project takes from Ray Train beyond its public API, in this one module.

Each use saves measured seconds (BENCHMARKS.md, "worker-group start-up"); `missing()` lists what Ray no
longer has, and tests/test_ray_private.py fails naming it, so a Ray upgrade breaks one test here
instead of a training run. What is used, and why:

- `TorchTrainer._create_default_callbacks`, `DatasetsCallback`, `PlacementGroupCleanerCallback`
  (ray.train.v2._internal.callbacks): every fit starts a DatasetManager actor (for Ray Datasets passed as
  `datasets=`; our data reaches the workers as arrays) and a detached PlacementGroupCleaner (it frees the
  worker group's placement group if the controller dies without doing it), each a fresh process
  importing Ray Train: ~2 s of CPU apiece per train stage, and stopping the cleaner adds ~0.9 s to every
  teardown. On a local instance the cleaner guards nothing (the instance ends with the run and takes its
  placement groups with it); on a cluster joined through RAY_ADDRESS it stays.
- A torch backend config the controller can unpickle without torch (`LazyTorchConfig`): Ray's
  `TorchConfig` lives in a module that imports torch at the top, so every TrainController paid
  `import torch` (1.8 s, on the serial path between the fit call and the workers' start) only to send
  functions to the workers. Ours calls Ray's own worker-side functions by name on the workers
  (`ray.train.torch.config._set_torch_distributed_env_vars`, `_setup_torch_process_group`,
  `_shutdown_torch`), with `ray.train._internal.utils.get_address_and_port`,
  `ray.train.v2._internal.constants.is_v2_enabled` and `ray.train.v2._internal.util.TrainingFramework`.
- `get_or_create_autoscaling_coordinator` (ray.data._internal.cluster_autoscaler): Ray Train's controller
  creates this detached actor (one per Ray instance) on its first fit and waits for it: a process start plus
  its imports, ~2-3 s on the serial path to the workers. `start_autoscaling_coordinator` creates it without
  waiting when a worker group's fit begins, so it starts beside the controller instead of after it.
- The names of Ray Train's chatty internal loggers (`QUIET_LOGGERS`, for training.ray_logging).

Nothing here imports Ray at module level: training.ray_logging reads QUIET_LOGGERS in every Ray worker
process (its setup hook), where importing Ray Train would cost ~1.7 s. The backend classes subclass Ray
Train's, so they are defined on first access (the module's `__getattr__`), under their own names so that
a controller unpickles them as usual.
"""

from __future__ import annotations

import functools
import importlib
import logging
import os
from typing import Any

logger = logging.getLogger(__name__)

QUIET_LOGGERS = (
    "ray.train.v2._internal.execution.context",  # "Reporting training result ..." every epoch
    "ray.train.v2._internal.execution.storage",  # "Checkpoint successfully created ..."
    "ray.train.v2._internal.execution.train_fn_utils",  # local mode: "Reported metrics ..." every epoch
)
PLACEMENT_GROUP_CLEANER_LOGGER = "ray.train.v2._internal.execution.controller.placement_group_cleaner"

# (module, attribute path) of every private name used here.
PRIVATE_NAMES = (
    ("ray.train.torch", "TorchTrainer._create_default_callbacks"),
    ("ray.train.v2._internal.callbacks", "DatasetsCallback"),
    ("ray.train.v2._internal.callbacks.placement_group_callback", "PlacementGroupCleanerCallback"),
    ("ray.train.v2._internal.constants", "is_v2_enabled"),
    ("ray.train.v2._internal.util", "TrainingFramework.TORCH"),
    ("ray.train._internal.utils", "get_address_and_port"),
    ("ray.train.torch.config", "_set_torch_distributed_env_vars"),
    ("ray.train.torch.config", "_setup_torch_process_group"),
    ("ray.train.torch.config", "_shutdown_torch"),
    ("ray.train.torch.config", "TorchConfigContextManager"),
    ("ray.data._internal.cluster_autoscaler.default_autoscaling_coordinator", "get_or_create_autoscaling_coordinator"),
    *((name, "logger") for name in (*QUIET_LOGGERS, PLACEMENT_GROUP_CLEANER_LOGGER)),
)


def missing() -> list[str]:
    """The private names of PRIVATE_NAMES the installed Ray lacks ('module.attribute'), none when all are there."""
    gone = []
    for module_name, path in PRIVATE_NAMES:
        try:
            found: Any = importlib.import_module(module_name)
            for part in path.split("."):
                found = getattr(found, part)
        except (ImportError, AttributeError):
            gone.append(f"{module_name}.{path}")
    return gone


@functools.cache
def lean_torch_trainer() -> type:
    """TorchTrainer without the two helper actors a run without Ray Datasets on a local instance never uses."""
    from ray.train.torch import TorchTrainer
    from ray.train.v2._internal.callbacks import DatasetsCallback
    from ray.train.v2._internal.callbacks.placement_group_callback import PlacementGroupCleanerCallback

    from pipelines.training.cluster import local_instance

    class LeanTorchTrainer(TorchTrainer):
        def _create_default_callbacks(self) -> list:
            unused: tuple[type, ...] = ()
            if not self.datasets:
                unused += (DatasetsCallback,)
            if local_instance(os.environ.get("RAY_ADDRESS")):
                unused += (PlacementGroupCleanerCallback,)
            return [cb for cb in super()._create_default_callbacks() if not isinstance(cb, unused)]

    return LeanTorchTrainer


def start_autoscaling_coordinator() -> None:
    """Create Ray Train's AutoscalingCoordinator actor now, without waiting for it (a no-op when it exists).

    Ray Train's controller gets the same named, detached actor on its first fit; started here, it is up by then.
    """
    import ray
    from ray.data._internal.cluster_autoscaler.default_autoscaling_coordinator import (
        get_or_create_autoscaling_coordinator,
    )

    if ray.is_initialized():  # else the fit starts (or joins) Ray itself, and Ray Train creates the actor as usual
        get_or_create_autoscaling_coordinator()


def torch_config(backend: str) -> Any:
    """The backend config for a TorchTrainer: ours under Ray Train V2 (the default), Ray's own under V1.

    Ours assumes V2's worker group (the torch env vars are set in `on_start`, V1 sets them later).
    """
    from ray.train.v2._internal.constants import is_v2_enabled

    if is_v2_enabled():
        return __getattr__("LazyTorchConfig")(backend=backend)
    from ray.train.torch import TorchConfig

    return TorchConfig(backend=backend)


def _on_worker(name: str, **kwargs: Any) -> Any:
    """Runs on a Ray Train worker: one of ray.train.torch.config's functions (that module imports torch)."""
    from ray.train.torch import config

    return getattr(config, name)(**kwargs)


def _set_master(addr: str, port: int) -> None:
    os.environ["MASTER_ADDR"] = addr
    os.environ["MASTER_PORT"] = str(port)


def _define_backend() -> None:
    """Define LazyTorchConfig and _LazyTorchBackend in this module (they subclass Ray Train's classes)."""
    from dataclasses import dataclass

    import ray
    from ray.train.backend import Backend, BackendConfig
    from ray.train.constants import (
        DEFAULT_TORCH_PROCESS_GROUP_SHUTDOWN_TIMEOUT_S,
        TORCH_PROCESS_GROUP_SHUTDOWN_TIMEOUT_S,
    )

    @dataclass
    class LazyTorchConfig(BackendConfig):
        """What `TorchConfig(backend=..., init_method="env")` sets up, without torch on the controller."""

        backend: str = "gloo"
        timeout_s: int = 1800

        @property
        def backend_cls(self) -> type[Backend]:
            return _LazyTorchBackend

        @property
        def train_func_context(self):  # used where the training function is built and run (driver, workers)
            from ray.train.torch.config import TorchConfigContextManager

            return TorchConfigContextManager

        @property
        def framework(self):
            from ray.train.v2._internal.util import TrainingFramework

            return TrainingFramework.TORCH

        def to_dict(self) -> dict[str, Any]:
            return {"backend": self.backend, "init_method": "env", "timeout_s": self.timeout_s}

    class _LazyTorchBackend(Backend):
        share_cuda_visible_devices: bool = True  # as Ray's torch backend: NCCL needs to see its peers' GPUs

        def on_start(self, worker_group, backend_config: LazyTorchConfig) -> None:
            from ray.train._internal.utils import get_address_and_port

            addr, port = worker_group.execute_single(0, get_address_and_port)
            worker_group.execute(_set_master, addr=addr, port=port)
            worker_group.execute(_on_worker, name="_set_torch_distributed_env_vars")  # LOCAL_RANK, WORLD_SIZE...
            ray.get(
                [
                    worker_group.execute_single_async(
                        rank,
                        _on_worker,
                        name="_setup_torch_process_group",
                        backend=backend_config.backend,
                        world_rank=rank,
                        world_size=len(worker_group),
                        init_method="env://",
                        timeout_s=backend_config.timeout_s,
                    )
                    for rank in range(len(worker_group))
                ]
            )

        def on_shutdown(self, worker_group, backend_config: LazyTorchConfig) -> None:
            from ray.exceptions import GetTimeoutError

            futures = worker_group.execute_async(
                _on_worker, name="_shutdown_torch", destroy_process_group=len(worker_group) > 1
            )
            timeout_s = float(
                os.environ.get(TORCH_PROCESS_GROUP_SHUTDOWN_TIMEOUT_S, DEFAULT_TORCH_PROCESS_GROUP_SHUTDOWN_TIMEOUT_S)
            )
            try:
                ray.get(futures, timeout=timeout_s)
            except GetTimeoutError:  # as Ray's own backend: a hung process group must not hold the teardown
                logger.warning(f"Torch process group shutdown timed out after {timeout_s} seconds")

    for cls in (LazyTorchConfig, _LazyTorchBackend):
        cls.__module__, cls.__qualname__ = __name__, cls.__name__  # pickled by name, found by __getattr__
        globals()[cls.__name__] = cls


def __getattr__(name: str) -> Any:
    if name in ("LazyTorchConfig", "_LazyTorchBackend"):
        _define_backend()
        return globals()[name]
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
