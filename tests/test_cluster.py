"""Every file in cluster/ is loaded and checked against what consumes it: the mrag CLI and config,
the Serve application, Ray's own CLIs and launcher schema, and the node groups of the cluster each
workload is deployed on (custom resource names, GPU, CPU and memory asks, autoscaling maxima).

No Ray cluster is started: a wrong resource name or a GPU ask no node group can meet would
otherwise show only as a job or a replica pending forever on a real cluster.
"""

from __future__ import annotations

import importlib.util
import json
import re
import shlex
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml

from mrag.cli import build_parser
from mrag.config import MragConfig, config_from_args, load_config
from mrag.errors import ConfigError

CLUSTER = Path(__file__).resolve().parent.parent / "cluster"
REPO = CLUSTER.parent
#: The custom resource every GPU node group declares, one per node (cluster/README.md).
GPU_NODE = "gpu_node"
#: Share of a node's memory Ray keeps for the object store by default; tasks and actors can
#: reserve the rest.
_OBJECT_STORE_SHARE = 0.3
_QUANTITY_UNITS = {"": 1.0, "m": 1e-3, "Ki": 2.0**10, "Mi": 2.0**20, "Gi": 2.0**30, "Ti": 2.0**40}


def _load(name: str) -> Any:
    return yaml.safe_load((CLUSTER / name).read_text())


@dataclass(frozen=True)
class NodeGroup:
    """What one node of a group offers Ray, and how many such nodes the autoscaler may start."""

    name: str
    cpus: float
    gpus: float
    memory_bytes: float | None  # None: the file does not say (the launcher detects it)
    resources: dict[str, float]  # custom resources
    min_nodes: int
    max_nodes: int

    def amount(self, resource: str) -> float:
        return self.gpus if resource == "GPU" else self.resources.get(resource, 0.0)


@dataclass(frozen=True)
class Ask:
    """What one task, actor or replica of a stage asks Ray for, and how many may run at once."""

    stage: str
    cpus: float
    gpus: float
    max_count: int
    memory_bytes: float = 0.0
    resources: dict[str, float] = field(default_factory=dict)

    def fits(self, group: NodeGroup) -> bool:
        usable_memory = (
            None if group.memory_bytes is None else group.memory_bytes * (1 - _OBJECT_STORE_SHARE)
        )
        return (
            self.cpus <= group.cpus
            and self.gpus <= group.gpus
            and (usable_memory is None or self.memory_bytes <= usable_memory)
            and all(amount <= group.resources.get(r, 0) for r, amount in self.resources.items())
        )


def _quantity(value: str | float) -> float:
    """A Kubernetes quantity (``"16"``, ``"500m"``, ``"64Gi"``) as a number."""
    match = re.fullmatch(r"([0-9.]+)([A-Za-z]*)", str(value))
    assert match and match.group(2) in _QUANTITY_UNITS, f"unsupported quantity {value!r}"
    return float(match.group(1)) * _QUANTITY_UNITS[match.group(2)]


def _kuberay_group(name: str, group: dict, min_nodes: int, max_nodes: int) -> NodeGroup:
    params = group.get("rayStartParams") or {}
    (container,) = [
        c for c in group["template"]["spec"]["containers"] if c["name"].startswith("ray-")
    ]
    limits = container["resources"]["limits"]
    # rayStartParams.resources is a JSON object inside a quoted shell word: '"{\"gpu_node\": 1}"'.
    custom = json.loads(json.loads(params["resources"])) if "resources" in params else {}
    return NodeGroup(
        name=name,
        cpus=_quantity(params.get("num-cpus", limits["cpu"])),
        gpus=_quantity(params.get("num-gpus", limits.get("nvidia.com/gpu", 0))),
        memory_bytes=_quantity(limits["memory"]),
        resources={k: float(v) for k, v in custom.items()},
        min_nodes=min_nodes,
        max_nodes=max_nodes,
    )


def _kuberay_groups(cluster_spec: dict) -> list[NodeGroup]:
    groups = [_kuberay_group("head", cluster_spec["headGroupSpec"], 1, 1)]
    for group in cluster_spec["workerGroupSpecs"]:
        groups.append(
            _kuberay_group(group["groupName"], group, group["minReplicas"], group["maxReplicas"])
        )
    return groups


def _launcher_groups(config: dict) -> list[NodeGroup]:
    groups = []
    for name, node_type in config["available_node_types"].items():
        resources = dict(node_type["resources"])
        head = name == config["head_node_type"]
        groups.append(
            NodeGroup(
                name=name,
                cpus=float(resources.pop("CPU")),
                gpus=float(resources.pop("GPU", 0)),
                memory_bytes=resources.pop("memory", None),
                resources={k: float(v) for k, v in resources.items()},
                min_nodes=1 if head else node_type["min_workers"],
                max_nodes=1 if head else node_type["max_workers"],
            )
        )
    return groups


