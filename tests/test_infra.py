"""The cluster, deployment and container configs under infra/ are checked offline.

Each config is parsed and checked against the schema of the tool that reads it,
where that schema is installed: Ray's cluster-launcher schema, Prefect's
prefect.yaml model, work-pool and parameter validation. The KubeRay CRDs and the
Dockerfile have no schema here, so those tests check their structure directly.
Every file, module and flow that a config names must exist. The GPU profile
(infra/cluster-profile.yaml) must validate as pipeline params, and every cluster
must have room for its Ray Train workers.
"""

from __future__ import annotations

import copy
import importlib.util
import inspect
import json
import math
import re
import shlex
import shutil
import subprocess
from fnmatch import fnmatchcase
from pathlib import Path, PurePosixPath
from urllib.parse import urlparse

import pytest
import yaml

from pipelines.config import ComputeParams as TrainParams
from pipelines.config import PipelineParams, load_params, validate_params
from tests.conftest import ROOT, project_env

INFRA = ROOT / "infra"
DOCKERFILE = INFRA / "Dockerfile"
RAY_CLUSTER = INFRA / "ray-cluster.yaml"
RAYCLUSTER = INFRA / "kuberay" / "raycluster.yaml"
RAYJOB = INFRA / "kuberay" / "rayjob.yaml"
RAYSERVICE = INFRA / "kuberay" / "rayservice.yaml"
PREFECT_YAML = INFRA / "prefect" / "prefect.yaml"
PROFILE = INFRA / "cluster-profile.yaml"
INFRA_README = INFRA / "README.md"

# vCPUs and GPUs of the AWS instance types the cluster launcher config uses (AWS docs).
INSTANCE_TYPES = {"m5.2xlarge": (8, 0), "g5.12xlarge": (48, 4)}


# ------------------------------------------------------------------ helpers


def load_yaml(path: Path):
    return yaml.safe_load(path.read_text())


def load_toml() -> dict:
    import tomllib

    return tomllib.loads((ROOT / "pyproject.toml").read_text())


def locked_version(package: str) -> str:
    for line in (ROOT / "constraints.txt").read_text().splitlines():
        name, sep, version = line.partition("==")
        if sep and name.strip().lower() == package:
            return version.strip()
    raise AssertionError(f"{package} is not pinned in constraints.txt")


def profile_overrides() -> list[str]:
    return load_yaml(PROFILE)["overrides"]


def gpu_params() -> PipelineParams:
    """params.yaml with the cluster profile's overrides, through the flow's own -S path."""
    from pipelines.orchestration.overrides import parse_overrides

    base = load_params(ROOT / "params.yaml").model_dump(mode="json")
    return validate_params(parse_overrides(profile_overrides(), base), str(PROFILE))


def worker_needs(train: TrainParams) -> tuple[float, float]:
    """CPUs and GPUs one Ray Train worker asks for (gpus_per_worker may not exist yet)."""
    gpus = float(getattr(train, "gpus_per_worker", 1)) if train.use_gpu else 0.0
    return train.cpus_per_worker, gpus


def workers_that_fit(nodes: list[tuple[int, float, float]], train: TrainParams, max_nodes: int | None = None) -> int:
    """How many Ray Train workers fit on nodes given as (count, CPUs, GPUs).

    Each worker is one placement-group bundle and a bundle lives on one node.
    `max_nodes` caps the number of nodes the autoscaler may start in all.
    """
    cpus, gpus = worker_needs(train)
    per_node = []
    for count, node_cpus, node_gpus in nodes:
        fit = math.floor(node_cpus / cpus + 1e-9)
        if gpus:
            fit = min(fit, math.floor(node_gpus / gpus + 1e-9))
        per_node += [fit] * count
    per_node.sort(reverse=True)
    if max_nodes is not None:
        per_node = per_node[:max_nodes]
    strategy = getattr(train, "placement_strategy", "PACK")
    if strategy == "STRICT_PACK":
        return max(per_node, default=0)
    if strategy == "STRICT_SPREAD":
        per_node = [min(fit, 1) for fit in per_node]
    return sum(per_node)


