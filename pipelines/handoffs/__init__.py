"""What the stages hand each other, typed: prepared meta, train summary, checkpoint info, evaluation report, card.

Every model carries `schema_version`. A file without one is today's first format: `upgrade_*`
turns it into the current shape on load, so an old registry entry or checkpoint still loads.

Metric keys have one spelling, `split/metric` (`val/loss`, `test/accuracy`), everywhere:
train summary, checkpoint info, history.csv columns, metrics.json (flat per candidate and in
`best`), the model card. `dvc metrics show` and the experiments table flatten the JSON with '.',
so they show e.g. `best.test/accuracy`. Older files spelled the same metric `val_loss`, `val.loss`,
nested per split ({"val": {"accuracy": ...}}) or `best.test_accuracy`; `flat_metrics` reads all of
those, and the models below upgrade on load (schema_version 3, 2 and 1 files still load). Baselines
are scored like candidates, `{name: {split/metric: value}}`; before version 4 each was one float
(`{"unigram_perplexity": 123.4}`), read as `{"unigram": {"test/perplexity": 123.4}}`.

Layout: keys.py (schema version, metric keys, old spellings), prepared.py (meta.json and the
preprocessing states), results.py (train summary, checkpoint info, evaluation report, model card).
"""

from pipelines.handoffs.keys import (
    SCHEMA_VERSION,
    SPLITS,
    flat_key,
    flat_metrics,
    metric_key,
    metric_value,
)
from pipelines.handoffs.prepared import (
    ImageState,
    PreparedMeta,
    SeriesState,
    TableState,
    TextState,
    legacy_preprocessing,
    upgrade_meta,
)
from pipelines.handoffs.results import (
    CandidateInfo,
    CandidateSummary,
    ClassWeights,
    EvaluationReport,
    ModelCard,
    Selection,
    TrainSummary,
    card_metrics,
    upgrade_baselines,
    upgrade_report,
)

__all__ = [
    "SCHEMA_VERSION",
    "SPLITS",
    "CandidateInfo",
    "CandidateSummary",
    "ClassWeights",
    "EvaluationReport",
    "ImageState",
    "ModelCard",
    "Selection",
    "PreparedMeta",
    "SeriesState",
    "TableState",
    "TextState",
    "TrainSummary",
    "card_metrics",
    "flat_key",
    "flat_metrics",
    "legacy_preprocessing",
    "metric_key",
    "metric_value",
    "upgrade_baselines",
    "upgrade_meta",
    "upgrade_report",
]
