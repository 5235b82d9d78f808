"""Ray Train's torch process-group set-up, with a controller that never imports torch.

A fit's TrainController unpickles the trainer's backend config; Ray's `TorchConfig` lives in a
module that imports torch at the top, so every controller process paid `import torch` (1.8 s,
measured: BENCHMARKS.md "worker-group start-up") on the serial path between the fit call and
the workers' start, only to send functions to the workers. `LazyTorchConfig` does what
`ray.train.torch.config._TorchBackend.on_start/on_shutdown` do for CPU (gloo) and GPU (nccl)
workers, calling Ray's own worker-side functions by name on the workers, where torch is
imported anyway. (TPU slices are not part of this pipeline.)
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from typing import Any

import ray
from ray.train.backend import Backend, BackendConfig
from ray.train.constants import DEFAULT_TORCH_PROCESS_GROUP_SHUTDOWN_TIMEOUT_S, TORCH_PROCESS_GROUP_SHUTDOWN_TIMEOUT_S

logger = logging.getLogger(__name__)


def torch_config(backend: str) -> BackendConfig:
    """The backend config for a TorchTrainer: ours under Ray Train V2 (the default), Ray's own under V1.

    Ours assumes V2's worker group (the torch env vars are set in `on_start`, V1 sets them later).
    """
    from ray.train.v2._internal.constants import is_v2_enabled

    if is_v2_enabled():
        return LazyTorchConfig(backend=backend)
    from ray.train.torch import TorchConfig

    return TorchConfig(backend=backend)


def _on_worker(name: str, **kwargs: Any) -> Any:
    """Runs on a Ray Train worker: one of ray.train.torch.config's functions (that module imports torch)."""
    from ray.train.torch import config

    return getattr(config, name)(**kwargs)


def _set_master(addr: str, port: int) -> None:
    os.environ["MASTER_ADDR"] = addr
    os.environ["MASTER_PORT"] = str(port)


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
