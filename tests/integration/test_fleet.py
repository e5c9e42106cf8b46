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


def test_vllm_replica_killed_mid_generation_is_restarted_and_the_batch_is_served(ray_session, tiny_model_dir):
    """The quickstart's engine (vLLM, in-process) inside a replica actor: the actor dies mid-batch; Ray
    restarts it, the pool retries the batch on it, and the restarted replica serves at the pool's version."""
    import threading

    from actors.pool import ReplicaPool
    from itool_ray.engines import vllm_available

    if not vllm_available():
        pytest.skip("vLLM is not installed")
    engine = EngineConfig(kind="vllm", cpu_threads=1, max_model_len=512, kv_cache_memory_bytes=64 << 20)
    replicas = ReplicaConfig(num_replicas=1, num_cpus=1, max_restarts=2, max_request_retries=2)
    pool = ReplicaPool(tiny_model_dir, engine, replicas, ready_timeout_s=300)
    try:
        requests = [GenerationRequest(f"city {i}", n=2, max_tokens=64, temperature=1.0) for i in range(16)]
        out: dict = {}
        worker = threading.Thread(target=lambda: out.setdefault("results", pool.generate(requests)))
        worker.start()
        victim = pool.replicas[0]
        deadline = time.time() + 120
        while ray_session.get(victim.handle.stats.remote())["in_flight"] == 0:
            assert time.time() < deadline, "the replica never received the batch"
            time.sleep(0.02)
        ray_session.kill(victim.handle, no_restart=False)
        worker.join(timeout=300)
        results = out["results"]
        assert len(results) == 16 and all(len(r.completions) == 2 for r in results)
        assert victim.failures == 1
        assert pool.health()["ok"]
    finally:
        pool.close()
