"""Evaluate reads its splits in chunks and keeps of each only what the scorers and plots need (issue 20):

- a split read in chunks of one batch (8 rows) gives the report of a one-chunk read to the float (every metric,
  the baselines, the champion's score) and the same plot CSVs, for a table, a 12-step forecast and next-word
  prediction;
- next-word metrics from per-row numbers are torchmetrics' Perplexity and top-k accuracy, to the float, however
  the rows were chunked (the rows x vocabulary logits are never joined);
- chunks are cut across shards to exactly their size, and the table baselines fit on every training row under
  their cap and on a seeded sample of rows above it.
"""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch

from pipelines.config import DatasetParams, PipelineParams
from pipelines.paths import DatasetPaths

NAME = "d"
CASES = {  # modality, ingest, prepare, candidate
    "table": ("table", {"source": "sklearn:breast_cancer", "label": "target"}, {}, {"family": "fnn", "hidden": [8]}),
    "forecast": (
        "series",
        {"source": "sales.csv", "column": "sales", "time_column": "month"},
        {"window": 36, "season_length": 12, "horizon": 12, "transform": "log_relative"},
        {"family": "lstm", "hidden_size": 8},
    ),
    "next_word": (
        "text",
        {"source": "python:pydoc-topics"},
        {"max_tokens": 4000, "context_length": 6},
        {"family": "lstm", "hidden_size": 8, "embedding_dim": 8},
    ),
}


def evaluate_ready(modality: str, ingest: dict, prepare: dict, candidate: dict) -> PipelineParams:
    """ingest -> prepare -> one candidate trained a few steps, saved as train saves it (checkpoint, history,
    summary); the same network registered as the production champion."""
    from bench.small_models import train_small
    from models.checkpoint import save_checkpoint
    from pipelines.atomic import write_json
    from pipelines.registry.local import open_registry
    from pipelines.registry.model_line import signature_of
    from pipelines.stages.ingest import ingest as ingest_stage
    from pipelines.stages.prepare import load_split, read_meta
    from pipelines.stages.prepare import prepare as prepare_stage

    params = DatasetParams(
        modality=modality,
        ingest=ingest,
        prepare=prepare,
        train={"candidates": {"c": candidate}},
        register={"model_name": NAME},
    )
    ingest_stage(NAME, params)
    meta = prepare_stage(NAME, params)
    where = DatasetPaths(NAME)
    net, info = train_small(NAME, "c", params.train.candidates["c"], meta, *load_split(NAME, "train"), 20, seed=0)
    where.candidate_dir("c").mkdir(parents=True)
    save_checkpoint(where.candidate_checkpoint("c"), net.state_dict(), info)
    pd.DataFrame({"epoch": [0, 1], "train/loss": [1.0, 0.5], "val/loss": [1.1, 0.6]}).to_csv(
        where.candidate_history("c"), index=False
    )
    summary = {"family": candidate["family"], "epochs_run": 2, "best_epoch": 1, "seconds": 1.0}
    write_json(where.train_summary, {"dataset": NAME, "candidates": {"c": summary}, "data_fingerprint": "-"})
    card = {
        "dataset": NAME,
        "candidate": "c",
        "task": meta["task"],
        "metrics": {},
        "signature": signature_of(read_meta(NAME)),
    }
    registry = open_registry("data/registry")
    registry.set_alias(NAME, "production", registry.register(NAME, where.candidate_checkpoint("c"), card).version)
    return PipelineParams.model_validate({"datasets": {NAME: params.model_dump()}, "evaluate": {"batch_size": 8}})


@pytest.mark.parametrize("case", list(CASES))
def test_a_split_read_a_batch_at_a_time_gives_the_one_chunk_report(in_tmp, case):
    from pipelines.handoffs.splits import SplitChunks, split_rows
    from pipelines.stages.evaluate import champion_of, evaluate
    from tests.test_series_horizon import monthly

    monthly().to_csv(in_tmp / "sales.csv", index=False)
    params = evaluate_ready(*CASES[case])
    test = DatasetPaths(NAME).split_dir("test")
    assert SplitChunks.in_batches(test, 8, chunk_bytes=1).rows == 8 < split_rows(test)  # several chunks
    outputs = []
    for chunk_bytes in (1, 2**40):
        report = evaluate(NAME, params.evaluate, lambda t: champion_of(params, NAME, t), chunk_bytes=chunk_bytes)
        out = DatasetPaths(NAME).evaluate_dir
        csvs = {p.relative_to(out).as_posix(): p.read_text() for p in sorted(out.glob("*/*.csv"))}
        outputs.append((json.dumps(report, sort_keys=True), csvs))  # floats as their shortest exact repr
    assert outputs[0] == outputs[1]
    assert any(name.startswith(("predictions/", "confusion/")) for name in outputs[0][1]) or case == "next_word"
    # The champion is the candidate's own network, scored on the test split re-encoded chunk by chunk.
    champion = report["champion"]
    assert champion["comparable"], champion
    for key, value in report["best"].items():
        if key.startswith("test/"):
            assert champion[key] == pytest.approx(value, rel=1e-6, abs=1e-9), key


def test_next_word_numbers_from_rows_are_torchmetrics_to_the_float():
    import torchmetrics.functional as tmf
    from torchmetrics.text import Perplexity

    from pipelines.evaluation.metrics import next_word_rows, next_word_scores

    torch.manual_seed(0)
    for n, vocab in ((1000, 300), (77, 4), (513, 1200)):
        logits, target = torch.randn(n, vocab) * 3, torch.randint(vocab, (n,))
        whole, kw = logits.double(), {"task": "multiclass", "num_classes": vocab, "average": "micro"}
        expected = {
            "perplexity": float(Perplexity()(whole.unsqueeze(1), target.view(-1, 1))),
            "accuracy": float(tmf.accuracy(whole, target, top_k=1, **kw)),
            "top5_accuracy": float(tmf.accuracy(whole, target, top_k=min(5, vocab), **kw)),
        }
        rows = torch.cat([next_word_rows(logits[i : i + 37], target[i : i + 37]) for i in range(0, n, 37)])
        assert next_word_scores(rows) == expected


def test_chunks_are_cut_across_shards_and_the_baselines_fit_on_a_bounded_sample(tmp_path):
    from pipelines.evaluation.baselines import training_rows
    from pipelines.handoffs.splits import SplitChunks, write_split

    x = np.arange(3000, dtype=np.float32).reshape(1000, 3)
    y = np.arange(1000)
    write_split(tmp_path / "s", x, y, shard_bytes=70 * 20)  # 70 rows a shard
    split = SplitChunks(tmp_path / "s", rows=64)
    assert [len(c[1]) for c in split] == [64] * 15 + [40]

    whole_x, whole_y = training_rows(split, seed=0, cap=1000)  # under the cap: every row, in order
    np.testing.assert_array_equal(whole_x, x)
    np.testing.assert_array_equal(whole_y, y)
    sample_x, sample_y = training_rows(split, seed=0, cap=100)
    assert len(sample_y) == 100 and np.all(np.diff(sample_y) > 0)  # distinct rows, in the split's order
    np.testing.assert_array_equal(sample_x, x[sample_y])  # whole rows, inputs beside their targets
    assert sample_y.min() < 100 and sample_y.max() > 900  # drawn from the whole split, not its head
    np.testing.assert_array_equal(training_rows(split, seed=0, cap=100)[1], sample_y)  # seeded
    assert not np.array_equal(training_rows(split, seed=1, cap=100)[1], sample_y)
