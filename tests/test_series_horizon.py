"""Forecasting a horizon: a time column (frequency, refusals), H-step windows, metrics over the horizon and per step
beside naive, seasonal naive and exponential smoothing from the same origins, and a trained H = 12 model that beats
seasonal naive on a monthly series with trend and multiplicative seasonality (through the real stages)."""

import numpy as np
import pandas as pd
import pytest
import torch

from pipelines.config import DatasetParams, PipelineParams
from pipelines.errors import PipelineInputError
from pipelines.evaluation.forecast_baselines import exponential_smoothing
from pipelines.evaluation.scoring import inverse_of, score
from pipelines.modalities.series.windows import series_from_windows
from pipelines.paths import DatasetPaths
from pipelines.stages.ingest import ingest
from pipelines.stages.prepare import load_split, prepare

CANDIDATE = {"family": "lstm", "hidden_size": 32, "lr": 0.005, "dropout": 0.0}


def monthly(years: int = 20, seed: int = 0) -> pd.DataFrame:
    """Trend and multiplicative yearly seasonality (the swing grows with the level), 3% noise."""
    t = np.arange(12 * years)
    noise = 1 + np.random.default_rng(seed).normal(0, 0.03, len(t))
    values = (100 + t) * (1 + 0.25 * np.sin(2 * np.pi * t / 12)) * noise
    return pd.DataFrame({"month": pd.date_range("2000-01-01", periods=len(t), freq="MS"), "sales": values})


def series_params(ingest_params: dict, epochs: int = 60, **prepare_params) -> DatasetParams:
    return DatasetParams(
        modality="series",
        ingest=ingest_params,
        prepare={"window": 36, "season_length": 12, **prepare_params},
        train={"epochs": epochs, "batch_size": 32, "seed": 0, "candidates": {"lstm": CANDIDATE}},
        register={"model_name": "sales-forecast"},
    )


def test_a_time_column_is_read_and_bad_timestamps_or_values_are_refused(in_tmp):
    frame = monthly(2)
    frame.to_csv(in_tmp / "ok.csv", index=False)
    info = ingest("s", series_params({"source": str(in_tmp / "ok.csv"), "column": "sales", "time_column": "month"}))
    assert info["freq"] == "MS" and info["start"].startswith("2000-01-01") and "frequency MS" in info["summary"]

    def refused(table: pd.DataFrame, match: str, **ingest_params) -> None:
        table.to_csv(in_tmp / "bad.csv", index=False)
        params = {"source": str(in_tmp / "bad.csv"), "column": "sales", "time_column": "month", **ingest_params}
        with pytest.raises(PipelineInputError, match=match):
            ingest("bad", series_params(params))

    swapped = frame.copy()
    swapped.loc[[4, 5], "month"] = swapped.loc[[5, 4], "month"].to_numpy()
    refused(swapped, r"bad.csv: time column 'month', row 6: 2000-05-01 is earlier than row 5 .* sort the file")
    repeated = frame.copy()
    repeated.loc[7, "month"] = repeated.loc[6, "month"]
    refused(repeated, r"time column 'month', row 8: 2000-07-01 repeats row 7")
    garbled = frame.astype({"month": str})
    garbled.loc[2, "month"] = "not a date"
    refused(garbled, r"time column 'month', row 3: 'not a date' is not a date/time")
    refused(frame.assign(sales=np.nan), r"all 24 values of the series are missing", missing="interpolate")
    refused(frame, r"time column 'when' \(ingest.time_column\) not found", time_column="when")

    # Real monthly series that ship with statsmodels, with their timestamps.
    co2 = ingest("co2", series_params({"source": "statsmodels:co2_monthly", "missing": "interpolate"}))
    assert (co2["length"], co2["missing"], co2["freq"], co2["start"]) == (526, 5, "MS", "1958-03-01 00:00:00")
    elnino = ingest("elnino", series_params({"source": "statsmodels:elnino"}))
    assert (elnino["length"], elnino["freq"], elnino["end"]) == (732, "MS", "2010-12-01 00:00:00")


