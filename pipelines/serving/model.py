"""One registered model loaded for serving, and the batch step the deployment runs.

Loading is predict's: the registry resolves NAME[:VERSION|:ALIAS], the checkpoint is checked against the
card's sha256 and loaded weights-only, and the preprocessing object comes from the checkpoint.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

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
        """Predictions for each request's instances, in one forward pass for all the requests that can share one.

        A bad request gets its BadRequest in its place and never fails the others of the batch."""
        from pipelines.predict import next_words, score

        def complete(tokens: list[str], words: int) -> list[str]:
            return next_words(self.net, self.prep, tokens, words)

        results: list[Any] = []
        ready: list[tuple[int, inst.Prepared]] = []
        for r, instances in enumerate(requests):
            try:
                ready.append((r, inst.prepare(self.info.data_meta.modality, self.prep, instances, complete)))
                results.append(None)
            except PipelineInputError as err:
                results.append(BadRequest(str(err)))
        # Units whose input rows are their output rows are scored together; others (multi-step forecasts) alone.
        shared = [(r, u) for r, p in ready for u in p.units if len(u.x) == len(u.frame)]
        alone = [(r, u) for r, p in ready for u in p.units if len(u.x) != len(u.frame)]
        if shared:
            x = np.concatenate([u.x for _, u in shared])
            frame = pd.concat([u.frame for _, u in shared], ignore_index=True)
            score(self.net, self.info, self.prep, x, frame, TOP_K)
            start = 0
            for _, u in shared:
                u.frame = frame.iloc[start : start + len(u.x)].reset_index(drop=True)
                start += len(u.x)
        for _, u in alone:
            score(self.net, self.info, self.prep, u.x, u.frame, TOP_K)
        for r, prepared in ready:
            found = dict(prepared.done)
            for unit in prepared.units:
                found.update(inst.predictions(self.info.task, unit))
            results[r] = [found[i] for i in range(prepared.n)]
        return results


def resolve_version(ref: str, registry: str) -> int:
    """The version NAME[:VERSION|:ALIAS] names now (cheap: the alias file, no checkpoint read)."""
    from pipelines.registry.cli import parse_ref
    from pipelines.registry.local import open_registry

    name, spec = parse_ref(ref)
    return open_registry(registry).resolve(name, spec)
