"""The online endpoint, for real: small real models in a registry, `python -m pipelines.serving` as its own
process on a free port (a local Ray instance and Ray Serve), HTTP requests for every modality checked against
the predict CLI's functions on the same inputs, bad requests, a promotion served without a restart, and
SIGTERM leaving no process behind."""

from __future__ import annotations

import base64
import io
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pandas as pd
import psutil
import pytest

from bench.small_models import register_small
from pipelines import predict
from pipelines.errors import PipelineInputError
from pipelines.registry.local import open_registry
from tests.conftest import ROOT

pytestmark = pytest.mark.slow
POLL_S = 1.0
MODELS = {"tabular": "tabular-fnn", "digits": "digits-cnn", "text": "text-next-word", "series": "sunspots-forecast"}
# A series with timestamps (its own time column) and a 3-step horizon: El Nino's monthly sea temperatures.
DATED = "elnino-forecast"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    def __init__(self, registry: Path, log: Path):
        self.registry, self.log, self.port = registry, log, free_port()
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        env.pop("RAY_ADDRESS", None)
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "pipelines.serving", *MODELS.values(), DATED, "--registry", str(registry)]
            + ["--port", str(self.port), "--poll", str(POLL_S)],
            cwd=ROOT,
            env=env,
            stdout=log.open("w"),
            stderr=subprocess.STDOUT,
        )

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def request(self, path: str, body: bytes | dict | None = None, timeout: float = 60) -> tuple[int, dict]:
        data = json.dumps(body).encode() if isinstance(body, dict) else body
        req = urllib.request.Request(self.url(path), data=data, method="POST" if data is not None else "GET")
        try:
            with urllib.request.urlopen(req, timeout=timeout) as resp:
                return resp.status, json.loads(resp.read())
        except urllib.error.HTTPError as err:
            return err.code, json.loads(err.read())

    def predict(self, name: str, instances: list) -> dict:
        status, body = self.request(f"/v1/models/{name}:predict", {"instances": instances})
        assert status == 200, body
        return body

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def wait_ready(self, timeout: float = 420) -> None:  # six replicas starting beside another test's training
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, f"the server exited {self.proc.returncode}:\n{self.output()[-3000:]}"
            try:
                status, body = self.request("/v1/models", timeout=10)
                if status == 200 and all(m["ready"] for m in body["models"]):
                    return
            except (urllib.error.URLError, OSError, json.JSONDecodeError):  # not listening yet, or a slow answer
                pass
            time.sleep(0.5)
        raise AssertionError(f"not ready in {timeout} s:\n{self.output()[-3000:]}")

    def tree(self) -> list[psutil.Process]:
        """The server and every process under it: the Ray instance it started (GCS, raylet), Serve's actors."""
        root = psutil.Process(self.proc.pid)
        return [root, *root.children(recursive=True)]


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("serving")
    registry = tmp / "registry"
    raw = {dataset: register_small(registry, dataset)["raw"] for dataset in MODELS}
    dated = dated_series(tmp / "elnino.csv")
    ingest = {"source": str(tmp / "elnino.csv"), "column": "sst", "time_column": "month"}
    register_small(registry, "series", model_name=DATED, ingest=ingest, prepare={"window": 24, "horizon": 3})
    raw["dated"] = dated
    server = Server(registry, tmp / "server.log")
    try:
        server.wait_ready()
        yield server, raw, tmp
    finally:
        if server.proc.poll() is None:
            for proc in server.tree()[::-1]:
                proc.kill()


def dated_series(path: Path) -> pd.DataFrame:
    from pipelines.modalities.series import STATSMODELS_SERIES

    values, times = STATSMODELS_SERIES["elnino"]()
    frame = pd.DataFrame({"month": times.strftime("%Y-%m-%d"), "sst": values.to_numpy()})
    frame.to_csv(path, index=False)
    return frame


def cli_frame(name: str, version: str, source: Path, registry: Path) -> pd.DataFrame:
    """What `python -m pipelines.predict NAME:VERSION SOURCE out.csv` writes, through its own function."""
    return predict.predict_file(f"{name}:{version}", str(source), source.with_suffix(".out.csv"), str(registry))


def test_table_rows_predict_as_the_cli_does_with_missing_values_filled(served):
    server, raw, tmp = served
    rows = raw["tabular"].drop(columns=["target"]).head(6).to_dict("records")
    del rows[1]["mean radius"], rows[2]["worst area"]  # missing keys: missing values, filled as in training
    rows[3]["mean texture"] = None
    body = server.predict("tabular-fnn", rows)
    assert body["model_name"] == "tabular-fnn" and body["model_version"] in ("1", "2")
    pd.DataFrame(rows).to_csv(tmp / "rows.csv", index=False)
    expected = cli_frame("tabular-fnn", body["model_version"], tmp / "rows.csv", server.registry)
    got = body["predictions"]
    assert [p["class"] for p in got] == list(expected["prediction"])
    for p, (_, row) in zip(got, expected.iterrows(), strict=True):
        assert set(p["probabilities"]) == {"benign", "malignant"}
        for cls, value in p["probabilities"].items():
            assert value == pytest.approx(row[f"p_{cls}"], abs=1e-6)


