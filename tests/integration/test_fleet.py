"""The fleet's lifecycle: close() leaves no engine process (vLLM's engine core in a child process, as on a
GPU) and frees the replica's resources. Its own module: the replica tests' pool holds the session's CPUs."""

from __future__ import annotations

import time

import pytest

from itool_ray.config import EngineConfig, ReplicaConfig
from itool_ray.engines.base import GenerationRequest


def _alive(pid: int) -> bool:
    import psutil

    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def test_close_leaves_no_engine_process_with_vllm_out_of_process(ray_session, tiny_model_dir):
    """vLLM's engine core in a child process (as on a GPU): after close() neither the actor nor that
    child is left, and the replica's CPUs are free again."""
    import psutil

    from actors.pool import ReplicaPool
    from itool_ray.engines import vllm_available

    if not vllm_available():
        pytest.skip("vLLM is not installed")
    engine = EngineConfig(
        kind="vllm", cpu_threads=1, max_model_len=512, in_process=False, kv_cache_memory_bytes=64 << 20
    )
    replicas = ReplicaConfig(num_replicas=1, num_cpus=1)
    before = ray_session.available_resources().get("CPU", 0)
    pool = ReplicaPool(tiny_model_dir, engine, replicas, ready_timeout_s=300)
    try:
        assert pool.generate([GenerationRequest("hello", max_tokens=4)])[0].completions
        actor_pid = pool.stats()[0]["pid"]
        children = [c.pid for c in psutil.Process(actor_pid).children(recursive=True)]
        assert children, "vLLM ran in-process: no engine-core child to check"
    finally:
        pool.close()
    deadline = time.time() + 60
    while any(_alive(p) for p in [actor_pid, *children]):
        assert time.time() < deadline, f"processes left after close(): {[p for p in children if _alive(p)]}"
        time.sleep(0.5)
    while ray_session.available_resources().get("CPU", 0) < before:
        assert time.time() < deadline, "the replica's CPUs were not freed"
        time.sleep(0.5)