def dockerfile_instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) per instruction: continuation lines joined, comments dropped."""
    instructions, pending = [], ""
    for raw in DOCKERFILE.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):  # comments, parser directives, blank lines
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        full = pending + line
        pending = ""
        keyword, _, args = full.partition(" ")
        instructions.append((keyword.upper(), args.strip()))
    assert not pending, "Dockerfile ends inside a line continuation"
    return instructions


def docker_workdir() -> PurePosixPath:
    workdirs = [args for kw, args in dockerfile_instructions() if kw == "WORKDIR"]
    return PurePosixPath(workdirs[-1])


def dockerfile_copies() -> list[tuple[list[str], str]]:
    """(sources, destination) of each COPY/ADD from the build context."""
    copies = []
    for keyword, args in dockerfile_instructions():
        if keyword not in ("COPY", "ADD"):
            continue
        parts = json.loads(args) if args.startswith("[") else shlex.split(args)
        flags = [p for p in parts if p.startswith("--")]
        paths = [p for p in parts if not p.startswith("--")]
        if any(f.startswith("--from") for f in flags):
            continue  # from another build stage, not from the context
        copies.append((paths[:-1], paths[-1]))
    return copies


def dockerignore_patterns() -> list[str]:
    path = ROOT / ".dockerignore"
    lines = path.read_text().splitlines() if path.exists() else []
    return [line.strip() for line in lines if line.strip() and not line.strip().startswith("#")]


def dockerignored(rel: str, patterns: list[str]) -> bool:
    """Docker's rule: a path is left out if it or a parent matches; the last match wins."""
    parts = PurePosixPath(rel).parts
    excluded = False
    for pattern in patterns:
        negate = pattern.startswith("!")
        pattern = pattern.lstrip("!").strip("/")
        alternatives = {pattern, pattern[3:]} if pattern.startswith("**/") else {pattern}
        prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
        if any(fnmatchcase(prefix, alt) for prefix in prefixes for alt in alternatives):
            excluded = not negate
    return excluded


def python_modules(command: str) -> list[str]:
    return re.findall(r"python -m ([A-Za-z_][\w.]*)", command)


def assert_module_exists(module: str) -> None:
    assert importlib.util.find_spec(module) is not None, f"python -m {module}: no such module"


def flow_cli_args(tokens: list[str]) -> tuple[str | None, list[str]]:
    """The --workdir and the -S overrides of a `python -m pipelines.orchestration.flow ...` command."""
    workdir, overrides = None, []
    it = iter(tokens)
    for token in it:
        if token in ("-S", "--set"):
            overrides.append(next(it))
        elif token == "--workdir":
            workdir = next(it)
    return workdir, overrides


def quantity(value) -> float:
    """A Kubernetes quantity as a number: '44' -> 44, '500m' -> 0.5."""
    text = str(value)
    return float(text[:-1]) / 1000 if text.endswith("m") else float(text)


def kuberay_docs() -> dict[str, dict]:
    docs = [d for d in yaml.safe_load_all(RAYCLUSTER.read_text()) if d]
    by_kind = {d["kind"]: d for d in docs}
    assert len(by_kind) == len(docs), "one object of each kind expected"
    return by_kind


def pod_containers(template: dict) -> list[dict]:
    return template["spec"]["containers"]


def image_ref() -> str:
    return load_yaml(RAY_CLUSTER)["docker"]["image"]


def work_pools_in_readme() -> dict[str, tuple[str, Path]]:
    """Pool name -> (type, base job template) from the `prefect work-pool create` commands."""
    found = re.findall(
        r"prefect work-pool create (\S+) --type (\S+) --base-job-template (\S+)", INFRA_README.read_text()
    )
    return {name: (kind, ROOT / path) for name, kind, path in found}


def prefect_default_template(pool_type: str) -> dict:
    import prefect

    metadata = Path(prefect.__file__).parent / "server/api/collections_data/views/aggregate-worker-metadata.json"
    for workers in json.loads(metadata.read_text()).values():
        for worker in workers.values():
            if worker.get("type") == pool_type:
                return worker["default_base_job_configuration"]
    raise AssertionError(f"Prefect knows no work pool type {pool_type!r}")


def deployments() -> list[dict]:
    return load_yaml(PREFECT_YAML)["deployments"]


