"""Moved: kept only so that code written against the old single module still imports.

cluster (start/join/stop Ray), fit (the driver's fit of a stage's candidates), search (Tune + ASHA),
worker (what each Ray Train worker runs). New code imports those modules.
"""

from pipelines.training.cluster import LOCAL_RAY_ENV, RAY_ENV, ensure_ray, shutdown_ray  # noqa: F401
from pipelines.training.fit import FitOutcome, Scaling, TrainJob, fit, fit_candidates, remove_run  # noqa: F401
from pipelines.training.search import SearchOutcome, SearchSpec, TrialRecord, search  # noqa: F401
