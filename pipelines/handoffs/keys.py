"""Schema versions, metric keys (`split/metric`) and old spellings, and the base of every hand-off model."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict

# 1: the files written before these models existed (no schema_version);
# 2: metrics.json and the card kept metrics nested per split and `best.test_<metric>`;
# 3: `split/metric` keys everywhere;
# 4: baselines per name with `split/metric` keys ({"unigram": {"test/perplexity": ...}}), not one float each.
SCHEMA_VERSION = 4
SPLITS = ("train", "val", "test")


def metric_key(split: str, metric: str) -> str:
    return f"{split}/{metric}"


def metric_value(metrics: dict[str, Any], key: str) -> Any:
    """A metric by its `split/metric` key from metrics of any version; KeyError names the key."""
    try:
        return flat_metrics(metrics)[key]
    except (KeyError, TypeError, AttributeError):
        raise KeyError(f"no metric {key!r} (expected a {key!r} key in {sorted(metrics or {})})") from None


def flat_key(key: str) -> str:
    """An old spelling of a metric key (`val_loss`, `val.loss`, `test_accuracy`) -> `val/loss`; others unchanged."""
    for split in SPLITS:
        for sep in ("_", "."):
            if key.startswith(split + sep):
                return f"{split}/{key[len(split) + 1 :]}"
    return key


def flat_metrics(metrics: dict[str, Any]) -> dict[str, Any]:
    """Metrics of any version as flat `split/metric` keys: nested per split ({"test": {"accuracy": ...}})
    and old flat spellings (`val_loss`, `test_accuracy`) are rewritten; other keys (`candidate`) kept."""
    out: dict[str, Any] = {}
    for key, value in metrics.items():
        if key in SPLITS and isinstance(value, dict):
            out.update({metric_key(key, name): v for name, v in value.items()})
        else:
            out[flat_key(key)] = value
    return out


class _Part(BaseModel):
    # Readers ignore keys they do not know: a newer writer may add some.
    model_config = ConfigDict(extra="ignore")


class _Handoff(_Part):
    """A whole file (or checkpoint info): versioned."""

    schema_version: int = SCHEMA_VERSION


# -- the preprocessing state of each modality (plain data; see pipelines/modalities/) ---------