def deployment(name: str) -> dict:
    return next(d for d in deployments() if d["name"] == name)


# ------------------------------------------------------------------ the GPU profile


def test_cluster_profile_validates_as_pipeline_params():
    params = gpu_params()
    assert params.train.use_gpu, "the cluster profile is a GPU profile"
    assert params.train.storage_path.startswith("s3://"), "multi-node checkpoints need storage every node reaches"
    changed = {o.partition("=")[0] for o in profile_overrides()}
    assert changed <= {"train." + k for k in TrainParams.model_fields}, changed


def test_a_bad_profile_override_is_refused_naming_the_key():
    from pipelines.errors import PipelineInputError
    from pipelines.orchestration.overrides import parse_overrides

    with pytest.raises(PipelineInputError, match="train.num_workers"):
        validate_params(parse_overrides(["train.num_workers=0"], PipelineParams().model_dump(mode="json")))


# ------------------------------------------------------------------ Dockerfile


def test_dockerfile_parses_and_builds_from_the_locked_ray_and_python():
    instructions = dockerfile_instructions()
    known = {
        "FROM",
        "RUN",
        "CMD",
        "LABEL",
        "EXPOSE",
        "ENV",
        "ADD",
        "COPY",
        "ENTRYPOINT",
        "VOLUME",
        "USER",
        "WORKDIR",
        "ARG",
        "ONBUILD",
        "STOPSIGNAL",
        "HEALTHCHECK",
        "SHELL",
    }
    assert {kw for kw, _ in instructions} <= known
    first = next(kw for kw, _ in instructions if kw != "ARG")
    assert first == "FROM"
    base = next(args for kw, args in instructions if kw == "FROM")
    image, _, tag = base.partition(":")
    # Ray needs the same Ray and Python on every node and on the driver.
    assert image == "rayproject/ray"
    python = re.search(r">=(\d+)\.(\d+)", load_toml()["project"]["requires-python"])
    assert tag == f"{locked_version('ray')}-py{python[1]}{python[2]}-gpu", tag


def test_dockerfile_copies_existing_files_that_dockerignore_lets_through():
    patterns = dockerignore_patterns()
    for must_skip in (".git", ".venv", "data/ray_results", "data/registry", ".dvc/cache"):
        assert dockerignored(must_skip, patterns), f".dockerignore should leave out {must_skip}"
    copies = dockerfile_copies()
    assert copies
    for sources, _ in copies:
        for source in sources:
            assert (ROOT / source).exists(), f"COPY {source}: not in the repository"
            assert not dockerignored(source.rstrip("/"), patterns), f"COPY {source}: left out by .dockerignore"


def test_dockerfile_installs_the_project_with_the_lock_as_non_root():
    instructions = dockerfile_instructions()
    installs = [args for kw, args in instructions if kw == "RUN" and "pip install" in args]
    assert installs
    for args in installs:
        for command in args.split("&&"):
            if "pip install" in command:
                assert "-c constraints.txt" in command, f"unlocked install: {command.strip()}"
    # Everything `pip install .` reads is copied before it runs.
    project = load_toml()
    # The packages setuptools finds (pipelines*, models*: every subpackage too) are top-level folders.
    packages = {p.rstrip("*") for p in project["tool"]["setuptools"]["packages"]["find"]["include"]}
    needed = {"pyproject.toml", project["project"]["readme"], *packages}
    copied: set[str] = set()
    for kw, args in instructions:
        if kw == "COPY":
            copied |= {s.rstrip("/") for s in shlex.split(args)[:-1] if not s.startswith("--")}
        if kw == "RUN" and re.search(r"pip install .*-c constraints.txt \.(\s|$)", args):
            assert needed <= copied, f"copied only {sorted(copied)} before `pip install .`"
            break
    else:
        pytest.fail("no `pip install -c constraints.txt .` in the Dockerfile")
    users = [args for kw, args in instructions if kw == "USER"]
    assert users and users[-1] not in ("root", "0"), "the image must run as a non-root user"


