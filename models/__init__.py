"""Model families (their config, builder and network), the catalogue that builds them by name, and the LightningModule.

Importing this package registers the built-in families without importing torch.
"""

# fnn first: the order of registration is the order of the config's candidate union (and of its error messages).
from models import fnn  # noqa: I001, F401  (registers the families)
from models import cnn, rnn  # noqa: F401
from models.catalogue import create_model, families_for, list_models, supported_tasks

__all__ = ["create_model", "families_for", "list_models", "supported_tasks"]
