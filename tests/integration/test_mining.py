"""Deficiency mining on Ray Data through the policy fleet, with the tiny model: every sample scored once,
the rule applied, Parquet and summary written; a Ray Data router or a fleet replica killed mid-stage
loses no sample."""

from __future__ import annotations

import os
import signal
import threading
import time

import pytest

from itool_ray.config import load_config
from itool_ray.data.io import write_samples
from itool_ray.data.synth import generate
from itool_ray.driver.mining import read_mined, run_mining
from itool_ray.mining import deficient_samples

N = 64


@pytest.fixture(scope="module")
def samples():
    return generate(N, seed=0)


@pytest.fixture
def cfg():
    return load_config(
        "tiny",
        overrides={
            "engine": {"kind": "hf", "cpu_threads": 1},
            "replicas": {"num_cpus": 1, "max_restarts": 2, "max_request_retries": 2},
            "mining": {"batch_size": 8, "concurrency": 1, "samples_per_prompt": 2, "ratio": 0.3},
            "data": {"max_answer_tokens": 24},
        },
    )


@pytest.fixture
def fleet(ray_session, tiny_model_dir, cfg):
    from actors.pool import ReplicaPool

    pool = ReplicaPool.from_config(cfg, tiny_model_dir)
    yield pool
    pool.close()


def _check_output(rows, summary, samples):
    assert [r["id"] for r in rows] == [s.id for s in samples]  # every sample once, in input order
    assert summary["n"] == N and summary["output"]
    assert all(len(r["sampled_texts"]) == 2 == len(r["sampled_exact"]) for r in rows)
    assert all(r["gt_perplexity"] > 1.0 and r["gt_tokens"] > 0 for r in rows)
    # The rule: floor(0.3 * group size) hard samples per has-call/no-call group, plus every wrong one.
    n_call = sum(1 for s in samples if s.answer)
    assert summary["hard"] == int(0.3 * n_call) + int(0.3 * (N - n_call))
    assert all(r["deficient"] == (r["wrong"] or r["hard"]) for r in rows)
    assert (
        summary["deficient"]
        == sum(r["deficient"] for r in rows)
        == sum(summary["deficient_by_reason"].values())
    )
    assert sum(c["n"] for c in summary["by_category"].values()) == N
    # What mining cost: the tokens of three answers a sample (greedy + 2 sampled, 24 at most each), and
    # the ground truths scored; the Parquet rows and the summary agree.
    assert all(0 < r["generated_tokens"] <= 3 * 24 for r in rows)
    assert summary["generated_tokens"] == sum(r["generated_tokens"] for r in rows)
    assert summary["scored_tokens"] == sum(r["gt_tokens"] for r in rows)


def test_mining_writes_every_score_and_a_summary(fleet, tiny_model_dir, samples, cfg, tmp_path):
    src = tmp_path / "train.parquet"
    write_samples(samples, str(src))
    out = tmp_path / "iter_1" / "deficient.parquet"
    summary = run_mining(str(src), fleet=fleet, model_dir=tiny_model_dir, out_path=str(out), cfg=cfg)
    rows = read_mined(str(out))
    _check_output(rows, summary, samples)
    kept = deficient_samples(rows)
    assert len(kept) == summary["deficient"] and {s.id for s in kept} <= {s.id for s in samples}
    assert 0.0 <= summary["greedy_accuracy"] <= 1.0 and summary["settings"]["rule"] == "wrong_or_hard"
    # The fleet did the work: every sample was generated and scored by its replica.
    stats = fleet.stats()[0]
    assert stats["requests"] == 2 * N and stats["scored"] == N


def _kill_mid_batch(ray_session, fleet, match: str, killed: list[str], stop: threading.Event) -> None:
    """Once the fleet's replica is working on a batch, SIGKILL the first live actor whose class matches."""
    from ray.util.state import list_actors

    replica = fleet.replicas[0].handle
    while not stop.is_set():
        if ray_session.get(replica.stats.remote())["in_flight"] > 0:
            address = ray_session.get_runtime_context().gcs_address  # other Ray instances may run here
            alive = list_actors(address=address, filters=[("state", "=", "ALIVE")], detail=True)
            targets = [a for a in alive if match in a.class_name]
            if targets:
                os.kill(targets[0].pid, signal.SIGKILL)
                killed.append(targets[0].class_name)
                return
        time.sleep(0.01)


@pytest.mark.parametrize("victim", ["MapWorker", "PolicyReplica"])
def test_killing_a_router_or_a_replica_mid_batch_loses_no_sample(
    ray_session, fleet, tiny_model_dir, samples, cfg, tmp_path, victim
):
    src = tmp_path / "train.jsonl"
    write_samples(samples, str(src))
    killed: list[str] = []
    stop = threading.Event()
    watcher = threading.Thread(target=_kill_mid_batch, args=(ray_session, fleet, victim, killed, stop))
    watcher.start()
    try:
        out = tmp_path / "mined.parquet"
        summary = run_mining(str(src), fleet=fleet, model_dir=tiny_model_dir, out_path=str(out), cfg=cfg)
    finally:
        stop.set()
        watcher.join()
    assert killed, f"no {victim} was killed while a batch was in flight"
    _check_output(read_mined(str(out)), summary, samples)


def test_mining_finishes_when_the_fleet_holds_every_cpu(ray_session, tiny_model_dir, samples, cfg, tmp_path):
    """As in the quickstart (one replica on both cores): every Ray Data operator of the stage asks for no CPU,
    so none waits forever behind the fleet."""
    import threading

    from actors.pool import ReplicaPool

    total = int(ray_session.cluster_resources()["CPU"])
    whole = cfg.model_copy(update={"replicas": cfg.replicas.model_copy(update={"num_cpus": total})})
    pool = ReplicaPool.from_config(whole, tiny_model_dir)
    try:
        src = tmp_path / "train.jsonl"
        write_samples(samples, str(src))
        out: dict = {}
        run = threading.Thread(
            target=lambda: out.setdefault(
                "summary",
                run_mining(
                    str(src),
                    fleet=pool,
                    model_dir=tiny_model_dir,
                    out_path=str(tmp_path / "m.parquet"),
                    cfg=whole,
                ),
            ),
            daemon=True,
        )
        run.start()
        run.join(timeout=300)
        assert "summary" in out, "mining waited for CPUs the fleet holds"
        assert out["summary"]["n"] == N
    finally:
        pool.close()