def test_dockerfile_runs_the_flow_and_lets_ray_and_prefect_run_their_commands():
    instructions = dockerfile_instructions()
    assert not [a for kw, a in instructions if kw == "ENTRYPOINT"], (
        "an ENTRYPOINT would swallow the commands KubeRay, `ray up` and Prefect workers run"
    )
    cmd = json.loads([a for kw, a in instructions if kw == "CMD"][-1])  # exec form
    assert cmd[:3] == ["python", "-m", "pipelines.orchestration.flow"]
    assert_module_exists(cmd[2])
    workdir, _ = flow_cli_args(cmd[3:])
    assert workdir == str(docker_workdir())


def test_image_workspace_is_a_dvc_project_without_git(tmp_path):
    """Lay out what the Dockerfile copies, run its `dvc config` step, and ask DVC for the DAG."""
    from pipelines.orchestration.dvc_ops import stage_order

    app = tmp_path / "app"
    app.mkdir()
    workdir = docker_workdir()
    patterns = dockerignore_patterns()
    for sources, dest in dockerfile_copies():
        target_dir = app / PurePosixPath(workdir, dest).relative_to(workdir)
        for source in sources:
            src = ROOT / source
            if src.is_dir():
                shutil.copytree(
                    src,
                    target_dir,
                    dirs_exist_ok=True,
                    ignore=lambda d, names: [
                        n for n in names if dockerignored(str(Path(d, n).relative_to(ROOT)), patterns)
                    ],
                )
            else:
                dest_file = target_dir if not dest.endswith("/") else target_dir / src.name
                dest_file.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(src, dest_file)
    dvc_steps = [
        c.strip()
        for kw, a in dockerfile_instructions()
        if kw == "RUN"
        for c in a.split("&&")
        if c.strip().startswith("dvc ")
    ]
    assert dvc_steps, "the image must configure DVC to run without git"
    for step in dvc_steps:
        subprocess.run(step, shell=True, cwd=app, env=project_env(), check=True, capture_output=True)

    stages = {
        name: stage.get("do", stage) for name, stage in load_yaml(ROOT / "dvc.yaml")["stages"].items()
    }  # foreach stages
    datasets = list(load_yaml(ROOT / "params.yaml")["datasets"])
    assert stage_order(app, datasets) == [f"{name}@{ds}" for ds in datasets for name in stages]
    for name, stage in stages.items():
        for module in python_modules(stage["cmd"]):
            assert_module_exists(module)
        for dep in stage.get("deps", []):
            if not dep.startswith("data/"):
                assert (app / dep).exists(), f"stage {name} depends on {dep}, which the image lacks"


# ------------------------------------------------------------------ Ray cluster launcher (AWS)


def test_ray_cluster_config_passes_ray_up_validation():
    """The offline part of `ray up`: fill in the provider's defaults, validate against ray-schema.json."""
    from ray.autoscaler._private.util import prepare_config, validate_config

    config = load_yaml(RAY_CLUSTER)
    validate_config(prepare_config(copy.deepcopy(config)))

    broken = copy.deepcopy(config)
    broken["available_node_types"]["gpu_worker"]["resource"] = {"GPU": 4}  # misspelled key
    with pytest.raises(Exception, match="resource"):
        validate_config(prepare_config(broken))


def test_ray_cluster_node_resources_match_their_instance_types():
    config = load_yaml(RAY_CLUSTER)
    for name, node in config["available_node_types"].items():
        instance = node["node_config"]["InstanceType"]
        assert instance in INSTANCE_TYPES, f"{name}: add {instance}'s vCPUs and GPUs to INSTANCE_TYPES"
        cpus, gpus = INSTANCE_TYPES[instance]
        assert node["resources"].get("CPU", cpus) <= cpus, name
        assert node["resources"].get("GPU", gpus) <= gpus, name
    head = config["available_node_types"][config["head_node_type"]]
    start = " ".join(config["head_start_ray_commands"])
    declared = re.search(r"--num-cpus=(\d+)", start)
    if declared:  # the autoscaler's view of the head must match what `ray start` advertises
        assert head["resources"].get("CPU") == int(declared[1])


