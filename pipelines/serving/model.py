"""One registered model loaded for serving, and the batch step the deployment runs.

Loading is predict's: the registry resolves NAME[:VERSION|:ALIAS], the checkpoint is checked against the
card's sha256 and loaded weights-only, and the preprocessing object comes from the checkpoint.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from pipelines.errors import PipelineInputError
from pipelines.serving import instances as inst
from pipelines.serving.protocol import BadRequest

TOP_K = 3


@dataclass
class ServedModel:
    name: str
    version: int
    net: Any
    info: Any
    prep: Any

    @classmethod
    def load(cls, ref: str, registry: str) -> ServedModel:
        from pipelines.predict import load_registered, preprocessor_of
        from pipelines.registry.cli import parse_ref
        from pipelines.registry.local import open_registry

        name, spec = parse_ref(ref)
        version = open_registry(registry).resolve(name, spec)
        net, info, _ = load_registered(f"{name}:{version}", registry)  # a fixed version: no race with a promotion
        return cls(name, version, net, info, preprocessor_of(info))

    def predict_requests(self, requests: list[list[Any]]) -> list[list[dict[str, Any]] | BadRequest]:
        """Predictions for each request's instances: all the batch's instances through one preprocessing call
        and one forward pass (a table's preprocessing costs per call, not per row).

        When that fails, each request is taken alone, so a bad one gets its own message (naming its field
        and row) in its place and never fails the others."""
        sizes = [len(r) for r in requests]
        try:
            found = self.predict_instances([i for r in requests for i in r])
        except PipelineInputError as err:
            if len(requests) == 1:
                return [BadRequest(str(err))]
            return [self._alone(r) for r in requests]
        starts = np.cumsum([0, *sizes])
        return [found[a:b] for a, b in zip(starts[:-1], starts[1:], strict=True)]

    def _alone(self, instances: list[Any]) -> list[dict[str, Any]] | BadRequest:
        try:
            return self.predict_instances(instances)
        except PipelineInputError as err:
            return BadRequest(str(err))

    def predict_instances(self, instances: list[Any]) -> list[dict[str, Any]]:
        """One prediction per instance; PipelineInputError (predict's message) for a bad one."""
        from pipelines.predict import next_words, score

        def complete(tokens: list[str], words: int) -> list[str]:
            return next_words(self.net, self.prep, tokens, words)

        prepared = inst.prepare(self.info.data_meta.modality, self.prep, instances, complete)
        found = dict(prepared.done)
        for unit in prepared.units:
            score(self.net, self.info, self.prep, unit.x, unit.frame, TOP_K)
            found.update(inst.predictions(self.info.task, unit))
        return [found[i] for i in range(prepared.n)]


def resolve_version(ref: str, registry: str) -> int:
    """The version NAME[:VERSION|:ALIAS] names now (cheap: the alias file, no checkpoint read)."""
    from pipelines.registry.cli import parse_ref
    from pipelines.registry.local import open_registry

    name, spec = parse_ref(ref)
    return open_registry(registry).resolve(name, spec)
