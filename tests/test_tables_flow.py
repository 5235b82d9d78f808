"""A user's messy table through the real flow (Prefect -> DVC stages -> Ray Train -> registry), with no editing:
the categorical signal is learned, the profile artifact is on the run, and predict on the raw rows (strings,
blanks, an unseen category) reproduces the recorded test metrics."""

import json

import numpy as np
import pandas as pd
import pytest
import yaml

from pipelines.config import PipelineParams
from pipelines.modalities.common import shuffled_split
from pipelines.paths import DatasetPaths
from tests.conftest import copy_project, small_params
from tests.test_tables import messy_table

pytestmark = pytest.mark.slow


def test_a_messy_table_trains_profiles_and_predicts_through_the_flow(tmp_path, prefect_api):
    from prefect.artifacts import Artifact

    from pipelines.orchestration.flow import training_pipeline
    from pipelines.predict import predict_file

    frame = messy_table()
    csv = tmp_path / "messy.csv"
    frame.to_csv(csv, index=False)
    params = small_params(("tabular",), epochs=15)
    ds = params["datasets"].pop("tabular")
    ds["ingest"] = {"source": str(csv), "label": "label"}  # everything else inferred, gaps filled by default
    ds["train"]["candidates"] = {"fnn": {"family": "fnn", "hidden": [32, 16], "lr": 0.01}}
    ds["register"] = {"model_name": "messy-fnn"}
    params["datasets"] = {"messy": ds}
    project = copy_project(tmp_path / "project", params)
    training_pipeline(workdir=str(project))
    profile = Artifact.get("messy-profile")
    assert profile is not None and profile.type == "table"
    data = json.loads(profile.data) if isinstance(profile.data, str) else profile.data
    types = {row["column"]: row["type"] for row in data}
    assert types == {
        "name": "identifier",
        "color": "category",
        "member": "binary",
        "size": "number",
        "city": "category",
        "signup": "date",
        "comment": "text",
        "label": "binary",
    }

    where = DatasetPaths("messy")
    report = yaml.safe_load((project / where.metrics_file).read_text())
    test_accuracy = report["candidates"]["fnn"]["test/accuracy"]
    majority = float(frame["label"].value_counts(normalize=True).max())
    assert test_accuracy > majority + 0.2, (test_accuracy, majority)

    # The raw test rows, as the user has them: the rows with a label, split as prepare splits them.
    labelled = frame[frame["label"].notna()].reset_index(drop=True)
    prepare = PipelineParams.model_validate(params).dataset("messy").prepare
    rows = labelled.iloc[shuffled_split(len(labelled), prepare)["test"]]
    rows.to_csv(tmp_path / "rows.csv", index=False)
    registry = str(project / "data/registry")
    out = predict_file("messy-fnn:1", str(tmp_path / "rows.csv"), tmp_path / "out.csv", registry)
    assert np.mean(out["prediction"].astype(str).to_numpy() == rows["label"].to_numpy()) == pytest.approx(
        test_accuracy, abs=1e-6
    )

    unseen = rows.copy()
    unseen["color"] = "purple"  # never seen in training: the unknown level, not an error
    unseen.loc[unseen.index[0], "size"] = np.nan
    unseen.to_csv(tmp_path / "unseen.csv", index=False)
    out = predict_file("messy-fnn:1", str(tmp_path / "unseen.csv"), tmp_path / "out2.csv", registry)
    assert len(out) == len(rows) and set(out["prediction"]) <= {"bad", "good"}
    assert pd.read_csv(tmp_path / "out2.csv")["p_good"].between(0, 1).all()
