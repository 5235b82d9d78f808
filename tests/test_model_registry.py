import multiprocessing as mp

import pytest

from pipelines.registry.local import LocalModelRegistry, RegistryError


def make_checkpoint(path, payload: bytes):
    path.write_bytes(payload)
    return path


def test_versions_are_immutable_numbered_and_verified(tmp_path):
    reg = LocalModelRegistry(tmp_path / "reg")
    v1 = reg.register("m", make_checkpoint(tmp_path / "a.pt", b"one"), {"metrics": {"acc": 0.5}})
    v2 = reg.register("m", make_checkpoint(tmp_path / "b.pt", b"two"), {"metrics": {"acc": 0.6}})
    assert (v1.version, v2.version) == (1, 2)
    assert reg.list_versions("m") == [1, 2] and reg.list_models() == ["m"]
    got = reg.get("m")
    assert got.version == 2 and got.card["metrics"] == {"acc": 0.6} and got.checkpoint.read_bytes() == b"two"
    assert len(got.card["sha256"]) == 64


def test_a_tampered_checkpoint_is_refused(tmp_path):
    reg = LocalModelRegistry(tmp_path)
    v = reg.register("m", make_checkpoint(tmp_path / "a.pt", b"weights"), {})
    v.checkpoint.write_bytes(b"evil")
    with pytest.raises(RegistryError, match="does not match the registry entry"):
        reg.get("m", 1)


def _register_many(root, tag, n):
    reg = LocalModelRegistry(root)
    import pathlib

    src = pathlib.Path(root).parent / f"{tag}.pt"
    src.write_bytes(tag.encode() * 1000)
    for _ in range(n):
        reg.register("m", src, {"who": tag})


def test_concurrent_registrations_from_two_processes_lose_nothing(tmp_path):
    root = tmp_path / "reg"
    ctx = mp.get_context("spawn")
    procs = [ctx.Process(target=_register_many, args=(str(root), tag, 10)) for tag in ("a", "b")]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
        assert p.exitcode == 0
    reg = LocalModelRegistry(root)
    assert reg.list_versions("m") == list(range(1, 21))
    who = [reg.get("m", v).card["who"] for v in range(1, 21)]
    assert who.count("a") == 10 and who.count("b") == 10
    assert not [p for p in (root / "m" / "versions").iterdir() if p.name.startswith(".staging")]


# -- the shared interface, aliases, promotion, CLI (local backend) ------------------------------

from registry_helpers import (  # noqa: E402
    card,
    check_cli,
    check_concurrent_promotions,
    check_promotion,
    check_register_get_list_download,
    checkpoint,
    register_then_crash_before_rename,
    run_processes,
)

from pipelines.registry.local import decide_promotion, open_registry  # noqa: E402


def test_open_registry_picks_the_backend(tmp_path):
    assert isinstance(open_registry(tmp_path / "reg"), LocalModelRegistry)
    with pytest.raises(RegistryError, match="unsupported registry location"):
        open_registry("gs://bucket/models")


def test_register_get_list_download(tmp_path):
    check_register_get_list_download(str(tmp_path / "reg"), tmp_path)


def test_promote_moves_the_alias_only_when_the_metric_is_better(tmp_path):
    check_promotion(str(tmp_path / "reg"), tmp_path)


def test_aliases_resolve_and_bad_ones_are_refused(tmp_path):
    reg = LocalModelRegistry(tmp_path / "reg")
    reg.register("m", checkpoint(tmp_path / "a.pt", b"a"), card(0.5))
    reg.set_alias("m", "staging", 1)
    assert reg.get("m", "staging").version == 1 and reg.get("m", "latest").version == 1
    with pytest.raises(RegistryError, match="no version 4; versions: \\[1\\]"):
        reg.set_alias("m", "staging", 4)
    with pytest.raises(RegistryError, match="invalid alias"):
        reg.set_alias("m", "2", 1)  # would be ambiguous with a version number
    with pytest.raises(RegistryError, match="no alias 'production'"):
        reg.get("m", "production")
    with pytest.raises(RegistryError, match="invalid model name"):
        reg.register("../escape", tmp_path / "a.pt", {})


def test_promotion_direction_comes_from_the_cards():
    low, high = card(0.1, task="regression", primary_metric="rmse"), card(0.2, task="regression", primary_metric="rmse")
    for c, rmse in ((low, 0.1), (high, 0.2)):
        c.pop("mode")  # cards written before "mode" was recorded: the task's primary metric decides
        c["metrics"]["test/rmse"] = rmse
    assert decide_promotion("m", "production", 2, low, 1, high).promoted  # rmse: lower is better
    assert not decide_promotion("m", "production", 1, high, 2, low).promoted
    tie = decide_promotion("m", "production", 2, card(0.5), 1, card(0.5))
    assert not tie.promoted and "=" in tie.reason
    with pytest.raises(RegistryError, match="no test metric 'iou'"):
        decide_promotion("m", "production", 2, card(0.5), 1, card(0.5), primary_metric="iou", mode="max")
    with pytest.raises(RegistryError, match="higher or lower"):
        decide_promotion("m", "production", 2, card(0.5, task=None), 1, card(0.4), primary_metric="f1")
    assert (
        decide_promotion("m", "production", 2, card(0.5), 1, card(0.4), primary_metric="f1", mode="min").promoted
        is False
    )


def test_concurrent_promotions_from_two_processes_lose_no_update(tmp_path):
    check_concurrent_promotions(str(tmp_path / "reg"), tmp_path, aliases_each=20)


def test_a_registration_killed_before_publishing_leaves_no_version(tmp_path):
    location = str(tmp_path / "reg")
    reg = LocalModelRegistry(location)
    reg.register("m", checkpoint(tmp_path / "a.pt", b"good"), card(0.5))
    reg.set_alias("m", "production", 1)
    assert run_processes(
        register_then_crash_before_rename, [(location, str(checkpoint(tmp_path / "b.pt", b"new")))]
    ) == [-9]
    assert reg.list_versions("m") == [1] and reg.aliases("m") == {"production": 1}
    assert reg.get("m").checkpoint.read_bytes() == b"good"
    assert reg.register("m", tmp_path / "b.pt", card(0.6)).version == 2  # the leftover staging dir is in nobody's way


def test_cli_list_show_promote_download(tmp_path):
    check_cli(str(tmp_path / "reg"), tmp_path)
