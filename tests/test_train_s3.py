"""Checkpoints on S3 (what multi-node training needs): the workers keep each candidate's best epochs and their
state on s3:// through pyarrow.fs, the driver collects them from there, and the run is removed afterwards."""

import pytest
from s3_server import moto_s3, s3_env  # noqa: F401  (fixtures)

from tests.conftest import ROOT

pytestmark = pytest.mark.slow


def test_a_train_stage_keeps_its_checkpoints_on_s3(in_tmp, s3_env, monkeypatch):  # noqa: F811
    import pyarrow.fs

    from pipelines.config import ComputeParams, PipelineParams
    from pipelines.paths import DatasetPaths
    from pipelines.stages.ingest import ingest
    from pipelines.stages.prepare import prepare
    from pipelines.stages.train import train
    from pipelines.training import cluster

    monkeypatch.setenv("PYTHONPATH", str(ROOT))  # Ray's workers import this checkout (and see the S3 environment)
    params = PipelineParams().datasets["tabular"].model_copy(deep=True)
    params.train.epochs = 2
    ingest("tabular", params)
    prepare("tabular", params)
    storage = s3_env.rsplit("/", 1)[0] + "/ray"
    cluster.ensure_ray()
    try:
        summary = train("tabular", params, ComputeParams(num_workers=1, storage_path=storage))
    finally:
        cluster.shutdown_ray()
    assert {c["status"] for c in summary["candidates"].values()} == {"finished"}
    for name in params.train.candidates:
        assert DatasetPaths("tabular").candidate_checkpoint(name).exists()
    fs, root = pyarrow.fs.FileSystem.from_uri(storage)
    left = fs.get_file_info(pyarrow.fs.FileSelector(root, allow_not_found=True, recursive=True))
    assert not [i.path for i in left if i.type == pyarrow.fs.FileType.File]  # removed once exported
