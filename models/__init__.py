"""Model families (nn.Modules), the catalogue that builds them by name, the tasks and the LightningModule.

Importing the package imports nothing heavy: models.task_kinds (plain data) must stay usable
without torch. The families register themselves the first time the catalogue is used.
"""

from __future__ import annotations

from typing import Any

__all__ = ["create_model", "list_models", "supported_tasks"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        from models import catalogue

        return getattr(catalogue, name)
    raise AttributeError(f"module 'models' has no attribute {name!r}")
