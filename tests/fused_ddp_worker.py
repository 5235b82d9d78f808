"""The Ray Train worker function of tests/test_fused_ddp.py: the real `training.worker.train_worker`, except that
candidates named `unfused-*` train one Lightning step per minibatch (K = 1), so a fused and an unfused DDP fit
of the same job share one worker group (one start-up). The workers import it as `tests.fused_ddp_worker` (the
ray_instance fixture puts this checkout on their PYTHONPATH)."""

from __future__ import annotations

from typing import Any

UNFUSED = "unfused-"


def train_worker_with_unfused_candidates(config: dict[str, Any]) -> None:
    from pipelines.training import fused, worker

    choose = worker._module_and_batches

    def module_and_batches(job, *args):
        cap = fused.MAX_FUSED
        if job.candidate.startswith(UNFUSED):
            fused.MAX_FUSED = 1  # updates_per_step's cap: one update per Lightning step
        try:
            return choose(job, *args)
        finally:
            fused.MAX_FUSED = cap

    worker._module_and_batches = module_and_batches
    try:
        worker.train_worker(config)
    finally:
        worker._module_and_batches = choose
