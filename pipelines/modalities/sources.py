"""Fetch a data source named in params.yaml to a local file.

Accepted: sklearn:<name> (a table bundled with scikit-learn, no network), palmerpenguins:penguins
(the CSV inside the palmerpenguins package),
a local path, s3://bucket/key (boto3; honours AWS_ENDPOINT_URL and the usual
AWS credential chain, so any S3-compatible server works) and http(s):// URLs.
"""

from __future__ import annotations

import contextlib
import shutil
import tempfile
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pandas as pd

from pipelines.errors import PipelineInputError, SourceUnavailable

SKLEARN_TABLES = {
    "breast_cancer": "load_breast_cancer",  # binary
    "wine": "load_wine",  # 3 classes
    "iris": "load_iris",  # 3 classes
    "diabetes": "load_diabetes",  # regression
}


# Tables that ship inside an installed package as CSV files (read as they are: strings, blanks and all).
PACKAGE_TABLES = {
    "penguins": ("palmerpenguins", "data/penguins.csv"),  # species (3 classes), islands, sex, gaps
}


def load_builtin_table(source: str) -> pd.DataFrame:
    """sklearn:<name> or palmerpenguins:penguins, read offline from the installed package."""
    kind, _, name = source.partition(":")
    if kind == "sklearn":
        return load_sklearn_table(name)
    if name not in PACKAGE_TABLES:
        raise PipelineInputError(
            f"ingest.source: unknown built-in table '{source}'; choose one of "
            + ", ".join(f"palmerpenguins:{n}" for n in PACKAGE_TABLES)
        )
    import importlib.util

    package, path = PACKAGE_TABLES[name]
    spec = importlib.util.find_spec(package)  # the package's directory, without running its __init__
    if spec is None or not spec.submodule_search_locations:
        raise PipelineInputError(f"ingest.source: {source} needs the '{package}' package (pip install {package})")
    return pd.read_csv(Path(next(iter(spec.submodule_search_locations))) / path)


def load_sklearn_table(name: str) -> pd.DataFrame:
    if name not in SKLEARN_TABLES:
        raise PipelineInputError(
            f"ingest.source: unknown built-in table 'sklearn:{name}'; choose one of "
            + ", ".join(f"sklearn:{n}" for n in SKLEARN_TABLES)
        )
    import sklearn.datasets

    bunch = getattr(sklearn.datasets, SKLEARN_TABLES[name])(as_frame=True)
    frame = bunch.frame.copy()
    if "target" in frame and hasattr(bunch, "target_names") and name != "diabetes":
        # Keep class names readable in confusion matrices and predictions.
        frame["target"] = [str(bunch.target_names[i]) for i in frame["target"]]
    return frame


@contextlib.contextmanager
def fetched(source: str) -> Iterator[Path]:
    """Yield a local file holding the source's bytes (downloaded to a temp dir if remote)."""
    if source.startswith("s3://"):
        with tempfile.TemporaryDirectory() as tmp:
            yield _download_s3(source, Path(tmp))
    elif source.startswith(("http://", "https://")):
        with tempfile.TemporaryDirectory() as tmp:
            yield _download_http(source, Path(tmp))
    else:
        path = Path(source).expanduser()
        if not path.exists():
            raise PipelineInputError(f"ingest.source: {source}: file does not exist")
        if not path.is_file():
            raise PipelineInputError(f"ingest.source: {source}: not a file")
        yield path


def _download_s3(url: str, into: Path) -> Path:
    import botocore.exceptions

    from pipelines.errors import Unavailable
    from pipelines.s3_endpoint import s3_client

    bucket, _, key = url[len("s3://") :].partition("/")
    if not bucket or not key:
        raise PipelineInputError(f"ingest.source: {url}: expected s3://bucket/key")
    target = into / Path(key).name
    try:
        # Bounded retries; an endpoint that does not answer is Unavailable, naming it (pipelines/s3_endpoint.py).
        s3_client().download_file(bucket, key, str(target))
    except Unavailable as err:
        raise SourceUnavailable(f"ingest.source: {err}") from None
    except botocore.exceptions.ClientError as err:  # a definite answer: no such bucket or key, access denied
        raise PipelineInputError(f"ingest.source: {url}: {err}") from None
    except botocore.exceptions.NoCredentialsError:
        raise PipelineInputError(
            f"ingest.source: {url}: no AWS credentials (set AWS_PROFILE or AWS_ACCESS_KEY_ID)"
        ) from None
    return target


def _download_http(url: str, into: Path) -> Path:
    name = Path(urllib.request.urlparse(url).path).name or "download"
    target = into / name
    try:
        with urllib.request.urlopen(url, timeout=60) as response, open(target, "wb") as out:
            shutil.copyfileobj(response, out)
    except urllib.error.HTTPError as err:
        # 5xx and 429 are the server's trouble and may pass; other statuses mean the URL is wrong.
        error = SourceUnavailable if err.code >= 500 or err.code == 429 else PipelineInputError
        raise error(f"ingest.source: {url}: download failed: HTTP {err.code} {err.reason}") from None
    except (urllib.error.URLError, TimeoutError, ConnectionError) as err:  # refused, unreachable, timed out
        raise SourceUnavailable(f"ingest.source: {url}: download failed: {getattr(err, 'reason', err)}") from None
    except OSError as err:
        raise PipelineInputError(f"ingest.source: {url}: download failed: {err}") from None
    return target


def read_table(path: Path, shown_as: str) -> pd.DataFrame:
    """Read a CSV or Parquet file; errors name the source as the user wrote it."""
    suffixes = "".join(path.suffixes[-2:]).lower()
    try:
        if suffixes.endswith((".parquet", ".pq")):
            return pd.read_parquet(path)
        if suffixes.endswith((".csv", ".csv.gz", ".txt")):
            return pd.read_csv(path)
    except pd.errors.EmptyDataError:
        raise PipelineInputError(f"{shown_as}: the file is empty (expected a header row and data rows)") from None
    except (pd.errors.ParserError, UnicodeDecodeError, ValueError, OSError) as err:
        raise PipelineInputError(f"{shown_as}: cannot be read as a table: {err}") from None
    raise PipelineInputError(
        f"{shown_as}: unsupported file type {suffixes or '(none)'}; expected .csv, .csv.gz or .parquet"
    )