def _ingest_asks(config: MragConfig) -> list[Ask]:
    """The job's three stages as the pipeline asks Ray for them (transcribing decode tasks
    included: they are the ones that take ``decode_num_gpus``)."""
    ingest = config.ingest
    mb = 2**20
    return [
        Ask(
            "decode",
            ingest.decode_num_cpus,
            ingest.decode_num_gpus,
            ingest.decode_tasks,
            ingest.decode_memory_mb * mb,
            ingest.decode_resources,
        ),
        Ask(
            "embed",
            ingest.embed_num_cpus,
            ingest.embed_num_gpus,
            max(ingest.embed_actors, ingest.embed_actors_max),
            ingest.embed_memory_mb * mb,
            ingest.embed_resources,
        ),
        Ask(
            "write",
            ingest.write_num_cpus,
            0.0,
            ingest.write_tasks,
            ingest.write_memory_mb * mb,
            ingest.write_resources,
        ),
    ]


def _serve_asks(serve_config: dict) -> list[Ask]:
    """Each deployment's replica, at its autoscaling maximum (Serve's defaults where unset)."""
    asks = []
    for deployment in serve_config["applications"][0]["deployments"]:
        options = deployment.get("ray_actor_options", {})
        scaling = deployment.get("autoscaling_config") or {}
        asks.append(
            Ask(
                deployment["name"],
                options.get("num_cpus", 1),
                options.get("num_gpus", 0),
                scaling.get("max_replicas", deployment.get("num_replicas", 1)),
                options.get("memory", 0),
                options.get("resources", {}),
            )
        )
    return asks


def _assert_placeable(asks: list[Ask], groups: list[NodeGroup], where: str) -> None:
    declared = {name for group in groups for name in group.resources}
    for ask in asks:
        undeclared = sorted(set(ask.resources) - declared)
        assert not undeclared, f"{where}: {ask.stage} asks for {undeclared}; no node group has it"
        hosts = [group for group in groups if ask.fits(group)]
        assert hosts, f"{where}: one {ask.stage} ({ask}) fits no node group of {groups}"
        # At its maximum the stage's scarce asks still fit the groups that can host it.
        for resource, amount in [("GPU", ask.gpus), *ask.resources.items()]:
            capacity = sum(group.amount(resource) * group.max_nodes for group in hosts)
            assert ask.max_count * amount <= capacity, (
                f"{where}: {ask.max_count} x {ask.stage} want {ask.max_count * amount} "
                f"{resource}; the groups hold at most {capacity}"
            )


def _rayjob_config() -> MragConfig:
    """The config the RayJob's entrypoint runs with: its --config file and its --set flags."""
    job = _load("rayjob.yaml")
    argv = shlex.split(job["spec"]["entrypoint"])
    args = build_parser().parse_args(["ingest", *argv[3:]])
    args.config = str(REPO / args.config)
    return config_from_args(args)


def _rayservice_serve_config() -> dict:
    return yaml.safe_load(_load("rayservice.yaml")["spec"]["serveConfigV2"])


def test_every_cluster_file_is_covered_here() -> None:
    covered = {
        "ingest.yaml",
        "raycluster.yaml",
        "rayjob.yaml",
        "rayservice.yaml",
        "launcher.yaml",
        "serve.yaml",
        "README.md",
    }
    assert {p.name for p in CLUSTER.iterdir()} == covered


def test_job_config_loads_as_an_mrag_config() -> None:
    config = load_config(CLUSTER / "ingest.yaml")
    assert config.profile == "default"
    assert config.clip_weights.startswith("s3://")
    ingest = config.ingest
    assert ingest.embed_num_gpus > 0 and ingest.dtype == "fp16"
    assert ingest.embed_resources == {GPU_NODE: 1}
    assert ingest.embed_actors < ingest.embed_actors_max  # an autoscaling pool
    # A transcribing decode task shares a GPU node with that node's one embed actor.
    assert ingest.embed_num_gpus + ingest.decode_num_gpus <= 1


