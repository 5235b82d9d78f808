"""Each stage validates and receives only the params it reads (pipelines/stages/cli.py READS)."""

from __future__ import annotations

import copy

import pytest
import yaml

from pipelines.config import PipelineParams
from pipelines.config.sections import NotRead
from pipelines.errors import PipelineInputError
from pipelines.stages.cli import pipeline_and_dataset


@pytest.fixture
def params_file(tmp_path, monkeypatch):
    """Write a params.yaml (the defaults, edited by `edit`) in a fresh working directory."""
    monkeypatch.chdir(tmp_path)

    def write(edit=lambda d: None) -> None:
        data = copy.deepcopy(PipelineParams().model_dump(mode="json"))
        edit(data)
        (tmp_path / "params.yaml").write_text(yaml.safe_dump(data))

    return write


def test_a_typo_in_another_dataset_or_an_unread_section_does_not_stop_a_stage(params_file):
    def typos(d):
        d["datasets"]["digits"]["train"]["epochz"] = 3
        d["datasets"]["tabular"]["train"]["candidates"]["fnn-relu"]["lr"] = -1  # train does not run in ingest
        d["evaluate"]["batch_sise"] = 3

    params_file(typos)
    params, name = pipeline_and_dataset("ingest", ["tabular"])
    assert name == "tabular" and params.datasets["tabular"].ingest.source == "sklearn:breast_cancer"
    assert params.datasets["tabular"].modality == "table"


def test_a_typo_in_what_the_stage_reads_is_refused_naming_the_key(params_file):
    params_file(lambda d: d["datasets"]["tabular"]["ingest"].update(lable="y"))
    with pytest.raises(PipelineInputError, match=r"params.yaml: datasets.tabular.ingest.lable: unknown key"):
        pipeline_and_dataset("prepare", ["tabular"])
    params_file(lambda d: d["train"].update(num_workers=0))
    with pytest.raises(PipelineInputError, match=r"params.yaml: train.num_workers: Input should be greater"):
        pipeline_and_dataset("train", ["tabular"])
    with pytest.raises(PipelineInputError, match=r"datasets.nope: no such dataset; have: digits, series, tabular"):
        pipeline_and_dataset("train", ["nope"])


def test_checks_across_sections_still_run_when_the_stage_reads_both(params_file):
    params_file(lambda d: d["datasets"]["tabular"]["train"]["candidates"].update(r={"family": "lstm"}))
    with pytest.raises(PipelineInputError, match=r"datasets.tabular.train.candidates.r.family: lstm cannot learn"):
        pipeline_and_dataset("train", ["tabular"])
    pipeline_and_dataset("ingest", ["tabular"])  # ingest does not read the candidates

    # num_workers: auto may resolve to 1 here; the check compares an explicit number of workers.
    params_file(lambda d: (d["datasets"]["digits"]["train"].update(batch_size=1), d["train"].update(num_workers=2)))
    with pytest.raises(PipelineInputError, match=r"datasets.digits.train.batch_size: 1 is the global batch"):
        pipeline_and_dataset("train", ["digits"])


def test_a_section_the_stage_does_not_declare_cannot_be_read(params_file):
    params_file()
    params, _ = pipeline_and_dataset("evaluate", ["digits"])
    assert params.evaluate.batch_size == 1024
    assert isinstance(params.train, NotRead)
    with pytest.raises(RuntimeError, match=r"stage 'evaluate' read datasets.digits.train.epochs, which it does not"):
        params.datasets["digits"].train.epochs  # noqa: B018


def test_the_register_stage_gets_its_whole_dataset_and_the_shared_sections(params_file):
    params_file()
    params, _ = pipeline_and_dataset("register", ["text"])
    full = PipelineParams()
    assert params.datasets["text"] == full.datasets["text"]
    assert params.train == full.train and params.register == full.register
