"""Keep Ray's console chatter out of the user's way (Ray's log files still hold it all).

`quiet()` runs as Ray's worker_process_setup_hook in every Ray worker process,
Ray Train's controller and helper actors included, and in a stage that trains in Ray Train's
local mode (the worker in its own process).
"""

from __future__ import annotations

import logging
import warnings

from pipelines.training.ray_private import PLACEMENT_GROUP_CLEANER_LOGGER
from pipelines.training.ray_private import QUIET_LOGGERS as RAY_TRAIN_PRIVATE_LOGGERS

NOISY_MESSAGES = (
    # Without the dashboard (ray[default]) the State API is absent; harmless locally.
    "Failed to query Ray Train Controller actor state",
    "Reporting training result",
    "Checkpoint successfully created",
)
QUIET_LOGGERS = (
    *RAY_TRAIN_PRIVATE_LOGGERS,
    "ray.train.v2.api.config",  # local mode: "Running in local mode ..." (the stage says so itself)
    "lightning.pytorch.utilities.rank_zero",  # "GPU available: False", tips
)


class _DropNoise(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        return not any(noise in message for noise in NOISY_MESSAGES)


def quiet() -> None:
    for name in QUIET_LOGGERS:
        logging.getLogger(name).setLevel(logging.WARNING)
    drop = _DropNoise()
    for name in ("ray.train", PLACEMENT_GROUP_CLEANER_LOGGER):
        logging.getLogger(name).addFilter(drop)
    for logger in (logging.getLogger(), logging.getLogger("ray"), logging.getLogger("ray.train")):
        for handler in logger.handlers:
            handler.addFilter(drop)
    warnings.filterwarnings("ignore", message=".*LeafSpec.*")
    warnings.filterwarnings("ignore", category=DeprecationWarning)
