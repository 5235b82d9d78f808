"""A real moto S3 server on 127.0.0.1, in its own process, for tests that need S3.

Usage in a test module:

    from s3_server import moto_s3, s3_env  # noqa: F401  (pytest fixtures)

`moto_s3` (session) starts the server and creates a bucket; `s3_env` (per test)
points the AWS environment at it with fake credentials and yields a fresh
s3://bucket/<unique prefix>. The environment is set per test (monkeypatch),
so nothing leaks into other test modules; child processes inherit it.

Why a lock around every request: moto 5.2.5 checks If-None-Match / If-Match on
PutObject and then writes in a separate step, and its threaded server runs
requests concurrently, so two racing conditional PUTs can both succeed (and a
concurrent overwrite can fail with a 500, "read of closed file"). Real S3
evaluates the condition and the write atomically. Serialising requests gives
moto the same atomicity, so the concurrency tests test our protocol, not a
moto race. Everything else is stock moto over HTTP.

`start_server(ignore_conditions=True)` plays an S3-compatible server that ignores
If-None-Match / If-Match (it strips them), to test that the registry refuses it.

Run directly (`python tests/s3_server.py`) it prints its port and serves until killed.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest

CREDENTIALS = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
}


def serve(ignore_conditions: bool = False) -> None:
    from moto.moto_server.werkzeug_app import DomainDispatcherApplication, MotoRequestHandler, create_backend_app
    from werkzeug.serving import make_server

    app = DomainDispatcherApplication(create_backend_app)
    lock = threading.Lock()

    def serialised(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        if ignore_conditions:  # play an S3-compatible server without conditional writes
            environ.pop("HTTP_IF_NONE_MATCH", None)
            environ.pop("HTTP_IF_MATCH", None)
        with lock:
            return list(app(environ, start_response))  # the whole response inside the lock

    server = make_server("127.0.0.1", 0, serialised, threaded=True, request_handler=MotoRequestHandler)
    print(server.server_address[1], flush=True)  # port 0: the OS picks a free one, no race
    server.serve_forever()


@dataclass(frozen=True)
class MotoS3:
    endpoint: str
    bucket: str

    def env(self) -> dict[str, str]:
        return {**CREDENTIALS, "AWS_ENDPOINT_URL": self.endpoint}

    def client(self) -> Any:
        import boto3

        return boto3.client(
            "s3",
            endpoint_url=self.endpoint,
            region_name="us-east-1",
            aws_access_key_id="testing",
            aws_secret_access_key="testing",
        )


@contextlib.contextmanager
def start_server(bucket: str = "registry-tests", ignore_conditions: bool = False) -> Iterator[MotoS3]:
    """A moto S3 server in a child process, with one empty bucket; stopped on exit."""
    args = [sys.executable, __file__] + (["--ignore-conditions"] if ignore_conditions else [])
    proc = subprocess.Popen(
        args, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env={**os.environ, **CREDENTIALS}
    )
    try:
        line = proc.stdout.readline()  # blocks until the server is listening
        if not line.strip().isdigit():
            raise RuntimeError(f"moto server did not start (exit code {proc.poll()})")
        server = MotoS3(f"http://127.0.0.1:{int(line)}", bucket)
        server.client().create_bucket(Bucket=bucket)
        yield server
    finally:
        proc.terminate()
        proc.wait(10)


@pytest.fixture(scope="session")
def moto_s3() -> Iterator[MotoS3]:
    with start_server() as server:
        yield server


@pytest.fixture
def s3_env(moto_s3: MotoS3, monkeypatch: pytest.MonkeyPatch, tmp_path: Any) -> Iterator[str]:
    """A fresh, empty s3:// registry location, with the AWS env pointing at moto."""
    for var in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_ENDPOINT_URL_S3"):
        monkeypatch.delenv(var, raising=False)
    for var, value in moto_s3.env().items():
        monkeypatch.setenv(var, value)
    # Never read the developer's real AWS config or credentials files.
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-aws-config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-aws-credentials"))
    monkeypatch.setenv("DL_REGISTRY_CACHE", str(tmp_path / "registry-cache"))
    yield f"s3://{moto_s3.bucket}/{uuid.uuid4().hex[:12]}/models"


if __name__ == "__main__":
    serve(ignore_conditions="--ignore-conditions" in sys.argv)