def test_images_as_arrays_and_base64_png_predict_as_the_cli_does(served):
    from PIL import Image

    server, raw, tmp = served
    images = raw["digits"][:4, 0]  # (4, 8, 8) pixels 0..16
    png = io.BytesIO()
    Image.fromarray(images[0].astype(np.uint8)).save(png, format="PNG")
    body = server.predict("digits-cnn", [img.tolist() for img in images] + [base64.b64encode(png.getvalue()).decode()])
    np.savez(tmp / "digits.npz", x=images, y=np.array([0, 1, 0, 1]))
    expected = cli_frame("digits-cnn", body["model_version"], tmp / "digits.npz", server.registry)
    (tmp / "digit.png").write_bytes(png.getvalue())
    expected_png = cli_frame("digits-cnn", body["model_version"], tmp / "digit.png", server.registry)
    got = body["predictions"]
    for p, (_, row) in zip(got, pd.concat([expected, expected_png]).iterrows(), strict=True):
        assert p["class"] == str(row["prediction"]) and sorted(p["probabilities"]) == [str(d) for d in range(10)]
        for cls, value in p["probabilities"].items():
            assert value == pytest.approx(row[f"p_{cls}"], abs=1e-6)


def test_prompts_get_the_next_word_or_a_completion_as_the_cli_gives(served):
    server, _, tmp = served
    prompts = ["the for statement is used to", "a class definition"]
    body = server.predict("text-next-word", [*prompts, {"prompt": prompts[0], "words": 5}])
    (tmp / "prompts.txt").write_text("\n".join(prompts) + "\n")
    expected = cli_frame("text-next-word", body["model_version"], tmp / "prompts.txt", server.registry)
    got = body["predictions"]
    assert [p["next_word"] for p in got[:2]] == list(expected["prediction"])
    assert [" ".join(p["top3"]) for p in got[:2]] == list(expected["top3"])
    assert got[2] == {
        "completion": predict.complete(f"text-next-word:{body['model_version']}", prompts[0], 5, str(server.registry))
    }


def test_a_series_history_gets_the_forecast_past_its_end_as_the_cli_gives(served):
    server, raw, tmp = served
    values = raw["series"]["value"].astype(float)
    histories = [values.iloc[:60].tolist(), values.iloc[100:150].tolist()]
    body = server.predict("sunspots-forecast", [histories[0], {"history": histories[1]}])
    for history, got in zip(histories, body["predictions"], strict=True):
        pd.DataFrame({"value": history}).to_csv(tmp / "series.csv", index=False)
        expected = cli_frame("sunspots-forecast", body["model_version"], tmp / "series.csv", server.registry)
        ahead = expected[expected["actual"].isna()]  # the forecast past the end of the series
        np.testing.assert_allclose(got["forecast"], ahead["prediction"], rtol=1e-6)


def test_a_dated_series_gets_its_horizon_with_the_timestamps_the_cli_gives(served):
    server, raw, tmp = served
    recent = raw["dated"].iloc[-40:]
    body = server.predict(DATED, [{"history": recent["sst"].tolist(), "timestamps": recent["month"].tolist()}])
    recent.to_csv(tmp / "recent.csv", index=False)
    expected = predict.predict_file(
        f"{DATED}:{body['model_version']}", str(tmp / "recent.csv"), tmp / "f.csv", str(server.registry), "sst"
    )
    got = body["predictions"][0]
    np.testing.assert_allclose(got["forecast"], expected["prediction"], rtol=1e-6)
    assert got["timestamps"] == [pd.Timestamp(t).isoformat() for t in expected["timestamp"]]
    assert got["timestamps"][0].startswith("2011-01-01") and len(got["forecast"]) == 3  # the 3 months after 2010-12


