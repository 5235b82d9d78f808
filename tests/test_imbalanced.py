"""Imbalanced labels: the profile warns, class weights come from the training split and weigh BCE/CCE, and the
dataset's primary metric (checked against its task) picks the registered candidate and says so in the card.

The fast tests check the config, the weights and the losses; the slow one trains two real candidates (one
weighted, one not) on a generated churn table and registers through the real evaluate and register stages.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from bench.imbalanced import CANDIDATES, dataset_params, generated_table
from pipelines.errors import PipelineInputError

# -- the config --------------------------------------------------------------------------------------------------


def params_with(**dataset: dict) -> dict:
    """The default tabular dataset as `d`, with some sections replaced or extended."""
    from pipelines.config import PipelineParams

    base = PipelineParams().datasets["tabular"].model_dump(mode="json")
    for section, values in dataset.items():
        base[section] = {**base[section], **values} if isinstance(base.get(section), dict) else values
    base["register"] = {"model_name": "d-model"}
    return {"datasets": {"d": base}}


def refusal(data: dict) -> str:
    from pipelines.config import validate_params

    with pytest.raises(PipelineInputError) as err:
        validate_params(data, "params.yaml")
    return str(err.value)


def test_the_primary_metric_must_be_one_the_task_reports_naming_the_key_and_the_choices():
    from pipelines.config import validate_params

    # A table whose task is not known until its label is read: any classification or regression metric passes.
    for metric in ("auto", "f1_macro", "balanced_accuracy", "r2"):
        assert validate_params(params_with(evaluate={"primary_metric": metric})).datasets["d"].evaluate
    message = refusal(params_with(evaluate={"primary_metric": "f1"}))
    assert message.startswith("params.yaml: datasets.d.evaluate.primary_metric: 'f1' is not a metric a binary or ")
    assert "use auto or one of: accuracy, balanced_accuracy, precision_macro" in message and "rmse" in message
    # A table set to binary: only the metrics of classes.
    message = refusal(params_with(ingest={"task": "binary"}, evaluate={"primary_metric": "rmse"}))
    assert "datasets.d.evaluate.primary_metric: 'rmse' is not a metric a binary task reports" in message
    assert "rmse" not in message.partition("one of:")[2]
    # A series forecasts: f1 means nothing there.
    series = params_with()
    series["datasets"]["d"] = {
        "modality": "series",
        "ingest": {"source": "statsmodels:sunspots"},
        "train": {"candidates": {"gru": {"family": "gru"}}},
        "evaluate": {"primary_metric": "f1_macro"},
        "register": {"model_name": "d-model"},
    }
    message = refusal(series)
    assert "datasets.d.evaluate.primary_metric: 'f1_macro' is not a metric a forecast task reports" in message
    assert "mase" in message


def test_class_weights_are_refused_where_there_are_no_classes_naming_the_key():
    from pipelines.config import validate_params

    assert validate_params(params_with(train={"class_weights": "balanced"})).datasets["d"].train.class_weights
    message = refusal(params_with(ingest={"task": "regression"}, train={"class_weights": "balanced"}))
    assert "params.yaml: datasets.d.train.class_weights: a regression task has no classes to weigh; use none" in message
    cands = {"c": {"family": "fnn", "class_weights": "balanced"}}
    message = refusal(params_with(ingest={"task": "regression"}, train={"candidates": cands}))
    assert "datasets.d.train.candidates.c.class_weights: a regression task has no classes to weigh" in message
    assert "datasets.d.train.class_weights: Input should be 'none' or 'balanced'" in refusal(
        params_with(train={"class_weights": "x"})
    )


def test_the_evaluate_stage_reads_its_datasets_primary_metric_and_checks_it_against_the_real_task():
    from pipelines.config.sections import validate_sections
    from pipelines.config.task_choices import DatasetEvaluateParams
    from pipelines.stages.cli import READS
    from pipelines.stages.evaluate import primary_metric

    data = params_with(evaluate={"primary_metric": "f1_macro"})
    params = validate_sections(data, "d", READS["evaluate"], "params.yaml", "evaluate")
    assert params.datasets["d"].evaluate.primary_metric == "f1_macro"
    # The table's label turned out to be a number: f1 cannot judge a regression, said before anything is scored.
    with pytest.raises(PipelineInputError, match=r"datasets\.d\.evaluate\.primary_metric: 'f1_macro' is not a metric"):
        primary_metric("d", "regression", DatasetEvaluateParams(primary_metric="f1_macro"))
    assert primary_metric("d", "binary", DatasetEvaluateParams()) == (
        "accuracy",
        "max",
        "the binary task's default (datasets.d.evaluate.primary_metric: auto)",
    )
    assert primary_metric("d", "regression", DatasetEvaluateParams(primary_metric="r2"))[:2] == ("r2", "max")


# -- the weights and the losses ------------------------------------------------------------------------------------


def test_balanced_weights_are_scikit_learns_and_survive_a_class_missing_from_training():
    from sklearn.utils.class_weight import compute_class_weight

    from models.class_weights import balanced_weights, weights_for

    y = np.array([0] * 930 + [1] * 70)
    assert balanced_weights([930, 70]) == pytest.approx(compute_class_weight("balanced", classes=np.arange(2), y=y))
    assert weights_for("none", [930, 70]) is None
    assert balanced_weights([10, 0, 5]) == pytest.approx([15 / 30, 15 / 3, 15 / 15])  # counted as one row: finite


def test_weighted_bce_is_weighted_cce_on_the_same_logit_and_both_weigh_the_rare_class_up():
    from models.tasks import loss_target, make_loss

    g = torch.Generator().manual_seed(0)
    z, y = torch.randn(64, 1, generator=g), (torch.rand(64, generator=g) < 0.1).long()
    weights = [0.55, 5.0]
    bce = make_loss("bce", weights)(z, loss_target("bce", y))
    # One logit z is the two-class logits (0, z): the same probabilities, so the same weighted mean.
    cce = make_loss("cce", weights)(torch.cat([torch.zeros_like(z), z], dim=1), loss_target("cce", y))
    assert bce.item() == pytest.approx(cce.item(), rel=1e-6)
    per_row = torch.nn.functional.binary_cross_entropy_with_logits(z.view(-1), y.float(), reduction="none")
    w = torch.tensor(weights)[y]
    assert bce.item() == pytest.approx(float((w * per_row).sum() / w.sum()), rel=1e-6)
    assert make_loss("bce")(z, loss_target("bce", y)).item() == pytest.approx(per_row.mean().item(), rel=1e-6)
    with pytest.raises(ValueError, match="class weights need a classification loss"):
        make_loss("mse", weights)


def test_a_candidate_takes_the_datasets_class_weights_unless_it_sets_its_own():
    from pipelines.config import ComputeParams, DatasetParams
    from pipelines.stages.train_jobs import make_job, weights_record

    cands = {"inherits": {"family": "fnn"}, "own": {"family": "fnn", "class_weights": "none"}}
    raw = dataset_params("t.csv", "y", 1, cands) | {"train": {"class_weights": "balanced", "candidates": cands}}
    params = DatasetParams.model_validate(raw)
    meta = {"task": "binary", "classes": ["no", "yes"], "class_counts_train": [90, 10], "input_shape": [4]}
    jobs = {n: make_job("d", n, c, params, ComputeParams(), meta) for n, c in params.train.candidates.items()}
    assert jobs["inherits"].class_weights == pytest.approx([100 / 180, 100 / 20])
    assert jobs["own"].class_weights is None and jobs["own"].class_weighting == "none"
    # Each job's weights are part of its fingerprint: a weighted run never resumes an unweighted one's checkpoints.
    plain = DatasetParams.model_validate(dataset_params("t.csv", "y", 1, cands))
    unweighted = make_job("d", "inherits", plain.train.candidates["inherits"], plain, ComputeParams(), meta)
    assert unweighted.class_weights is None
    assert jobs["inherits"].fingerprint("data") != unweighted.fingerprint("data")
    assert weights_record("d", jobs["inherits"], meta) == {
        "setting": "balanced",
        "train_counts": {"no": 90, "yes": 10},
        "weights": {"no": pytest.approx(100 / 180), "yes": pytest.approx(5.0)},
    }
    # The label turned out to be a number (ingest.task: auto): refused before anything trains, naming the key.
    with pytest.raises(PipelineInputError, match=r"^datasets\.d\.train\.class_weights: a regression task has no"):
        make_job(
            "d", "inherits", params.train.candidates["inherits"], params, ComputeParams(), meta | {"task": "regression"}
        )


# -- the profile -----------------------------------------------------------------------------------------------------


def test_the_profile_reports_the_label_distribution_and_warns_when_a_class_is_rare(in_tmp, capsys):
    from pipelines.config import DatasetParams
    from pipelines.paths import DatasetPaths
    from pipelines.stages.ingest import ingest

    generated_table(1000, seed=0, rare=0.07).to_csv("rare.csv", index=False)
    generated_table(1000, seed=0, rare=0.3).to_csv("even.csv", index=False)
    for name, source in (("rare", "rare.csv"), ("even", "even.csv")):
        ingest(name, DatasetParams.model_validate(dataset_params(source, "churned", 1, CANDIDATES)))
    rare = json.loads(DatasetPaths("rare").raw_profile.read_text())
    shares = {row["class"]: row["share"] for row in rare["label_distribution"]}
    assert list(shares) == ["no", "yes"] and shares["yes"] < 0.1 and sum(shares.values()) == pytest.approx(1)
    assert len(rare["warnings"]) == 1 and "rarest class 'yes'" in rare["warnings"][0]
    assert "train.class_weights: balanced" in rare["warnings"][0]
    even = json.loads(DatasetPaths("even").raw_profile.read_text())
    assert even["warnings"] == [] and len(even["label_distribution"]) == 2
    out = capsys.readouterr().out
    assert "ingest: label 'churned': no " in out and out.count("ingest: warning: label 'churned' is imbalanced") == 1


# -- the real stages ---------------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_class_weights_and_the_primary_metric_change_the_registered_candidate(in_tmp):
    """Two FNNs alike but for class_weights, trained once on a 7 %-positive table; registered twice."""
    from pipelines.config import PipelineParams
    from pipelines.paths import DatasetPaths
    from pipelines.registry.card import render_text
    from pipelines.registry.local import LocalModelRegistry
    from pipelines.stages import evaluate, register, train
    from pipelines.stages.ingest import ingest
    from pipelines.stages.prepare import load_split, prepare

    generated_table(4000, seed=0).to_csv("churn.csv", index=False)

    def params(primary: str) -> PipelineParams:
        ds = dataset_params("churn.csv", "churned", 30, CANDIDATES, primary)
        return PipelineParams.model_validate(
            {"datasets": {"churn": ds}, "train": {"storage_path": str(in_tmp / "ray")}}
        )

    first = params("auto")
    ingest("churn", first.datasets["churn"])
    prepare("churn", first.datasets["churn"])
    summary = train.train("churn", first.datasets["churn"], first.train)

    # The weights: scikit-learn's balanced rule on the training split's rows, only for the candidate that asked.
    counts = np.bincount(load_split("churn", "train")[1], minlength=2)
    expected = {"no": counts.sum() / (2 * counts[0]), "yes": counts.sum() / (2 * counts[1])}
    weighted = summary["candidates"]["balanced"]["class_weights"]
    assert weighted["setting"] == "balanced" and weighted["weights"] == pytest.approx(expected)
    assert weighted["train_counts"] == {"no": counts[0], "yes": counts[1]}
    assert summary["candidates"]["plain"]["class_weights"] == {
        "setting": "none",
        "train_counts": weighted["train_counts"],
    }

    def registered(p: PipelineParams) -> tuple[dict, dict]:
        report = evaluate.evaluate("churn", p.evaluate, choice=p.datasets["churn"].evaluate)
        version = register.register(p, "churn")
        return report, version.card

    # Accuracy, the task's default, rewards saying "no": the unweighted candidate is registered.
    report, card = registered(first)
    assert report["primary_metric"] == "accuracy" and card["candidate"] == "plain"
    assert card["selection"]["metric"] == "val/accuracy" and "task's default" in card["selection"]["set_by"]
    assert card["class_weights"]["setting"] == "none"
    # The same trained candidates judged by balanced accuracy: the weighted one wins and becomes v2.
    second = params("balanced_accuracy")
    report, card = registered(second)
    values = report["selection"]["values"]
    assert values["balanced"] > values["plain"], values
    assert card["candidate"] == "balanced" and card["version"] == 2
    assert card["primary_metric"] == "balanced_accuracy" and card["mode"] == "max"
    assert card["selection"] == {
        "metric": "val/balanced_accuracy",
        "mode": "max",
        "set_by": "datasets.churn.evaluate.primary_metric",
        "values": values,
    }
    assert card["class_weights"]["weights"] == pytest.approx(expected)
    assert card["params"]["dataset"]["evaluate"] == {"primary_metric": "balanced_accuracy"}
    # Beside the baselines with the same weighting: each classifier once unweighted, once balanced.
    assert {"logistic_regression", "logistic_regression_balanced", "hist_gradient_boosting_balanced"} <= set(
        card["baselines"]
    )
    # Promotion is decided on the metric that chose it, both versions scored on the same test split.
    decision = json.loads(DatasetPaths("churn").registered_file.read_text())["promotion"]
    assert "test balanced_accuracy" in decision and "on the same test split" in decision, decision
    registry = LocalModelRegistry(in_tmp / "data/registry")
    shown = render_text(registry.get_card("churn", 2), registry.aliases("churn"), "data/registry")
    assert "chosen by val/balanced_accuracy (higher is better), set by datasets.churn.evaluate.primary_metric" in shown
    assert "weights   balanced: no 0.5" in shown and "(training rows: no " in shown
    assert "  hist_gradient_boosting_balanced  accuracy=" in shown  # a long name keeps its column
