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
    promote_then_crash_before_alias_replace,
    publish_then_crash_before_alias,
    register_and_promote_with_umask,
    register_then_crash_before_rename,
    register_then_crash_mid_copy,
    run_processes,
)

from pipelines.registry.local import open_registry  # noqa: E402
from pipelines.registry.promotion import decide_promotion  # noqa: E402


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
    assert not list((tmp_path / "reg" / "m" / "versions").glob(".staging-*"))  # and it was swept


def test_a_registration_killed_mid_copy_leaves_a_partial_file_the_next_one_sweeps(tmp_path):
    location = str(tmp_path / "reg")
    versions = tmp_path / "reg" / "m" / "versions"
    src = checkpoint(tmp_path / "a.pt", b"model bytes" * 100)
    assert run_processes(register_then_crash_mid_copy, [(location, str(src))]) == [-9]
    partial = [p for p in versions.glob(".staging-*/model.pt")]
    assert partial and partial[0].stat().st_size == 1  # what a kill inside the write leaves
    reg = LocalModelRegistry(location)
    assert reg.list_versions("m") == []
    assert reg.register("m", src, card(0.5)).version == 1
    assert sorted(p.name for p in versions.iterdir()) == ["v1"]


def test_publish_finds_the_version_a_killed_register_published_instead_of_copying_it(tmp_path):
    """Killed after publishing and before the alias moved: the re-run promotes that version, not a copy of it."""
    location = str(tmp_path / "reg")
    src = checkpoint(tmp_path / "a.pt", b"trained")
    assert run_processes(publish_then_crash_before_alias, [(location, str(src))]) == [-9]
    reg = LocalModelRegistry(location)
    assert reg.list_versions("m") == [1] and reg.aliases("m") == {}
    version, created = reg.publish("m", src, card(0.99), "digits")
    assert (version.version, created) == (1, False)
    assert reg.promote("m", version.version).promoted and reg.aliases("m") == {"production": 1}
    # The same checkpoint trained on other data, or another checkpoint, is a new version.
    other_data = card(0.99, lineage={"data": {"source": "sklearn:other"}})
    assert reg.publish("m", src, other_data, "digits")[0].version == 2
    assert reg.publish("m", checkpoint(tmp_path / "b.pt", b"retrained"), card(0.99), "digits")[0].version == 3


def test_an_alias_write_killed_before_its_rename_keeps_the_old_aliases_and_its_temp_file_is_swept(tmp_path):
    location = str(tmp_path / "reg")
    reg = LocalModelRegistry(location)
    for payload in (b"one", b"two"):
        reg.register("m", checkpoint(tmp_path / "a.pt", payload), card(0.5))
    reg.set_alias("m", "production", 1)
    assert run_processes(promote_then_crash_before_alias_replace, [(location, 2)]) == [-9]
    model = tmp_path / "reg" / "m"
    assert reg.aliases("m") == {"production": 1} and list(model.glob(".aliases.json.*.tmp"))
    reg.set_alias("m", "staging", 2)
    assert reg.aliases("m") == {"production": 1, "staging": 2} and not list(model.glob(".aliases.json.*.tmp"))


def test_a_shared_registry_follows_the_umask(tmp_path):
    """umask 002 (a team's shared volume): every file and folder a registration writes is group-writable."""
    location = str(tmp_path / "reg")
    src = checkpoint(tmp_path / "a.pt", b"trained")
    assert run_processes(register_and_promote_with_umask, [(location, str(src), 0o002)]) == [0]
    model = tmp_path / "reg" / "m"
    modes = {p.relative_to(model).as_posix(): p.stat().st_mode & 0o777 for p in [model, *model.rglob("*")]}
    assert modes.pop(".aliases.lock") == 0o664 and modes.pop(".") == 0o775
    assert modes == {
        "aliases.json": 0o664,
        "versions": 0o775,
        "versions/v1": 0o775,
        "versions/v1/model.pt": 0o664,
        "versions/v1/card.json": 0o664,
    }, modes


def test_a_name_holds_one_kind_of_model(tmp_path):
    from pipelines.registry.model_line import ModelLineMismatch

    reg = LocalModelRegistry(tmp_path / "reg")
    classifier = {
        "modality": "table",
        "task": "binary",
        "input_shape": [30],
        "classes": [0, 1],
        "inputs": [{"name": "mean radius", "type": "number"}],
    }
    regression = {
        "modality": "table",
        "task": "regression",
        "input_shape": [10],
        "inputs": [{"name": "age", "type": "number"}],
    }
    reg.publish("m", checkpoint(tmp_path / "a.pt", b"one"), card(0.9, signature=classifier), "tabular")
    with pytest.raises(
        ModelLineMismatch,
        match=r"model name 'm' holds v1 of binary on a table of 1 columns .*"
        r"this run would register regression on a table .*-S datasets.tabular.register.model_name=",
    ):
        reg.publish("m", checkpoint(tmp_path / "b.pt", b"two"), card(0.9, signature=regression), "tabular")
    assert reg.list_versions("m") == [1]
    wider = {**classifier, "input_shape": [31]}  # another preprocessing of the same columns is the same line
    assert reg.publish("m", checkpoint(tmp_path / "c.pt", b"three"), card(0.9, signature=wider), "tabular")[1]


def test_cli_list_show_promote_download(tmp_path):
    check_cli(str(tmp_path / "reg"), tmp_path)