def test_ray_cluster_can_host_the_gpu_profile():
    config = load_yaml(RAY_CLUSTER)
    train = gpu_params().train
    nodes = []
    for name, node in config["available_node_types"].items():
        count = 1 if name == config["head_node_type"] else node.get("max_workers", config["max_workers"])
        cpus, gpus = INSTANCE_TYPES[node["node_config"]["InstanceType"]]
        nodes.append((count, node["resources"].get("CPU", cpus), node["resources"].get("GPU", gpus)))
    fits = workers_that_fit(nodes, train, max_nodes=config["max_workers"] + 1)
    assert fits >= train.num_workers, f"room for {fits} workers, the profile needs {train.num_workers}"


def test_ray_cluster_runs_the_image_with_shared_data_and_auth():
    config = load_yaml(RAY_CLUSTER)
    data = f"{docker_workdir()}/data"
    assert any(o.split(":")[-1] == data for o in config["docker"]["run_options"] if o.startswith("-v ")), (
        f"workers read the driver's {data}: mount shared storage there"
    )
    assert any("ray start --head" in c for c in config["head_start_ray_commands"])
    assert any("ray start --address=$RAY_HEAD_IP:6379" in c for c in config["worker_start_ray_commands"])
    for command in config["head_start_ray_commands"] + config["worker_start_ray_commands"]:
        if "ray start" in command:
            assert "RAY_AUTH_MODE=token" in command
    assert "~/.ray/auth_token" in config["file_mounts"]


# ------------------------------------------------------------------ KubeRay


def test_kuberay_cluster_is_well_formed():
    docs = kuberay_docs()
    cluster, pvc, account = docs["RayCluster"], docs["PersistentVolumeClaim"], docs["ServiceAccount"]
    assert cluster["apiVersion"] == "ray.io/v1"
    namespace = cluster["metadata"]["namespace"]
    assert {d["metadata"]["namespace"] for d in docs.values()} == {namespace}
    spec = cluster["spec"]
    assert spec["rayVersion"] == locked_version("ray")
    assert spec["enableInTreeAutoscaling"] is True
    assert spec["authOptions"]["mode"] == "token" and spec["authOptions"]["secretName"]
    assert "ReadWriteMany" in pvc["spec"]["accessModes"], "the data volume is mounted by many pods"

    head = spec["headGroupSpec"]["template"]
    ports = {p["name"]: p["containerPort"] for p in pod_containers(head)[0]["ports"]}
    assert {"gcs", "dashboard", "client"} <= set(ports)
    groups = spec["workerGroupSpecs"]
    assert groups
    data = f"{docker_workdir()}/data"
    for template, label in [(head, "head")] + [(g["template"], g["groupName"]) for g in groups]:
        pod = template["spec"]
        assert pod["serviceAccountName"] == account["metadata"]["name"], label
        volumes = {v["name"]: v for v in pod.get("volumes", [])}
        for container in pod["containers"]:
            assert container["image"] == image_ref(), label
            mounts = {m["mountPath"]: m["name"] for m in container.get("volumeMounts", [])}
            assert set(mounts.values()) <= set(volumes), f"{label}: mounts an undeclared volume"
            assert data in mounts, f"{label}: the shared data volume must be at {data}"
            claim = volumes[mounts[data]]["persistentVolumeClaim"]["claimName"]
            assert claim == pvc["metadata"]["name"], label
    for group in groups:
        assert 0 <= group["minReplicas"] <= group["replicas"] <= group["maxReplicas"], group["groupName"]
        for container in pod_containers(group["template"]):
            limits, requests = container["resources"]["limits"], container["resources"]["requests"]
            if "nvidia.com/gpu" in limits:
                assert requests.get("nvidia.com/gpu", limits["nvidia.com/gpu"]) == limits["nvidia.com/gpu"]
                mounts = {m["mountPath"] for m in container["volumeMounts"]}
                assert "/dev/shm" in mounts, "NCCL needs more /dev/shm than the 64 MB default"


def test_kuberay_cluster_can_host_the_gpu_profile():
    spec = kuberay_docs()["RayCluster"]["spec"]
    train = gpu_params().train

    def node(group: dict, count: int) -> tuple[int, float, float]:
        params = group.get("rayStartParams", {})
        limits = pod_containers(group["template"])[0]["resources"]["limits"]
        cpus = quantity(params.get("num-cpus", limits.get("cpu", 0)))
        gpus = quantity(params.get("num-gpus", limits.get("nvidia.com/gpu", 0)))
        return count, cpus, gpus

    nodes = [node(spec["headGroupSpec"], 1)] + [node(g, g["maxReplicas"]) for g in spec["workerGroupSpecs"]]
    fits = workers_that_fit(nodes, train)
    assert fits >= train.num_workers, f"room for {fits} workers, the profile needs {train.num_workers}"


