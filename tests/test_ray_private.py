"""The private parts of Ray Train this project uses (pipelines/training/ray_private.py) are still in the installed Ray.

When an upgrade of Ray removes or renames one, this fails naming it, before any training run does."""

import subprocess
import sys

import pytest

from pipelines.training import ray_private
from tests.conftest import ROOT


def test_every_private_name_used_is_in_the_installed_ray():
    gone = ray_private.missing()
    assert not gone, (
        f"the installed Ray lacks {', '.join(gone)}: pipelines/training/ray_private.py uses them "
        "(see its docstring for what each saves); adapt it to this Ray, or pin the Ray it was written for"
    )


def test_the_torch_backend_config_pickles_by_name_and_the_module_imports_no_ray():
    """A controller unpickles the config by module and name; Ray's worker setup hook imports the module (cheap)."""
    import pickle

    config = ray_private.torch_config("gloo")
    assert type(pickle.loads(pickle.dumps(config))) is type(config)
    assert type(config).__module__ == "pipelines.training.ray_private" and config.to_dict()["backend"] == "gloo"
    code = "import sys, pipelines.training.ray_logging; print('ray' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"


def test_ray_and_the_project_use_one_lightning_package():
    """Ray's RayDDPStrategy comes from `lightning` whenever it is installed; a `pytorch_lightning` Trainer would
    refuse it ("invalid strategy"). The project imports Lightning only as `lightning.pytorch`."""
    from lightning.pytorch.strategies import DDPStrategy
    from ray.train.lightning import RayDDPStrategy

    assert issubclass(RayDDPStrategy, DDPStrategy)
    sources = [p for folder in ("pipelines", "models", "bench") for p in (ROOT / folder).rglob("*.py")]
    offenders = [str(p.relative_to(ROOT)) for p in sources if "pytorch_lightning" in p.read_text()]
    assert not offenders, f"import lightning.pytorch, not pytorch_lightning, in {offenders}"


@pytest.mark.slow
def test_a_worker_group_fit_starts_ray_trains_autoscaling_coordinator_before_its_controller_asks(ray_instance):
    """`RayWorkerGroup.driving()` creates the named, detached actor Ray Train's controller looks up, with no fit yet."""
    import ray
    from ray.data._internal.cluster_autoscaler.default_autoscaling_coordinator import (
        get_or_create_autoscaling_coordinator,
    )

    from pipelines.training.runtime import RayWorkerGroup

    with pytest.raises(ValueError):  # a fresh instance: none yet
        ray.get_actor("AutoscalingCoordinator", namespace="AutoscalingCoordinator")
    with RayWorkerGroup().driving():
        started = ray.get_actor("AutoscalingCoordinator", namespace="AutoscalingCoordinator")
    assert get_or_create_autoscaling_coordinator()._actor_id == started._actor_id  # the one Ray Train will use
