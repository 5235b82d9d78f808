"""The run-wide sections of params.yaml: how training runs (`train`), `evaluate` and `register`.

Shared by every dataset; a cluster profile overrides `train`. The per-dataset sections live in __init__.py.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import ByteSize, Field, WrapValidator

from pipelines.config.modalities import Strict


def _one_worker_error(value: Any, handler: Any) -> Any:
    """One message for `num_workers` instead of one per branch of its union (a number, or auto)."""
    if value == "auto" or (isinstance(value, int) and not isinstance(value, bool) and value >= 1):
        return handler(value)
    raise ValueError(f"Input should be greater than or equal to 1, or 'auto'; got {value!r}")


class ComputeParams(Strict):
    """How training runs: shared by every dataset (and what a cluster profile overrides)."""

    num_workers: Annotated[Annotated[int, Field(ge=1)] | Literal["auto"], WrapValidator(_one_worker_error)] = Field(
        "auto",
        description="Ray Train workers (processes). auto: one per GPU with use_gpu; on a CPU machine of its own, "
        "one worker with all its cores, run in the train stage's process (Ray Train's local mode)",
    )
    use_gpu: bool = Field(False, description="One GPU per worker, NCCL; otherwise CPU workers with gloo")
    cpus_per_worker: float = Field(1.0, gt=0)
    gpus_per_worker: float = Field(1.0, gt=0, description="GPUs per worker when use_gpu (fractions share a GPU)")
    placement_strategy: Literal["PACK", "SPREAD", "STRICT_PACK", "STRICT_SPREAD"] = "PACK"
    precision: Literal["32", "bf16-mixed"] = Field("32", description="bf16-mixed autocast on GPUs that support it")
    memory_per_worker: ByteSize | None = Field(
        None,
        description="Memory Ray reserves for each worker, e.g. 4GiB (none: not reserved); data_loading: auto "
        "streams a dataset whose train and val splits take more than a quarter of it",
    )
    checkpoints_to_keep: int = Field(2, ge=1)
    storage_path: str = Field("data/ray_results", description="Ray Train checkpoints: a local/shared path or s3://")


class EvaluateParams(Strict):
    batch_size: int = Field(1024, ge=1)


class RegisterParams(Strict):
    registry: str = Field(
        "data/registry",
        description="Model registry: a local path or s3://bucket/prefix (endpoint from AWS_ENDPOINT_URL)",
    )
    promote_alias: str = Field(
        "production", pattern=r"^[A-Za-z][A-Za-z0-9_.-]*$", description="Alias a new version may take"
    )
    promote_policy: Literal["better", "always", "never"] = Field(
        "better", description="better: only if it beats the alias's version on the task's primary test metric"
    )