def test_horizon_windows_metrics_and_exponential_smoothing_from_the_same_origins(in_tmp):
    monthly().to_csv(in_tmp / "sales.csv", index=False)
    params = series_params(
        {"source": str(in_tmp / "sales.csv"), "column": "sales", "time_column": "month"},
        horizon=12,
        transform="log_relative",
    )
    ingest("s", params)
    meta = prepare("s", params)
    assert meta["horizon"] == 12 and meta["relative"] and meta["freq"] == "MS"
    parts = {split: load_split("s", split) for split in ("train", "val", "test")}
    x, y = parts["test"]
    assert x.shape[1] == 36 and y.shape == (meta["sizes"]["test"], 12)
    raw = pd.read_csv(in_tmp / "sales.csv")["sales"].to_numpy()
    inverse = inverse_of(meta)
    whole = inverse(series_from_windows(*(np.concatenate(a) for a in zip(*parts.values()))))
    np.testing.assert_allclose(whole, raw, rtol=1e-5)  # log + standardize, undone
    seen = raw[: 135 + 36 + 11]  # what the 135 training windows see, inputs and targets
    assert meta["mase_scale"] == pytest.approx(np.mean(np.abs(seen[12:] - seen[:-12])), rel=1e-4)

    # A forecast that is the truth plus 1 at every step: RMSE and MAE 1; baselines checked against numpy.
    true = inverse(y)
    logits = torch.from_numpy((np.log(true + 1) - meta["preprocessing"]["mean"]) / meta["preprocessing"]["std"])
    scores, pred = score(meta, logits, "mse", x, y)
    assert pred.shape == y.shape and scores["rmse"] == pytest.approx(1.0, rel=1e-4)
    assert scores["mase"] == pytest.approx(1.0 / meta["mase_scale"], rel=1e-4)
    assert len(scores["rmse_per_step"]) == 12
    last = inverse(x[:, -1:])
    seasonal = inverse(x[:, -12:])  # from the origin, one season back: the last 12 values, repeated per season
    assert scores["naive_last_rmse"] == pytest.approx(np.sqrt(np.mean((true - last) ** 2)), rel=1e-5)
    assert scores["seasonal_naive_rmse"] == pytest.approx(np.sqrt(np.mean((true - seasonal) ** 2)), rel=1e-5)
    step_5 = np.sqrt(np.mean((true[:, 4] - seasonal[:, 4]) ** 2))
    assert scores["seasonal_naive_rmse_per_step"][4] == pytest.approx(step_5, rel=1e-5)

    # Holt-Winters fitted on the training part, run from the same test origins: it sees the trend.
    es = exponential_smoothing(meta, parts, inverse)
    assert set(es) == {f"{s}/{m}" for s in ("val", "test") for m in ("rmse", "mae", "mase")}
    assert es["test/rmse"] < scores["seasonal_naive_rmse"]

    params = series_params({"source": str(in_tmp / "sales.csv"), "column": "sales"}, horizon=210)
    ingest("s", params)
    with pytest.raises(PipelineInputError, match="prepare.horizon: 210 leave 0 windows"):
        prepare("s", params)


def run_stages(name: str, params: DatasetParams) -> dict:
    """ingest -> prepare -> train -> evaluate -> register, in this process (Ray's local instance for train)."""
    from pipelines.config import ComputeParams
    from pipelines.stages.evaluate import evaluate
    from pipelines.stages.register import register
    from pipelines.stages.train import train

    ingest(name, params)
    prepare(name, params)
    train(name, params, ComputeParams(num_workers=1, storage_path="ray"))
    pipeline = PipelineParams(datasets={name: params})
    report = evaluate(name, pipeline.evaluate)
    register(pipeline, name)
    return report


@pytest.mark.slow
def test_a_12_month_forecast_beats_seasonal_naive_and_predict_emits_12_timestamped_values(
    in_tmp, ray_instance, capsys, monkeypatch
):
    from pipelines.predict import main, predict_file

    monthly().to_csv(in_tmp / "sales.csv", index=False)
    ingest_params = {"source": str(in_tmp / "sales.csv"), "column": "sales", "time_column": "month"}
    report = run_stages("sales", series_params(ingest_params, horizon=12, transform="log_relative"))
    test = report["candidates"]["lstm"]
    assert test["test/rmse"] < test["test/seasonal_naive_rmse"], test
    assert test["test/mase"] < test["test/seasonal_naive_mase"]
    assert len(test["test/rmse_per_step"]) == 12
    assert "test/rmse" in report["baselines"]["exponential_smoothing"]
    out = DatasetPaths("sales").evaluate_dir
    assert (out / "plots" / "forecast_lstm.png").exists() and (out / "plots" / "rmse_per_step_lstm.png").exists()
    horizon = pd.read_csv(out / "predictions" / "lstm.csv")
    assert len(horizon) == 12 and horizon["timestamp"].iloc[-1] == "2019-12-01"  # the series' last month

    forecast = predict_file("sales-forecast", str(in_tmp / "sales.csv"), in_tmp / "f.csv", "data/registry")
    assert list(forecast["horizon_step"]) == list(range(1, 13)) and forecast["prediction"].notna().all()
    assert list(forecast["timestamp"]) == list(pd.date_range("2020-01-01", periods=12, freq="MS"))
    capsys.readouterr()
    monkeypatch.setattr("sys.argv", ["predict", "sales-forecast", str(in_tmp / "sales.csv"), str(in_tmp / "cli.csv")])
    main()
    printed = capsys.readouterr().out
    assert "forecast past the end of the series (12 steps):" in printed and "2020-12-01 00:00:00: " in printed


@pytest.mark.slow
def test_a_12_month_forecast_of_monthly_co2_beats_seasonal_naive(in_tmp, ray_instance):
    params = series_params(
        {"source": "statsmodels:co2_monthly", "missing": "interpolate"}, horizon=12, transform="relative"
    )
    test = run_stages("co2", params)["candidates"]["lstm"]
    assert test["test/rmse"] < test["test/seasonal_naive_rmse"], test