def test_rayjob_entrypoint_parses_with_the_mrag_cli() -> None:
    job = _load("rayjob.yaml")
    assert (job["apiVersion"], job["kind"]) == ("ray.io/v1", "RayJob")
    argv = shlex.split(job["spec"]["entrypoint"])
    assert argv[:3] == ["python", "-m", "pipelines.ingest"]
    assert importlib.util.find_spec("pipelines.ingest") is not None
    args = build_parser().parse_args(["ingest", *argv[3:]])
    assert args.sources == ["s3://mrag-corpus/images/"]
    assert (REPO / args.config).is_file()
    assert _rayjob_config().ingest == load_config(REPO / args.config).ingest
    runtime_env = yaml.safe_load(job["spec"]["runtimeEnvYAML"])
    assert runtime_env["working_dir"] == "."  # ships pipelines/ and cluster/ to the driver
    # It runs on the RayCluster of cluster/raycluster.yaml.
    assert job["spec"]["clusterSelector"] == {
        "ray.io/cluster": _load("raycluster.yaml")["metadata"]["name"]
    }


@pytest.mark.parametrize("name", ["raycluster.yaml", "rayservice.yaml"])
def test_kuberay_clusters_have_a_cpu_head_and_an_autoscaling_gpu_group(name: str) -> None:
    import ray

    manifest = _load(name)
    assert manifest["apiVersion"] == "ray.io/v1"
    spec = (
        manifest["spec"]
        if manifest["kind"] == "RayCluster"
        else manifest["spec"]["rayClusterConfig"]
    )
    assert spec["rayVersion"] == ray.__version__
    assert spec["enableInTreeAutoscaling"] is True
    # Every Ray container gets RAY_AUTH_MODE=token and the cluster's token from KubeRay.
    assert spec["authOptions"]["mode"] == "token"
    head, *workers = _kuberay_groups(spec)
    assert (head.cpus, head.gpus) == (0, 0)  # the head schedules no work
    assert {g.name for g in workers} == {"cpu", "gpu"}
    for group in workers:
        raw = next(g for g in spec["workerGroupSpecs"] if g["groupName"] == group.name)
        assert group.min_nodes <= raw["replicas"] <= group.max_nodes
    gpu = next(g for g in workers if g.name == "gpu")
    assert gpu.gpus >= 1 and gpu.resources == {GPU_NODE: gpu.gpus}
    assert gpu.min_nodes < gpu.max_nodes
    images = {
        c["image"]
        for g in [spec["headGroupSpec"], *spec["workerGroupSpecs"]]
        for c in g["template"]["spec"]["containers"]
    }
    assert len(images) == 1  # one environment on every node


def test_launcher_yaml_matches_rays_schema() -> None:
    import jsonschema
    import ray.autoscaler

    schema_path = Path(ray.autoscaler.__file__).parent / "ray-schema.json"
    config = _load("launcher.yaml")
    jsonschema.validate(config, json.loads(schema_path.read_text()))
    groups = {g.name: g for g in _launcher_groups(config)}
    head = groups.pop(config["head_node_type"])
    assert (head.cpus, head.gpus) == (0, 0)
    (gpu,) = [g for g in groups.values() if g.gpus]
    assert gpu.resources == {GPU_NODE: gpu.gpus}
    assert gpu.min_nodes < gpu.max_nodes <= config["max_workers"]


def test_launcher_starts_ray_from_the_project_env_with_token_auth() -> None:
    """The two things a new user failed on: Ray started outside the project's environment (the
    job's `python` had no pyarrow) and a node without RAY_AUTH_MODE=token and the token."""
    config = _load("launcher.yaml")
    home = f"/home/{config['auth']['ssh_user']}"
    (venv,) = re.findall(r"^python3\.11 -m venv (\S+)$", "\n".join(config["setup_commands"]), re.M)
    # The repository is copied to every node and installed into that venv...
    project = next(remote for remote, local in config["file_mounts"].items() if local == ".")
    assert f"{venv}/bin/pip install {project.replace(home, '~')}" in config["setup_commands"]
    assert config["rsync_filter"] == [".gitignore"]
    assert ".venv/" in (REPO / ".gitignore").read_text().splitlines()  # the local one stays
    # ...and Ray starts from it, with token auth, on the head and on every worker.
    for commands in (config["head_start_ray_commands"], config["worker_start_ray_commands"]):
        assert any("ray start" in command for command in commands)
        for command in commands:
            assert command.startswith(f"source {venv}/bin/activate && "), command
            if "ray start" in command:
                assert "RAY_AUTH_MODE=token ray start" in command
    assert "--head" in config["head_start_ray_commands"][-1]
    # The same token on every node, at Ray's default path for the user Ray runs as.
    assert config["file_mounts"][f"{home}/.ray/auth_token"] == "~/.ray/auth_token"


def test_ingest_placement_fits_the_kuberay_cluster() -> None:
    groups = _kuberay_groups(_load("raycluster.yaml")["spec"])
    _assert_placeable(_ingest_asks(_rayjob_config()), groups, "rayjob.yaml on raycluster.yaml")


