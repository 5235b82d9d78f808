"""Ray Train's TorchTrainer without the helper actors a local run without Ray Datasets never uses.

Every fit of a TorchTrainer starts, beside its controller and workers, a DatasetManager actor
(for Ray Datasets passed as `datasets=`: we pass none, our data reaches the workers as arrays)
and a detached PlacementGroupCleaner (it frees the worker group's placement group if the
controller dies without doing it). Each is one more fresh process importing Ray Train: ~2 s of
CPU apiece, measured per train stage (BENCHMARKS.md), and stopping the cleaner adds ~0.9 s to
every teardown. On a local instance the cleaner guards nothing: the instance itself (the flow's
head, or the one a stage started) ends with the run and takes its placement groups with it. On a
cluster joined through RAY_ADDRESS, where placement groups outlive a driver, it stays.

This leans on one private method of Ray Train V2 (`_create_default_callbacks`, Ray 2.60 as pinned
in constraints.txt); tests/test_train_group.py checks that a stage trains without the two actors.
"""

from __future__ import annotations

import functools
import os

from pipelines.training.cluster import local_instance


@functools.cache
def lean_torch_trainer() -> type:
    """The TorchTrainer subclass (built on first use: importing Ray Train costs seconds)."""
    from ray.train.torch import TorchTrainer
    from ray.train.v2._internal.callbacks import DatasetsCallback
    from ray.train.v2._internal.callbacks.placement_group_callback import PlacementGroupCleanerCallback

    class LeanTorchTrainer(TorchTrainer):
        def _create_default_callbacks(self) -> list:
            unused: tuple[type, ...] = ()
            if not self.datasets:
                unused += (DatasetsCallback,)
            if local_instance(os.environ.get("RAY_ADDRESS")):
                unused += (PlacementGroupCleanerCallback,)
            return [cb for cb in super()._create_default_callbacks() if not isinstance(cb, unused)]

    return LeanTorchTrainer
