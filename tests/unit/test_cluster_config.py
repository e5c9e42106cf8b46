"""cluster.yaml passes Ray's own config validation, and every preset's resource demands fit the nodes meant
for it: the GPU preset on cluster.yaml's node types, the CPU presets on one 2-core machine."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import yaml

from actors.placement import replica_demand, worker_demand
from itool_ray.config import load_config

CLUSTER = Path(__file__).resolve().parents[2] / "cluster.yaml"


def _cluster() -> dict:
    return yaml.safe_load(CLUSTER.read_text())


def _validated(config: dict) -> dict:
    from ray.autoscaler._private.util import prepare_config, validate_config

    config = prepare_config(config)
    validate_config(config)
    return config


def test_cluster_yaml_passes_rays_validation():
    _validated(_cluster())


def test_rays_validation_is_not_a_rubber_stamp():
    from jsonschema import ValidationError

    bad = _cluster()
    bad["available_node_types"]["gpu_8x_h100"]["min_wokers"] = 0  # a typo
    with pytest.raises(ValidationError):
        _validated(bad)


def test_cluster_recipe_is_what_a_gpu_cluster_needs():
    c = _cluster()
    text = CLUSTER.read_text()
    head = c["available_node_types"][c["head_node_type"]]
    assert head["resources"].get("GPU", 0) == 0
    workers = {k: v for k, v in c["available_node_types"].items() if k != c["head_node_type"]}
    # Bucket credentials on every node: the workers have an instance profile of their own.
    assert all("IamInstanceProfile" in t["node_config"] for t in workers.values())
    assert all(t["min_workers"] == 0 for t in workers.values())
    # The dashboard's job API is not exposed without auth.
    assert "--dashboard-host=0.0.0.0" not in text and "--dashboard-host=127.0.0.1" in text
    # Python >= 3.11 and the project's own setup script (same pins as a laptop), GPU build.
    assert "uv python install 3.11" in text and "TARGET=gpu bash scripts/setup.sh" in text
    assert c["idle_timeout_minutes"] >= 20


def _node_types() -> dict[str, dict]:
    c = _cluster()
    return {k: v for k, v in c["available_node_types"].items() if k != c["head_node_type"]}


def _fits(demand: dict, resources: dict) -> bool:
    return all(resources.get(k, 0) >= v for k, v in demand.items())


def _capacity(demand: dict, node_types: dict) -> int:
    """How many units of ``demand`` the cluster holds at its largest (max_workers of each fitting type)."""
    total = 0
    for t in node_types.values():
        if _fits(demand, t["resources"]):
            total += t["max_workers"] * min(math.floor(t["resources"][k] / v) for k, v in demand.items())
    return total


def test_gpu_preset_fits_its_node_type_and_only_that_one():
    cfg = load_config("llama31-8b-toolace")
    types = _node_types()
    for what, demand, count in (
        ("replica", replica_demand(cfg), cfg.replicas.num_replicas),
        ("training worker", worker_demand(cfg), cfg.distributed.num_workers),
    ):
        fitting = [name for name, t in types.items() if _fits(demand, t["resources"])]
        assert fitting == ["gpu_8x_h100"], f"a {what} ({demand}) fits {fitting}"
        assert _capacity(demand, types) >= count, f"{count} x {what} do not fit the cluster at its largest"
    # One tensor-parallel group on one node.
    assert cfg.replicas.tensor_parallel_size <= types["gpu_8x_h100"]["resources"]["GPU"]


@pytest.mark.parametrize("preset", ["quickstart", "tiny"])
def test_cpu_presets_fit_a_two_core_machine(preset):
    cfg = load_config(preset)
    node = {"CPU": 2}
    assert _fits({k: v * cfg.replicas.num_replicas for k, v in replica_demand(cfg).items()}, node)
    assert _fits({k: v * cfg.distributed.num_workers for k, v in worker_demand(cfg).items()}, node)