def test_rayjob_runs_the_flow_with_the_profile_on_the_cluster():
    job = load_yaml(RAYJOB)
    cluster = kuberay_docs()["RayCluster"]
    assert (job["apiVersion"], job["kind"]) == ("ray.io/v1", "RayJob")
    assert job["metadata"]["namespace"] == cluster["metadata"]["namespace"]
    spec = job["spec"]
    assert spec["clusterSelector"] == {"ray.io/cluster": cluster["metadata"]["name"]}
    assert "rayClusterSpec" not in spec and not spec.get("shutdownAfterJobFinishes"), (
        "the job runs on the shared RayCluster: it must neither define nor delete one"
    )
    tokens = shlex.split(spec["entrypoint"])
    assert tokens[:3] == ["python", "-m", "pipelines.orchestration.flow"]
    assert_module_exists(tokens[2])
    workdir, overrides = flow_cli_args(tokens[3:])
    assert workdir == str(docker_workdir())
    assert overrides == profile_overrides()
    assert "RAY_ADDRESS" not in spec["entrypoint"], "Ray Jobs set RAY_ADDRESS for the entrypoint"


def test_rayservice_serves_registered_models_with_the_v1_routes_on_the_image():
    """The RayService's Serve config validates against Ray Serve's own schema; each application's builder
    builds from its args; routes are the v1 protocol's; its pods run the image with the registry's volume."""
    from ray.serve import Application
    from ray.serve.schema import ServeDeploySchema

    from pipelines.serving.protocol import MODELS_PREFIX, predict_route

    service = load_yaml(RAYSERVICE)
    docs = kuberay_docs()
    assert (service["apiVersion"], service["kind"]) == ("ray.io/v1", "RayService")
    assert service["metadata"]["namespace"] == docs["RayCluster"]["metadata"]["namespace"]
    config = ServeDeploySchema.model_validate(yaml.safe_load(service["spec"]["serveConfigV2"]))
    assert config.http_options.host == "0.0.0.0"
    models, index = [], None
    for app in config.applications:
        module, _, attr = app.import_path.partition(":")
        built = getattr(importlib.import_module(module), attr)(app.args)
        assert isinstance(built, Application), app.name
        if attr == "index_app":
            index = app
            continue
        name = app.args["ref"].partition(":")[0]
        assert app.name == name and app.route_prefix == predict_route(name), app.name
        models.append((name, app.args))
    assert index is not None and index.route_prefix == MODELS_PREFIX
    assert index.args["models"] == [name for name, _ in models]

    cluster = service["spec"]["rayClusterConfig"]
    assert cluster["rayVersion"] == locked_version("ray")
    head = cluster["headGroupSpec"]
    ports = {p["name"]: p["containerPort"] for p in pod_containers(head["template"])[0]["ports"]}
    assert ports["serve"] == config.http_options.port
    pvc, account = docs["PersistentVolumeClaim"], docs["ServiceAccount"]
    data = f"{docker_workdir()}/data"
    cpus = 0.0
    for group, count in [(head, 1)] + [(g, g["maxReplicas"]) for g in cluster["workerGroupSpecs"]]:
        pod = group["template"]["spec"]
        assert pod["serviceAccountName"] == account["metadata"]["name"]
        volumes = {v["name"]: v for v in pod["volumes"]}
        for container in pod["containers"]:
            assert container["image"] == image_ref()
            mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
            assert volumes[mounts[data]]["persistentVolumeClaim"]["claimName"] == pvc["metadata"]["name"]
            cpus += count * quantity(container["resources"]["limits"]["cpu"])
    for name, args in models:
        if not args["registry"].startswith("s3://"):
            assert args["registry"].startswith(data + "/"), f"{name}: the registry must be on the shared data volume"
    wanted = sum(args.get("replicas", 1) * args.get("cpus", 0.25) for _, args in models)
    assert wanted <= cpus, f"the replicas want {wanted} CPUs, the cluster has at most {cpus}"


