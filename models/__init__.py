"""Model families (nn.Modules), the catalogue that builds them by name, and the LightningModule."""

from models import cnn, fnn, rnn  # noqa: F401  (registers the families)
from models.catalogue import create_model, list_models, supported_tasks

__all__ = ["create_model", "list_models", "supported_tasks"]
