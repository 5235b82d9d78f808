"""The catalogue of architectures (not the registry of trained models).

A family registers itself with `@register_family(name, candidate=..., modalities=..., tasks=...)` on
its builder: the builder (keyword arguments in, an nn.Module out), the pydantic candidate class that
configures it (pipelines.config builds its candidate union from these), the data modalities it can
learn from and the tasks it can do. `create_model` builds one by name, in the style of timm.

Registering must not import torch: pipelines.config imports every family to build its schema, and a
bad param must be rejected before any framework is loaded. So the built-in families import their
networks (models/networks.py) inside the builder.

Code that caches something derived from the catalogue (the config schema) subscribes with
`on_change`, so a family registered later (a plugin, a test) is seen everywhere.

Adding a family is one file (see tests/test_family_plugin.py for a complete one):

    class LinearCandidate(CandidateBase):           # its knobs in params.yaml, validated by pydantic
        family: Literal["linear"]
        bias: bool = True
        def architecture(self, meta): return {"bias": self.bias}

    @register_family("linear", candidate=LinearCandidate, modalities=("table",), tasks=("binary",))
    def build_linear(*, input_shape, out_features, activation, dropout, bias) -> nn.Module: ...

and an import of that file in models/__init__.py (or anywhere before params are validated).
"""

from __future__ import annotations

import inspect
import typing
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from models.candidate import CandidateBase

if TYPE_CHECKING:
    from torch import nn

Builder = Callable[..., "nn.Module"]


@dataclass(frozen=True)
class Family:
    name: str
    builder: Builder
    candidate: type[CandidateBase]
    modalities: tuple[str, ...]
    tasks: tuple[str, ...]


_FAMILIES: dict[str, Family] = {}
_LISTENERS: list[Callable[[], None]] = []


def _tags(candidate: type[CandidateBase]) -> tuple[str, ...]:
    annotation = candidate.model_fields["family"].annotation
    return typing.get_args(annotation) if typing.get_origin(annotation) is typing.Literal else ()


def register_family(
    name: str, *, candidate: type[CandidateBase], modalities: tuple[str, ...], tasks: tuple[str, ...]
) -> Callable[[Builder], Builder]:
    """Register `builder` as family `name`, configured by `candidate` (whose `family` is a Literal holding name)."""

    def decorator(builder: Builder) -> Builder:
        if name in _FAMILIES:
            raise ValueError(f"model family {name!r} is already registered")
        kinds = {p.kind for p in inspect.signature(builder).parameters.values()}
        if kinds - {inspect.Parameter.KEYWORD_ONLY}:  # a catch-all would let a config key and its builder drift
            raise ValueError(f"builder of {name!r} must take keyword-only arguments (no *args, no **kwargs)")
        if name not in _tags(candidate):
            raise ValueError(f"{candidate.__name__}.family must be a Literal that includes {name!r}")
        _FAMILIES[name] = Family(name, builder, candidate, tuple(modalities), tuple(tasks))
        _changed()
        return builder

    return decorator


def unregister_family(name: str) -> None:
    """Remove a family (tests and plugin reloads); the config schema follows."""
    del _FAMILIES[name]
    _changed()


def on_change(listener: Callable[[], None]) -> None:
    """Call `listener()` after every (un)registration."""
    _LISTENERS.append(listener)


def _changed() -> None:
    for listener in _LISTENERS:
        listener()


def family(name: str) -> Family:
    if name not in _FAMILIES:
        raise KeyError(f"unknown model family {name!r}; known: {', '.join(list_models())}")
    return _FAMILIES[name]


def families() -> list[Family]:
    """Every family, in registration order."""
    return list(_FAMILIES.values())


def list_models() -> list[str]:
    return sorted(_FAMILIES)


def supported_tasks(name: str) -> tuple[str, ...]:
    return family(name).tasks


def families_for(modality: str) -> tuple[str, ...]:
    """The families that can learn from data of this modality."""
    return tuple(f.name for f in _FAMILIES.values() if modality in f.modalities)


def candidate_classes() -> list[type[CandidateBase]]:
    """Each family's candidate class once (lstm and gru share one), in registration order."""
    return list(dict.fromkeys(f.candidate for f in _FAMILIES.values()))


def create_model(name: str, **kwargs: Any) -> nn.Module:
    """Build family `name` from its keyword arguments (a model_spec; its own `family` key is allowed)."""
    fam = family(name)
    tag = kwargs.pop("family", name)
    if tag != name:
        raise ValueError(f"create_model({name!r}) got a spec of family {tag!r}")
    return fam.builder(**kwargs)
