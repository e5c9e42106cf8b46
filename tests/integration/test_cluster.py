"""A three-node Ray cluster on 127.0.0.1 whose nodes share no disk: a head that runs no stage work and two
worker nodes joined with `ray start --address`, each with its own temp dir and node-local cache. The tiny
pipeline is submitted with `ray job submit`, its run directory on an S3-compatible server."""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path

import pytest
from raycluster import VENV_BIN, add_worker, query, start_head, wait_for_nodes

ROOT = Path(__file__).resolve().parents[2]
STAGE_RESOURCE = "stage_node"  # a custom resource only worker nodes have: GPU placement, stood in for


@pytest.fixture(scope="module")
def three_nodes(tmp_path_factory):
    base = tmp_path_factory.mktemp("nodes")
    caches = {name: base / f"cache-{name}" for name in ("head", "w1", "w2")}
    cluster = start_head(num_cpus=0, extra_env={"ITOOL_CACHE_DIR": str(caches["head"])})
    try:
        for name in ("w1", "w2"):
            add_worker(
                cluster,
                num_cpus=2,
                resources={STAGE_RESOURCE: 2},
                extra_env={"ITOOL_CACHE_DIR": str(caches[name])},
            )
        nodes = wait_for_nodes(cluster, 3)
        head_id = next(n["NodeID"] for n in nodes if n["Resources"].get("CPU", 0) == 0)
        yield cluster, caches, head_id
    finally:
        cluster.stop()


def _stage_actors(cluster) -> list[tuple[str, str]]:
    code = (
        "from ray.util.state import list_actors\n"
        "out = [(a.class_name, a.node_id) for a in list_actors(limit=10000, detail=True, "
        "raise_on_missing_output=False)]"
    )
    return [tuple(x) for x in query(cluster, code)]


@pytest.mark.slow
def test_job_on_nodes_that_share_no_disk_runs_on_the_workers_and_frees_everything(
    three_nodes, s3_server, data_dir, tmp_path
):
    cluster, caches, head_id = three_nodes
    root = s3_server() + "/runs"
    place = f"{{{STAGE_RESOURCE}: 1}}"
    cmd = [str(VENV_BIN / "ray"), "job", "submit", "--address", cluster.dashboard, "--working-dir", str(ROOT)]
    cmd += ["--", "python", "jobs/pipeline.py", "--config", "tiny", "--run.root", root]
    cmd += ["--run.data_dir", data_dir, "--run.name", "nodes"]
    cmd += ["--replicas.resources", place, "--distributed.resources_per_worker", place]
    cmd += [
        "--mining.resources",
        f"{{{STAGE_RESOURCE}: 0.01}}",
    ]  # the router too: the head runs no stage work
    for _ in range(12):  # the head's job agent can lag behind its dashboard
        out = subprocess.run(cmd, env=cluster.env, capture_output=True, text=True, timeout=1200, cwd=tmp_path)
        if "No available agent to submit job" not in out.stdout + out.stderr:
            break
        time.sleep(5)
    assert out.returncode == 0, out.stdout[-4000:] + out.stderr[-2000:]

    import fsspec

    fs = fsspec.filesystem("s3", skip_instance_cache=True)
    run = root[len("s3://") :] + "/nodes"
    stages = json.loads(fs.cat_file(f"{run}/manifest.json"))["stages"]
    assert stages and all(s["status"] == "done" for s in stages.values())
    assert {"base", "warmup", "iter_1", "control"} <= set(json.loads(fs.cat_file(f"{run}/results.json")))

    # After every stage only the fleet the runner keeps (one replica: 1 CPU, 1 stage_node) is still held.
    for name, st in stages.items():
        held = st["resources_held_after"]
        assert held.get(STAGE_RESOURCE, 0) <= 1 and held.get("CPU", 0) <= 1, (name, held)

    # Replicas, the mining pool and the training workers ran on the worker nodes, never on the head.
    actors = _stage_actors(cluster)
    for kind in ("PolicyReplica", "MiningScorer", "RayTrainWorker"):
        mine = [node for name, node in actors if kind in name]
        assert mine, f"no {kind} actor ran ({sorted({n for n, _ in actors})})"
        assert head_id not in mine, f"a {kind} ran on the head node"

    # Nothing the stages loaded came from the driver's disk: each worker node fetched the base model and the
    # checkpoints from the bucket into its own cache, and no run directory exists on any local disk.
    fetched = {
        name: {p.name.split("-", 1)[1] for p in cache.iterdir() if not p.name.startswith(".")}
        for name, cache in caches.items()
        if name != "head" and cache.is_dir()
    }
    assert fetched, "no worker node fetched anything into its cache"
    assert set().union(*fetched.values()) >= {"base", "ckpt", "dataset"}, fetched
    for cache in caches.values():
        assert not list(cache.rglob("manifest.json")) if cache.is_dir() else True

    # Every resource is free again once the job is over.
    deadline = time.time() + 60
    while True:
        free = query(cluster, "out = [ray.available_resources(), ray.cluster_resources()]")
        avail, total = free
        if all(avail.get(k, 0) == v for k, v in total.items() if k in ("CPU", STAGE_RESOURCE)):
            break
        assert time.time() < deadline, f"resources still held after the job: {avail} of {total}"
        time.sleep(2)
