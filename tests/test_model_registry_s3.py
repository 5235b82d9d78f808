"""The model registry on S3, against a real moto S3 server over HTTP (nothing mocked)."""

from __future__ import annotations

import pytest
from registry_helpers import (
    card,
    check_cli,
    check_concurrent_promotions,
    check_promotion,
    check_register_get_list_download,
    checkpoint,
    register_many,
    register_then_crash_before_card,
    run_processes,
)
from s3_server import moto_s3, s3_env, start_server  # noqa: F401  (fixtures)

from pipelines.registry.local import RegistryError, open_registry, sha256_file
from pipelines.registry.s3 import S3ModelRegistry, parse_s3_uri


def _keys(moto_s3, location: str) -> list[str]:
    bucket, prefix = parse_s3_uri(location)
    return [o["Key"] for o in moto_s3.client().list_objects_v2(Bucket=bucket, Prefix=prefix).get("Contents", [])]


def test_open_registry_picks_s3_and_reads_the_endpoint_from_the_environment(s3_env, moto_s3):
    reg = open_registry(s3_env)
    assert isinstance(reg, S3ModelRegistry) and reg.endpoint_url == moto_s3.endpoint
    assert reg.location == s3_env and reg.list_models() == []
    with pytest.raises(RegistryError, match="no bucket"):
        open_registry("s3:///models")


def test_register_get_list_download(s3_env, tmp_path, moto_s3):
    check_register_get_list_download(s3_env, tmp_path)
    reg, (_, prefix) = open_registry(s3_env), parse_s3_uri(s3_env)
    digests = [reg.get_card("m", v)["sha256"] for v in (1, 2)]
    blob = f"{prefix}/m/blobs/sha256/{digests[0]}"
    assert moto_s3.client().get_object(Bucket=moto_s3.bucket, Key=blob)["Body"].read() == b"one"
    # Exactly the layout in model_registry_s3's docstring: no probes or temp objects left behind.
    expected = [f"{prefix}/m/versions/v{v}/card.json" for v in (1, 2)] + [
        f"{prefix}/m/blobs/sha256/{d}" for d in digests
    ]
    assert sorted(_keys(moto_s3, s3_env)) == sorted(expected)


def test_promote_moves_the_alias_only_when_the_metric_is_better(s3_env, tmp_path):
    check_promotion(s3_env, tmp_path)


def test_a_tampered_checkpoint_is_refused_and_a_damaged_cache_is_refetched(s3_env, tmp_path, moto_s3):
    reg = open_registry(s3_env)
    v1 = reg.register("m", checkpoint(tmp_path / "a.pt", b"weights"), card(0.5))

    v1.checkpoint.write_bytes(b"bit rot")  # the local cache copy: detected, fetched again
    assert reg.get("m", 1).checkpoint.read_bytes() == b"weights"

    _, prefix = parse_s3_uri(s3_env)
    moto_s3.client().put_object(Bucket=moto_s3.bucket, Key=f"{prefix}/m/blobs/sha256/{v1.card['sha256']}", Body=b"evil")
    fresh = open_registry(s3_env, cache_dir=tmp_path / "fresh-cache")
    with pytest.raises(RegistryError, match=r"s3://.*/m/blobs/sha256/.*does not match the registry entry.*refusing"):
        fresh.get("m", 1)
    with pytest.raises(RegistryError, match="does not match the registry entry"):
        fresh.download("m", 1, tmp_path / "dest")
    assert not (tmp_path / "fresh-cache" / "sha256" / v1.card["sha256"] / "model.pt").exists()
    assert not (tmp_path / "dest" / "model.pt").exists()
    assert fresh.get("m", 1, verify=False).checkpoint.read_bytes() == b"evil"  # only when asked


def test_two_processes_registering_at_once_get_distinct_complete_versions(s3_env, tmp_path):
    n = 10  # enough that the two processes do race for the same numbers
    assert run_processes(register_many, [(s3_env, tag, n, str(tmp_path)) for tag in ("a", "b")]) == [0, 0]
    reg = open_registry(s3_env)
    assert reg.list_versions("m") == list(range(1, 2 * n + 1))
    versions = [reg.get("m", v) for v in range(1, 2 * n + 1)]  # each verifies its blob against its card
    assert [mv.card["version"] for mv in versions] == list(range(1, 2 * n + 1))
    assert len({mv.card["sha256"] for mv in versions}) == 2 * n
    who = [mv.card["who"] for mv in versions]
    assert who.count("a") == n and who.count("b") == n


def test_concurrent_promotions_and_alias_updates_lose_nothing(s3_env, tmp_path):
    check_concurrent_promotions(s3_env, tmp_path, aliases_each=5)


def test_a_registration_killed_between_blob_and_card_leaves_no_version(s3_env, tmp_path, moto_s3):
    reg = open_registry(s3_env)
    reg.register("m", checkpoint(tmp_path / "a.pt", b"good"), card(0.5))
    reg.promote("m", 1)
    src = checkpoint(tmp_path / "b.pt", b"the new weights")
    assert run_processes(register_then_crash_before_card, [(s3_env, str(src))]) == [-9]  # SIGKILL

    _, prefix = parse_s3_uri(s3_env)
    assert f"{prefix}/m/blobs/sha256/{sha256_file(src)}" in _keys(moto_s3, s3_env)  # it died after the upload
    assert reg.list_versions("m") == [1] and reg.list_models() == ["m"]
    assert reg.aliases("m") == {"production": 1}
    assert reg.get("m").checkpoint.read_bytes() == b"good"
    assert reg.register("m", src, card(0.99)).version == 2  # the orphan blob is reused, harmlessly


def test_an_endpoint_without_conditional_writes_is_refused(s3_env, tmp_path, monkeypatch):
    with start_server(bucket="no-conditions", ignore_conditions=True) as server:
        monkeypatch.setenv("AWS_ENDPOINT_URL", server.endpoint)
        reg = open_registry("s3://no-conditions/models")
        with pytest.raises(RegistryError, match="ignores the If-None-Match condition"):
            reg.register("m", checkpoint(tmp_path / "a.pt", b"w"), card(0.5))
        assert (
            reg.list_versions("m") == []
            and server.client().list_objects_v2(Bucket="no-conditions").get("KeyCount") == 0
        )


def test_cli_list_show_promote_download(s3_env, tmp_path):
    check_cli(s3_env, tmp_path)