# ------------------------------------------------------------------ Prefect


def test_prefect_yaml_matches_prefects_own_schema():
    from prefect.cli.deploy._models import DeploymentConfig, PrefectYamlModel, WorkPoolConfig

    raw = load_yaml(PREFECT_YAML)
    PrefectYamlModel.model_validate(raw)

    def known(model) -> set[str]:  # the model ignores unknown keys: refuse them here
        return {name for name in model.model_fields} | {f.alias for f in model.model_fields.values() if f.alias}

    assert set(raw) <= known(PrefectYamlModel)
    names = [d["name"] for d in raw["deployments"]]
    assert len(names) == len(set(names)) == 2
    for dep in raw["deployments"]:
        assert set(dep) <= known(DeploymentConfig), dep["name"]
        assert set(dep["work_pool"]) <= known(WorkPoolConfig), dep["name"]


def test_deployments_load_their_flow_and_pass_the_profile(monkeypatch):
    from prefect.flows import load_flow_from_entrypoint
    from prefect.utilities.callables import parameter_schema
    from prefect.utilities.schema_tools import validate

    from pipelines.orchestration.hooks import FLOW_NAME

    monkeypatch.chdir(ROOT)  # `prefect deploy` resolves entrypoints from the repository root
    expected = gpu_params()
    for dep in deployments():
        flow = load_flow_from_entrypoint(dep["entrypoint"], use_placeholder_flow=False)
        assert flow.name == FLOW_NAME and callable(flow.fn)
        schema = parameter_schema(flow).model_dump_for_openapi()
        validate(dep["parameters"], schema, raise_on_error=True, preprocess=True)
        params = validate_params(dep["parameters"]["params"], f"{dep['name']}.parameters.params")
        assert params == expected, f"{dep['name']}: parameters differ from params.yaml + the cluster profile"


def test_deployment_schedules_are_valid_nightly_crons():
    from prefect.cli.deploy._models import RawScheduleConfig
    from prefect.client.schemas.schedules import CronSchedule

    for dep in deployments():
        assert dep["schedules"], dep["name"]
        for raw in dep["schedules"]:
            RawScheduleConfig.model_validate(raw)
            CronSchedule(cron=raw["cron"], timezone=raw.get("timezone"))
            minute, hour, day, month, weekday = raw["cron"].split()
            assert minute.isdigit() and hour.isdigit() and (day, month, weekday) == ("*", "*", "*"), (
                f"{dep['name']}: {raw['cron']!r} is not once a night"
            )


def test_work_pool_templates_are_valid_for_their_pool_type():
    from prefect.server.schemas.actions import WorkPoolCreate

    pools = work_pools_in_readme()
    assert {d["work_pool"]["name"] for d in deployments()} <= set(pools), (
        "a deployment names a pool the README never creates"
    )
    for name, (pool_type, path) in pools.items():
        template = json.loads(path.read_text())
        WorkPoolCreate(name=name, type=pool_type, base_job_template=template)  # Prefect's own check
        default = prefect_default_template(pool_type)
        # The worker of this type reads these fields: the template must keep all of them.
        assert set(template["job_configuration"]) == set(default["job_configuration"]), name
        assert set(default["variables"]["properties"]) <= set(template["variables"]["properties"]), name
        defaults = {k: v.get("default") for k, v in template["variables"]["properties"].items()}
        assert defaults["image"] == image_ref(), name

    # A placeholder without a declared variable is refused, so the check above bites.
    k8s_type, k8s_path = pools[deployment("kuberay-gpu")["work_pool"]["name"]]
    broken = json.loads(k8s_path.read_text())
    del broken["variables"]["properties"]["data_claim"]
    with pytest.raises(ValueError, match="data_claim"):
        WorkPoolCreate(name="broken", type=k8s_type, base_job_template=broken)


def test_job_variables_fit_their_work_pool():
    from prefect.utilities.schema_tools import validate

    pools = work_pools_in_readme()
    for dep in deployments():
        _, path = pools[dep["work_pool"]["name"]]
        variables = json.loads(path.read_text())["variables"]
        job_variables = dep["work_pool"]["job_variables"]
        assert set(job_variables) <= set(variables["properties"]), dep["name"]
        validate(job_variables, variables, raise_on_error=True, ignore_required=True)
        assert job_variables["image"] == image_ref(), dep["name"]