def test_ingest_placement_fits_the_launcher_cluster() -> None:
    groups = _launcher_groups(_load("launcher.yaml"))
    config = load_config(CLUSTER / "ingest.yaml")
    _assert_placeable(_ingest_asks(config), groups, "ingest.yaml on launcher.yaml")


def test_placement_checks_refuse_what_a_cluster_cannot_run() -> None:
    groups = _launcher_groups(_load("launcher.yaml"))
    config = load_config(CLUSTER / "ingest.yaml", overrides=["ingest.embed_resources=accel=1"])
    with pytest.raises(AssertionError, match=r"embed asks for \['accel'\]"):
        _assert_placeable(_ingest_asks(config), groups, "x")
    config = load_config(CLUSTER / "ingest.yaml", overrides=["ingest.embed_num_gpus=2"])
    with pytest.raises(AssertionError, match="one embed .* fits no node group"):
        _assert_placeable(_ingest_asks(config), groups, "x")
    config = load_config(CLUSTER / "ingest.yaml", overrides=["ingest.embed_actors_max=5"])
    with pytest.raises(AssertionError, match="5 x embed want 5"):
        _assert_placeable(_ingest_asks(config), groups, "x")


@pytest.mark.parametrize(
    ("serve_file", "cluster_file"),
    [
        ("rayservice.yaml", "rayservice.yaml"),
        ("serve.yaml", "raycluster.yaml"),
        ("serve.yaml", "launcher.yaml"),
    ],
)
def test_serve_placement_fits_the_cluster(serve_file: str, cluster_file: str) -> None:
    serve_config = (
        _rayservice_serve_config() if serve_file == "rayservice.yaml" else _load(serve_file)
    )
    cluster = _load(cluster_file)
    if cluster_file == "launcher.yaml":
        groups = _launcher_groups(cluster)
    else:
        spec = cluster["spec"]
        groups = _kuberay_groups(spec.get("rayClusterConfig", spec))
    _assert_placeable(_serve_asks(serve_config), groups, f"{serve_file} on {cluster_file}")
    for deployment in serve_config["applications"][0]["deployments"]:
        # Serve never scales out a deployment whose replicas cannot hold the target load.
        target = deployment["autoscaling_config"]["target_ongoing_requests"]
        assert deployment["max_ongoing_requests"] >= target, deployment["name"]


def test_rayservice_builds_the_app_it_configures() -> None:
    from ray import serve
    from ray._common.utils import import_attr
    from ray.serve._private.api import call_user_app_builder_with_args_if_necessary as call
    from ray.serve._private.build_app import build_app as serve_build_app
    from ray.serve.schema import DeploymentSchema, ServeDeploySchema

    manifest = _load("rayservice.yaml")
    assert (manifest["apiVersion"], manifest["kind"]) == ("ray.io/v1", "RayService")
    raw = _rayservice_serve_config()
    (app_config,) = ServeDeploySchema.model_validate(raw).applications
    assert (app_config.name, app_config.route_prefix) == ("mrag", "/")
    # app_builder refuses unknown args, so every key here is one it reads.
    application = call(import_attr(app_config.import_path), app_config.args)
    assert isinstance(application, serve.Application)
    config = application._bound_deployment.init_args[0]
    assert config.db_uri == app_config.args["db"] == load_config(CLUSTER / "ingest.yaml").db_uri
    built = serve_build_app(application, name=app_config.name)
    assert built.ingress_deployment_name == "SearchIngress"
    deployments = raw["applications"][0]["deployments"]
    assert sorted(d.name for d in built.deployments) == sorted(d["name"] for d in deployments)
    for deployment in deployments:
        # Serve ignores unknown deployment keys, so a typo would silently do nothing.
        assert set(deployment) <= set(DeploymentSchema.model_fields), deployment
        scaling = deployment["autoscaling_config"]
        assert 1 <= scaling["min_replicas"] < scaling["max_replicas"], deployment["name"]
        # ray_actor_options replace the code's: both counts are always given.
        assert {"num_cpus", "num_gpus"} <= set(deployment["ray_actor_options"]), deployment
    # Same application as cluster/serve.yaml (whose options tests/serve/test_app.py checks
    # against a live replica): same deployments, same user_config keys.
    served = {d["name"]: d for d in _load("serve.yaml")["applications"][0]["deployments"]}
    assert set(served) == {d["name"] for d in deployments}
    for deployment in deployments:
        assert set(deployment.get("user_config", {})) == set(
            served[deployment["name"]].get("user_config", {})
        )
        batch = deployment.get("user_config", {}).get("max_batch_size", 0)
        assert batch <= deployment["max_ongoing_requests"]  # serve.batch is capped by it


