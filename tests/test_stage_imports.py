"""Stages that do not train stay cheap: evaluate, register and predict import no Lightning and no Ray,
and the model registry learns a metric's direction without torch."""

import subprocess
import sys

import pytest

HEAVY = ("pytorch_lightning", "lightning", "ray")


def imported_after(code: str) -> set[str]:
    """Top-level modules a fresh interpreter holds after running `code`."""
    probe = code + "\nimport sys\nprint(' '.join(sorted({m.split('.')[0] for m in sys.modules})))"
    proc = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    return set(proc.stdout.split())


@pytest.mark.parametrize(
    "code",
    [
        # Everything evaluate needs to score a checkpoint: the stage, the families and the weights loader.
        "import pipelines.stages.evaluate, models.checkpoint, models.tasks; import models; models.list_models()",
        "import pipelines.stages.register, pipelines.registry.cli",
        "import pipelines.predict; import models; models.list_models()",
    ],
)
def test_evaluate_register_and_predict_import_no_lightning_or_ray(code):
    assert not imported_after(code) & set(HEAVY)


def test_the_registry_and_the_task_table_need_no_torch():
    loaded = imported_after(
        "import pipelines.registry.local, models.task_kinds\n"
        "assert models.task_kinds.TASKS['next_word'].metric_mode('test/perplexity') == 'min'"
    )
    assert "torch" not in loaded and not loaded & set(HEAVY)
