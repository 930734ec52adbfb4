"""Every file in cluster/ is loaded and checked against what consumes it."""

from __future__ import annotations

import json
import shlex
from pathlib import Path

import pytest
import yaml

from mrag.cli import build_parser
from mrag.config import load_config

CLUSTER = Path(__file__).resolve().parent.parent / "cluster"


def test_every_cluster_file_is_covered_here() -> None:
    covered = {"ingest.yaml", "raycluster.yaml", "rayjob.yaml", "launcher.yaml", "serve.yaml"}
    assert {p.name for p in CLUSTER.iterdir()} == covered


def test_job_config_loads_as_an_mrag_config() -> None:
    config = load_config(CLUSTER / "ingest.yaml")
    assert config.profile == "default"
    assert config.ingest.embed_num_gpus == 1 and config.ingest.dtype == "fp16"
    assert config.clip_weights.startswith("s3://")


def test_rayjob_entrypoint_parses_with_the_mrag_cli() -> None:
    job = yaml.safe_load((CLUSTER / "rayjob.yaml").read_text())
    assert (job["apiVersion"], job["kind"]) == ("ray.io/v1", "RayJob")
    argv = shlex.split(job["spec"]["entrypoint"])
    assert argv[:3] == ["python", "-m", "pipelines.ingest"]
    args = build_parser().parse_args(["ingest", *argv[3:]])
    assert args.sources == ["s3://mrag-corpus/images/"]
    assert (CLUSTER.parent / args.config).is_file()
    runtime_env = yaml.safe_load(job["spec"]["runtimeEnvYAML"])
    assert runtime_env["working_dir"] == "."


def test_raycluster_has_cpu_and_gpu_groups_on_the_pinned_ray() -> None:
    cluster = yaml.safe_load((CLUSTER / "raycluster.yaml").read_text())
    assert (cluster["apiVersion"], cluster["kind"]) == ("ray.io/v1", "RayCluster")
    import ray

    assert cluster["spec"]["rayVersion"] == ray.__version__
    groups = {g["groupName"]: g for g in cluster["spec"]["workerGroupSpecs"]}
    assert set(groups) == {"cpu", "gpu"}
    gpu_limits = groups["gpu"]["template"]["spec"]["containers"][0]["resources"]["limits"]
    assert gpu_limits["nvidia.com/gpu"] == "1"
    for group in groups.values():
        assert group["minReplicas"] <= group["replicas"] <= group["maxReplicas"]


def test_launcher_yaml_matches_rays_schema() -> None:
    import jsonschema
    import ray.autoscaler

    schema_path = Path(ray.autoscaler.__file__).parent / "ray-schema.json"
    config = yaml.safe_load((CLUSTER / "launcher.yaml").read_text())
    jsonschema.validate(config, json.loads(schema_path.read_text()))
    assert config["head_node_type"] in config["available_node_types"]


@pytest.mark.parametrize("bad", [{"ingest": {"embed_num_gpus": -1}}, {"clip_model": 3, "x": 1}])
def test_a_broken_job_config_is_rejected(tmp_path, bad) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(bad))
    with pytest.raises(ValueError):
        load_config(path)
