"""Which Ray settings a stage applies: local-only ones on an instance of its own or the flow's, none on a cluster."""

import pytest

from pipelines.training.cluster import LOCAL_RAY_ENV, OWNED_FLAG, RAY_ENV, ray_env


@pytest.mark.parametrize(
    "address, owned, local",
    [
        (None, None, True),  # `dvc repro` alone: the stage starts its own instance
        ("127.0.0.1:6379", "1", True),  # the flow's own instance for the run
        ("127.0.0.1:6379", None, False),  # a cluster the user pointed RAY_ADDRESS at
    ],
)
def test_local_only_ray_settings_apply_to_local_instances_only(monkeypatch, address, owned, local):
    for key in {**RAY_ENV, **LOCAL_RAY_ENV}:
        monkeypatch.delenv(key, raising=False)
    if owned:
        monkeypatch.setenv(OWNED_FLAG, owned)
    else:
        monkeypatch.delenv(OWNED_FLAG, raising=False)
    env = ray_env(address)
    assert set(RAY_ENV) <= set(env)
    assert (set(LOCAL_RAY_ENV) <= set(env)) is local
    if not local:
        assert not set(LOCAL_RAY_ENV) & set(env)


def test_the_users_own_ray_settings_win(monkeypatch):
    monkeypatch.setenv("RAY_TRAIN_HEALTH_CHECK_INTERVAL_S", "2")
    assert ray_env(None)["RAY_TRAIN_HEALTH_CHECK_INTERVAL_S"] == "2"
