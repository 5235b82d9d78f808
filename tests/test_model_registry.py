import json
import multiprocessing as mp

import pytest

from pipelines.model_registry import LocalModelRegistry, RegistryError


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