def test_kuberay_deployment_reaches_the_cluster_with_data_and_token():
    from prefect.utilities.templating import apply_values

    dep = deployment("kuberay-gpu")
    pool_type, path = work_pools_in_readme()[dep["work_pool"]["name"]]
    assert pool_type == "kubernetes"
    template = json.loads(path.read_text())
    defaults = {k: v.get("default") for k, v in template["variables"]["properties"].items()}
    job_variables = {**defaults, **dep["work_pool"]["job_variables"]}
    docs = kuberay_docs()
    cluster = docs["RayCluster"]
    namespace = cluster["metadata"]["namespace"]

    address = urlparse(job_variables["env"]["RAY_ADDRESS"])
    head = pod_containers(cluster["spec"]["headGroupSpec"]["template"])[0]
    client_port = next(p["containerPort"] for p in head["ports"] if p["name"] == "client")
    assert address.scheme == "ray", "a pod outside the Ray cluster joins it through Ray Client"
    assert address.hostname == f"{cluster['metadata']['name']}-head-svc.{namespace}.svc.cluster.local"
    assert address.port == client_port

    # The Job the worker would create (the template filled in as the worker does) mounts
    # the cluster's data volume where the Ray pods have it, and the cluster's auth token
    # where RAY_AUTH_TOKEN_PATH points.
    job = apply_values(template["job_configuration"], job_variables)["job_manifest"]
    assert job["metadata"]["namespace"] == namespace
    pod = job["spec"]["template"]["spec"]
    assert pod["serviceAccountName"] == docs["ServiceAccount"]["metadata"]["name"]
    volumes = {v["name"]: v for v in pod["volumes"]}
    mounts = {m["mountPath"]: m["name"] for m in pod["containers"][0]["volumeMounts"]}
    workdir = str(docker_workdir())
    data = volumes[mounts[f"{workdir}/data"]]
    assert data["persistentVolumeClaim"]["claimName"] == docs["PersistentVolumeClaim"]["metadata"]["name"]
    token_path = PurePosixPath(job_variables["env"]["RAY_AUTH_TOKEN_PATH"])
    assert token_path.name == "auth_token"
    token = volumes[mounts[str(token_path.parent)]]
    assert token["secret"]["secretName"] == cluster["spec"]["authOptions"]["secretName"]
    assert job_variables["env"]["RAY_AUTH_MODE"] == "token"

    # Code and data paths are the image's, as on the Ray pods.
    steps = dep["pull"]
    assert steps == [{"prefect.deployments.steps.set_working_directory": {"directory": workdir}}]
    assert dep["parameters"]["workdir"] == workdir


def test_pull_steps_name_real_prefect_steps():
    from prefect.utilities.importtools import import_object

    raw = load_yaml(PREFECT_YAML)
    for steps in [raw.get("pull") or []] + [d.get("pull") or [] for d in raw["deployments"]]:
        for step in steps:
            ((name, kwargs),) = step.items()
            fn = import_object(name)
            arguments = {k: v for k, v in (kwargs or {}).items() if k not in ("id", "requires")}
            inspect.signature(fn).bind(**arguments)


# ------------------------------------------------------------------ infra/README.md


def test_infra_readme_names_real_files_modules_and_the_image():
    text = INFRA_README.read_text()
    paths = set(re.findall(r"(?<![\w/.-])((?:infra|pipelines|tests)/[\w./-]*\w)", text))
    assert {
        "infra/Dockerfile",
        "infra/ray-cluster.yaml",
        "infra/kuberay/raycluster.yaml",
        "infra/kuberay/rayjob.yaml",
        "infra/kuberay/rayservice.yaml",
        "infra/prefect/prefect.yaml",
    } <= paths
    for path in paths:
        assert (ROOT / path.split(":")[0]).exists(), f"infra/README.md names {path}, which does not exist"
    for module in python_modules(text):
        assert_module_exists(module)
    assert image_ref() in text
    for override in profile_overrides():
        assert override in text, f"infra/README.md should show the profile override {override}"