def test_bad_requests_get_a_4xx_naming_the_field_and_the_replica_keeps_serving(served):
    server, raw, tmp = served
    row = raw["tabular"].drop(columns=["target"]).iloc[0].to_dict()
    bad_row = {**row, "mean radius": "abc"}
    pd.DataFrame([row, bad_row]).to_csv(tmp / "bad.csv", index=False)
    with pytest.raises(PipelineInputError) as cli_error:
        cli_frame("tabular-fnn", "1", tmp / "bad.csv", server.registry)
    cli_message = str(cli_error.value).split(": ", 1)[1]  # without the file name the CLI starts with
    cases = [
        ("tabular-fnn", b"{not json", 400, "request body: not JSON"),
        ("tabular-fnn", {"rows": [row]}, 400, 'missing "instances"'),
        ("tabular-fnn", {"instances": []}, 400, "non-empty list"),
        ("tabular-fnn", {"instances": [row, bad_row]}, 400, "request: " + cli_message),
        ("tabular-fnn", {"instances": [{"mean radius": [1, 2]}]}, 400, "instances[0]: column 'mean radius'"),
        ("tabular-fnn", {"instances": [[1.0, 2.0]]}, 400, "instances[0]: expected an object of column values"),
        (
            "digits-cnn",
            {"instances": [[[1, 2], [3, 4]]]},
            400,
            "instances[0]: images are [1, 2, 2] but the model takes",
        ),
        ("digits-cnn", {"instances": ["not base64!"]}, 400, "instances[0]: not base64"),
        ("digits-cnn", {"instances": [[[1, 2], [3]]]}, 400, "instances[0]: not a rectangular array"),
        ("text-next-word", {"instances": [{"words": 3}]}, 400, 'instances[0]: missing "prompt"'),
        ("sunspots-forecast", {"instances": [{"timestamps": []}]}, 400, 'instances[0]: missing "history"'),
        (
            "sunspots-forecast",
            {"instances": [[1.0, 2.0]]},
            400,
            "instances[0]: 2 values, fewer than the model's window",
        ),
        ("no-such-model", {"instances": [row]}, 404, "no model 'no-such-model' is served here; served: tabular-fnn"),
    ]
    for name, body, status, message in cases:
        got_status, got = server.request(f"/v1/models/{name}:predict", body)
        assert (got_status, message in got.get("error", "")) == (status, True), (name, body, got)
    assert server.predict("tabular-fnn", [row])["predictions"][0]["class"] in ("benign", "malignant")
    status, ready = server.request("/v1/models/tabular-fnn")
    assert status == 200 and ready["ready"] and ready["model_version_status"][0]["state"] == "AVAILABLE"


def test_a_bad_request_batched_with_good_ones_fails_alone(served):
    """In the replica's batch step (in process, deterministic) and over HTTP with concurrent clients."""
    from concurrent.futures import ThreadPoolExecutor

    from pipelines.serving.model import ServedModel
    from pipelines.serving.protocol import BadRequest

    server, raw, _ = served
    rows = raw["tabular"].drop(columns=["target"]).head(3).to_dict("records")
    bad = {**rows[0], "mean area": "big"}
    model = ServedModel.load("tabular-fnn:1", str(server.registry))
    alone = model.predict_requests([rows])[0]
    batched = model.predict_requests([[rows[0]], [rows[1], bad], rows])
    assert isinstance(batched[1], BadRequest) and "column 'mean area', row 2: 'big' is not a number" in str(batched[1])
    for got, want in zip(batched[0] + batched[2], alone[:1] + alone, strict=True):
        assert got["class"] == want["class"]  # a batch of other sizes: the same to float rounding
        assert got["probabilities"] == pytest.approx(want["probabilities"], abs=1e-6)

    bodies = [{"instances": [rows[i % 3]]} for i in range(12)] + [{"instances": [bad]}]
    with ThreadPoolExecutor(len(bodies)) as pool:
        answers = list(pool.map(lambda b: server.request("/v1/models/tabular-fnn:predict", b), bodies))
    assert [status for status, _ in answers] == [200] * 12 + [400], answers
    assert "'big' is not a number" in answers[-1][1]["error"]


def test_a_promoted_version_is_served_after_the_poll_without_a_restart(served):
    server, raw, _ = served
    row = raw["tabular"].drop(columns=["target"]).iloc[0].to_dict()
    before = server.tree()
    second = register_small(server.registry, "tabular", seed=1)  # moves `production` to v2
    assert second["version"] == 2 and open_registry(str(server.registry)).aliases("tabular-fnn")["production"] == 2
    deadline = time.monotonic() + 20 * POLL_S + 30
    while server.predict("tabular-fnn", [row])["model_version"] != "2":
        assert time.monotonic() < deadline, server.output()[-3000:]
        time.sleep(POLL_S / 2)
    assert server.request("/v1/models/tabular-fnn")[1]["model_version"] == "2"
    assert server.tree()[0].pid == before[0].pid  # the same server, not a restart
    deadline = time.monotonic() + 30
    while "tabular-fnn: now serving v2 (was v1)" not in server.output():
        assert time.monotonic() < deadline, server.output()[-3000:]
        time.sleep(0.5)


def test_sigterm_stops_the_server_ray_and_serve_leaving_no_process(served):
    server, _, _ = served
    tree = server.tree()
    assert len(tree) > 3, [p.name() for p in tree]  # the GCS, raylet, Serve's controller, proxy and replicas
    server.proc.send_signal(signal.SIGTERM)
    assert server.proc.wait(timeout=60) == 128 + signal.SIGTERM
    deadline = time.monotonic() + 20
    alive = tree
    while alive and time.monotonic() < deadline:
        alive = [p for p in alive if p.is_running() and p.status() != psutil.STATUS_ZOMBIE]
        time.sleep(0.2)
    assert not alive, [(p.pid, p.name()) for p in alive]
    assert "serve: SIGTERM: stopping" in server.output() and "serve: stopped" in server.output()
