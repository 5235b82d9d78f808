"""The model registry on S3 (or any S3-compatible store), safe under concurrency.

Layout under s3://<bucket>/<prefix>:

    <name>/blobs/sha256/<digest>        the checkpoint, content-addressed
    <name>/versions/v<N>/card.json      the version record: metrics, lineage, sha256
    <name>/aliases.json                 {"production": 3, ...}

Why it is safe without a lock server:

- A version becomes visible only when its card exists. The blob is uploaded
  first and the card last, so a crash in between leaves an unreferenced blob
  and no version.
- The card is written with `If-None-Match: *`: S3 creates it only if the key
  does not exist yet, atomically. Of two registrations racing for v<N>, one
  wins and the other gets 412 Precondition Failed and tries v<N+1>.
- aliases.json is replaced with `If-Match: <etag it was read with>` (or created
  with `If-None-Match: *`): a compare-and-swap. A promotion that lost the race
  re-reads the aliases, decides again and retries.
- Before its first write, an instance checks that the endpoint really honours
  both conditions (some S3-compatible servers ignore them, which would turn
  every write above into a silent overwrite) and refuses to write if not.

Credentials come only from the standard AWS chain (env, profile, instance
role); nothing is stored. The endpoint is the argument, else AWS_ENDPOINT_URL_S3,
else AWS_ENDPOINT_URL, else AWS itself.
"""

from __future__ import annotations

import base64
import json
import os
import re
import shutil
import uuid
from pathlib import Path
from typing import Any

from botocore.exceptions import ClientError

from pipelines.atomic import atomic_path
from pipelines.registry.local import (
    ALIASES_NAME,
    CARD_NAME,
    CHECKPOINT_NAME,
    AliasUpdate,
    ModelRegistry,
    ModelVersion,
    RegistryError,
    check_model_name,
    sha256_file,
    verify_checkpoint,
)
from pipelines.registry.s3_answers import MAX_ATTEMPTS, backoff, is_conflict, is_missing
from pipelines.s3_endpoint import s3_client

_CARD_KEY = re.compile(r"/versions/v(\d+)/" + re.escape(CARD_NAME) + "$")


def parse_s3_uri(uri: str) -> tuple[str, str]:
    """('bucket', 'prefix') from 's3://bucket/prefix' (the prefix may be empty)."""
    if not uri.startswith("s3://"):
        raise RegistryError(f"not an s3:// location: {uri!r}")
    bucket, _, prefix = uri[len("s3://") :].partition("/")
    if not bucket:
        raise RegistryError(f"no bucket in {uri!r}: use s3://bucket/prefix")
    return bucket, prefix.strip("/")


def default_cache_dir() -> Path:
    if os.environ.get("DL_REGISTRY_CACHE"):
        return Path(os.environ["DL_REGISTRY_CACHE"]).expanduser()
    return Path(os.environ.get("XDG_CACHE_HOME", "~/.cache")).expanduser() / "dl-pipeline" / "registry"


