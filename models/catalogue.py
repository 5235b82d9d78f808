"""The catalogue of architectures (not the registry of trained models).

Families register themselves with `@register_family("name")`; `create_model`
builds one by name from plain keyword arguments, in the style of timm.
"""

from __future__ import annotations

from collections.abc import Callable

from torch import nn

_FAMILIES: dict[str, Callable[..., nn.Module]] = {}
_TASKS: dict[str, tuple[str, ...]] = {}


def register_family(
    name: str, tasks: tuple[str, ...]
) -> Callable[[Callable[..., nn.Module]], Callable[..., nn.Module]]:
    def decorator(builder: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        if name in _FAMILIES:
            raise ValueError(f"model family {name!r} is already registered")
        _FAMILIES[name] = builder
        _TASKS[name] = tasks
        return builder

    return decorator


def _builtin_families() -> None:
    """Import the shipped families (each registers itself): `import models` alone imports no torch."""
    from models import cnn, fnn, rnn  # noqa: F401


def list_models() -> list[str]:
    _builtin_families()
    return sorted(_FAMILIES)


def supported_tasks(name: str) -> tuple[str, ...]:
    _builtin_families()
    return _TASKS[name]


def create_model(name: str, **kwargs) -> nn.Module:
    _builtin_families()
    if name not in _FAMILIES:
        raise KeyError(f"unknown model family {name!r}; known: {', '.join(list_models())}")
    return _FAMILIES[name](**kwargs)