def _readme_commands() -> list[list[str]]:
    """The shell commands of cluster/README.md's bash blocks, leading VAR=value words dropped."""
    text = (CLUSTER / "README.md").read_text()
    commands = []
    for block in re.findall(r"```bash\n(.*?)```", text, flags=re.S):
        for line in block.replace("\\\n", " ").splitlines():
            argv = shlex.split(line, comments=True)
            while argv and re.fullmatch(r"[A-Z_]+=\S*", argv[0]):
                argv.pop(0)
            if argv:
                commands.append(argv)
    return commands


def _check_click_command(group: Any, argv: list[str]) -> list[str]:
    """Parses ``argv`` with a click CLI (Ray's and Serve's) as the command would; returns the
    words after ``--`` (a job's entrypoint)."""
    import click

    command, words = group, list(argv)
    while isinstance(command, click.Group):
        assert words and words[0] in command.commands, f"no command {words[:1]} in {command.name}"
        command, words = command.commands[words[0]], words[1:]
    entrypoint = words[words.index("--") + 1 :] if "--" in words else []
    command.make_context(command.name, words)  # raises on an unknown option or a bad value
    return entrypoint


def _check_mrag_command(argv: list[str]) -> None:
    args = build_parser().parse_args(argv)
    if getattr(args, "config", None):
        args.config = str(REPO / args.config)
    if hasattr(args, "set"):
        config_from_args(args)  # the --config file and every --set key load


def _check_readme_command(argv: list[str]) -> list[str]:
    """Checks one command (and a job's entrypoint in it); returns the programs checked."""
    program, rest = argv[0], argv[1:]
    for word in argv:
        if word.startswith("cluster/"):
            assert (REPO / word).is_file(), f"{word} in {argv}"
    if program == "python":
        assert rest[0] == "-m" and importlib.util.find_spec(rest[1]), argv
        assert rest[1].startswith("pipelines."), argv
        _check_mrag_command([rest[1].removeprefix("pipelines."), *rest[2:]])
    elif program == "mrag":
        _check_mrag_command(rest)
    elif program == "ray":
        from ray.scripts.scripts import cli

        entrypoint = _check_click_command(cli, rest)
        if entrypoint:
            return [program, *_check_readme_command(entrypoint)]
    elif program == "serve":
        from ray.serve.scripts import cli

        _check_click_command(cli, rest)
    elif program == "kubectl":
        assert rest[0] in {"apply", "get", "port-forward"}, argv
    else:
        assert program in {"source", "export", "curl"}, f"unchecked command in README: {argv}"
    return [program]


def test_readme_commands_are_real() -> None:
    programs = {program for argv in _readme_commands() for program in _check_readme_command(argv)}
    assert {"ray", "python", "mrag", "serve", "kubectl"} <= programs
    text = (CLUSTER / "README.md").read_text()
    # The two pitfalls and their fixes, in the words of Ray's own auth error message.
    import ray.exceptions

    ray_help = Path(ray.exceptions.__file__).read_text()
    for name in ("RAY_AUTH_MODE", "RAY_AUTH_TOKEN`", "RAY_AUTH_TOKEN_PATH", "~/.ray/auth_token"):
        assert name in ray_help and name in text, name
    assert "RAY_AUTH_MODE=token" in text and "InvalidAuthToken" in text
    assert "source .venv/bin/activate" in text and "pyarrow" in text


@pytest.mark.parametrize(
    ("argv", "error"),
    [
        (["ray", "start", "--head", "--num-gpu=1"], "No such option"),
        (["ray", "job", "sumbit", "--", "python"], "no command"),
        (["mrag", "ingest", "x", "--set", "ingest.embed_gpus=1"], "ingest.embed_gpus: unknown"),
        (["python", "-m", "pipelines.ingset", "x"], "pipelines.ingset"),
        (["kubectl", "apply", "-f", "cluster/rayjobs.yaml"], "cluster/rayjobs.yaml"),
        (["helm", "install", "mrag"], "unchecked command"),
    ],
)
def test_a_wrong_readme_command_is_caught(argv: list[str], error: str) -> None:
    import click

    with pytest.raises((AssertionError, ConfigError, click.UsageError), match=error):
        _check_readme_command(argv)


@pytest.mark.parametrize("bad", [{"ingest": {"embed_num_gpus": -1}}, {"clip_model": 3, "x": 1}])
def test_a_broken_job_config_is_rejected(tmp_path, bad) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(bad))
    with pytest.raises(ValueError):
        load_config(path)