class S3ModelRegistry(ModelRegistry):
    def __init__(self, uri: str, endpoint_url: str | None = None, cache_dir: str | Path | None = None):
        self.bucket, self.prefix = parse_s3_uri(uri)
        self.location = f"s3://{self.bucket}/{self.prefix}".rstrip("/")
        self.endpoint_url = endpoint_url or os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")
        # Downloaded checkpoints, keyed by their sha256: an entry is re-verified on every
        # get(verify=True), so a stale or damaged one is fetched again, never trusted.
        self.cache_dir = Path(cache_dir) if cache_dir is not None else default_cache_dir()
        # Bounded retries; an endpoint that does not answer raises Unavailable naming it and the
        # operation (pipelines/s3_endpoint.py), so a stage exits 75 and the flow retries it.
        # Path-style URLs work on every S3-compatible server (MinIO, Ceph, moto);
        # virtual-hosted style needs DNS for <bucket>.<host>.
        self._s3 = s3_client(self.endpoint_url, s3={"addressing_style": "path"} if self.endpoint_url else {})
        self._conditional_writes_checked = False

    # -- keys ---------------------------------------------------------------------------------

    def _key(self, *parts: str) -> str:
        return "/".join(p for p in (self.prefix, *parts) if p)

    def _blob_key(self, name: str, digest: str) -> str:
        return self._key(name, "blobs", "sha256", digest)

    def _card_key(self, name: str, version: int) -> str:
        return self._key(name, "versions", f"v{version}", CARD_NAME)

    def _version_uri(self, name: str, version: int) -> str:
        return f"s3://{self.bucket}/{self._key(name, 'versions', f'v{version}')}/"

    # -- reading ------------------------------------------------------------------------------

    def _list(self, prefix: str, delimiter: str | None = None) -> tuple[list[str], list[str]]:
        """(keys, common prefixes) under `prefix`, all pages."""
        kwargs: dict[str, Any] = {"Bucket": self.bucket, "Prefix": prefix}
        if delimiter:
            kwargs["Delimiter"] = delimiter
        keys: list[str] = []
        prefixes: list[str] = []
        for page in self._s3.get_paginator("list_objects_v2").paginate(**kwargs):
            keys += [o["Key"] for o in page.get("Contents", [])]
            prefixes += [p["Prefix"] for p in page.get("CommonPrefixes", [])]
        return keys, prefixes

    def list_models(self) -> list[str]:
        root = self._key() + "/" if self.prefix else ""
        _, prefixes = self._list(root, delimiter="/")
        names = [p[len(root) :].rstrip("/") for p in prefixes]
        # A model exists once it has a published version (not just an orphan blob).
        return sorted(n for n in names if n and not n.startswith(".") and self.list_versions(n))

    def list_versions(self, name: str) -> list[int]:
        keys, _ = self._list(self._key(check_model_name(name), "versions") + "/")
        return sorted(int(m.group(1)) for k in keys if (m := _CARD_KEY.search(k)))

    def _read_card(self, name: str, version: int) -> dict[str, Any]:
        check_model_name(name)
        try:
            body = self._s3.get_object(Bucket=self.bucket, Key=self._card_key(name, version))["Body"].read()
        except ClientError as err:
            if is_missing(err):
                raise self._missing_version(name, version) from None
            raise
        return json.loads(body)

    def _materialize(self, name: str, version: int, card: dict[str, Any], verify: bool) -> ModelVersion:
        entry = self.cache_dir / "sha256" / card["sha256"]
        local = entry / CHECKPOINT_NAME
        fresh = local.exists() and (not verify or sha256_file(local) == card["sha256"])
        if not fresh:
            blob = self._blob_key(name, card["sha256"])
            with atomic_path(local) as tmp:  # a half-finished or refused download never lands in the cache
                try:
                    self._s3.download_file(self.bucket, blob, str(tmp))
                except ClientError as err:
                    if is_missing(err):
                        raise RegistryError(
                            f"{name} v{version}: its checkpoint blob is missing from {self.location}"
                        ) from None
                    raise
                if verify:
                    verify_checkpoint(tmp, card, where=f"s3://{self.bucket}/{blob}")
        return ModelVersion(name, version, entry, card, self._version_uri(name, version))

    def aliases(self, name: str) -> dict[str, int]:
        return self._read_aliases(name)[0]

    def _read_aliases(self, name: str) -> tuple[dict[str, int], str | None]:
        """The aliases and the ETag they were read with (None: no aliases.json yet)."""
        try:
            obj = self._s3.get_object(Bucket=self.bucket, Key=self._key(check_model_name(name), ALIASES_NAME))
        except ClientError as err:
            if is_missing(err):
                return {}, None
            raise
        return json.loads(obj["Body"].read()), obj["ETag"]

    # -- writing ------------------------------------------------------------------------------

    def _check_conditional_writes(self) -> None:
        """Refuse to write to an endpoint that ignores If-None-Match / If-Match on PutObject."""
        if self._conditional_writes_checked:
            return
        probe = self._key(".registry-probe", uuid.uuid4().hex)
        put = lambda **cond: self._s3.put_object(Bucket=self.bucket, Key=probe, Body=b"probe", **cond)  # noqa: E731
        put(IfNoneMatch="*")  # nothing to clean up if this fails (e.g. the endpoint is down)
        try:
            for condition in ({"IfNoneMatch": "*"}, {"IfMatch": '"' + "0" * 32 + '"'}):
                try:
                    put(**condition)
                except ClientError as err:
                    if is_conflict(err):
                        continue
                    raise
                header = "If-None-Match" if "IfNoneMatch" in condition else "If-Match"
                raise RegistryError(
                    f"the S3 endpoint {self.endpoint_url or 'AWS'} ignores the {header} condition on PutObject; "
                    f"the registry needs conditional writes to publish versions and move aliases safely, "
                    f"so it refuses to write to {self.location}"
                )
        finally:
            try:
                self._s3.delete_object(Bucket=self.bucket, Key=probe)
            except ClientError:
                pass  # a stray 5-byte probe is harmless; failing the write over it is not
        self._conditional_writes_checked = True

    def _put_blob(self, name: str, checkpoint: Path, digest: str) -> None:
        # Content-addressed: rewriting an existing blob writes the same bytes. The
        # checksum makes S3 reject the upload if the bytes it got are not the ones we hashed.
        with open(checkpoint, "rb") as body:
            self._s3.put_object(
                Bucket=self.bucket,
                Key=self._blob_key(name, digest),
                Body=body,
                ChecksumSHA256=base64.b64encode(bytes.fromhex(digest)).decode(),
            )

    def _publish_card(self, name: str, version: int, card: dict[str, Any]) -> bool:
        """Create v<version>'s card if nobody has; False if that number is taken."""
        key = self._card_key(name, version)
        body = (json.dumps(card, indent=2, sort_keys=True) + "\n").encode()
        try:
            etag = self._s3.put_object(
                Bucket=self.bucket, Key=key, Body=body, IfNoneMatch="*", ContentType="application/json"
            )["ETag"]
        except ClientError as err:
            if is_conflict(err):
                return False
            raise
        # Read back: if another writer's card replaced ours, the endpoint did not make the
        # condition atomic. Fail loudly rather than report a version that is not ours.
        if self._s3.head_object(Bucket=self.bucket, Key=key)["ETag"] != etag:
            raise RegistryError(
                f"{key}: overwritten right after a conditional create; the endpoint does not make If-None-Match atomic"
            )
        return True

    def register(self, name: str, checkpoint: str | Path, card: dict[str, Any]) -> ModelVersion:
        check_model_name(name)
        self._check_conditional_writes()
        checkpoint = Path(checkpoint)
        digest = sha256_file(checkpoint)
        self._put_blob(name, checkpoint, digest)  # 1. invisible on its own
        for attempt in range(MAX_ATTEMPTS):  # 2. the card makes the version exist
            number = (self.list_versions(name) or [0])[-1] + 1
            full_card = {**card, "name": name, "version": number, "sha256": digest}
            if self._publish_card(name, number, full_card):
                break
            backoff(attempt)
        else:
            raise RegistryError(f"could not register {name}: lost the race for a version number {MAX_ATTEMPTS} times")
        self._cache(checkpoint, digest)
        return ModelVersion(
            name, number, self.cache_dir / "sha256" / digest, full_card, self._version_uri(name, number)
        )

    def _cache(self, checkpoint: Path, digest: str) -> None:
        local = self.cache_dir / "sha256" / digest / CHECKPOINT_NAME
        if not local.exists():
            with atomic_path(local) as tmp:
                shutil.copyfile(checkpoint, tmp)

    def _update_aliases(self, name: str, update: AliasUpdate) -> None:
        self._check_conditional_writes()
        key = self._key(check_model_name(name), ALIASES_NAME)
        for attempt in range(MAX_ATTEMPTS):
            current, etag = self._read_aliases(name)
            new = update(dict(current))
            if new is None or new == current:
                return
            condition = {"IfMatch": etag} if etag else {"IfNoneMatch": "*"}
            body = (json.dumps(new, indent=2, sort_keys=True) + "\n").encode()
            try:
                self._s3.put_object(Bucket=self.bucket, Key=key, Body=body, ContentType="application/json", **condition)
                return
            except ClientError as err:
                if not is_conflict(err):
                    raise
            backoff(attempt)  # someone else changed the aliases: re-read and decide again
        raise RegistryError(f"could not update the aliases of {name}: lost the compare-and-swap {MAX_ATTEMPTS} times")
