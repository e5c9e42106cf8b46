"""PolicyReplica: one Ray actor hosting one generation engine (DESIGN §4, policy replicas).

    engine_cfg = cpu_engine_config(cfg.engine, cfg.replicas)                  # actors/placement.py
    replica = PolicyReplica.options(**replica_options(cfg.replicas, engine_cfg)).remote(model_dir, engine_cfg)
    ray.get(replica.ready.remote())

The actor restarts on failure (``max_restarts`` from config) but never retries a task itself
(``max_task_retries=0``): the ReplicaPool does the retrying, so it can move a request to a survivor.
A restarted actor comes back with the weights it was constructed with; ``sync`` brings it to a version.
``stats``/``ready`` run in their own concurrency group, so they answer while a batch is generating.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import ray

from actors.placement import host_engine
from itool_ray.config import EngineConfig
from itool_ray.engines.base import EngineError, GenerationRequest, GenerationResult
from itool_ray.storage import local_copy

BASE_VERSION = "base"


@ray.remote(concurrency_groups={"control": 1})
class PolicyReplica:
    """Hosts one engine; serves batches of generation and scoring; reloads weights in place."""

    def __init__(
        self,
        model_dir: str,
        engine_cfg: EngineConfig,
        *,
        dtype: str = "float32",
        seed: int = 0,
        version: str = BASE_VERSION,
        engine_kwargs: dict[str, Any] | None = None,
    ):
        self.started = time.time()
        self.engine = host_engine(model_dir, engine_cfg, dtype=dtype, seed=seed, **(engine_kwargs or {}))
        self.version = version
        self.generation = 0  # reloads applied (the pool's count, see load_weights)
        self.requests = 0
        self.completions = 0
        self.tokens = 0
        self.batches = 0
        self.scored = 0
        self.in_flight = 0
        self.errors = 0
        self.busy_s = 0.0

    @contextmanager
    def _serving(self, n: int) -> Iterator[None]:
        """Count a batch of ``n`` items while it is served: in flight, busy time, errors."""
        t0 = time.perf_counter()
        self.in_flight += n
        try:
            yield
        except Exception:
            self.errors += 1
            raise
        finally:
            self.in_flight -= n
            self.busy_s += time.perf_counter() - t0

    def generate(self, requests: list[GenerationRequest]) -> list[GenerationResult]:
        with self._serving(len(requests)):
            results = self.engine.generate(requests)
        self.batches += 1
        self.requests += len(requests)
        for r in results:
            self.completions += len(r.completions)
            self.tokens += sum(len(c.token_ids) for c in r.completions)
        return results

    def score_batch(self, pairs: list[tuple[str | list[int], str | list[int]]]) -> list[list[float]]:
        """Continuation token logprobs for each (prompt, continuation) pair."""
        with self._serving(len(pairs)):
            out = self.engine.score_batch(pairs)
        self.scored += len(pairs)
        return out

    def load_weights(self, checkpoint_dir: str, version: str, generation: int | None = None) -> str:
        """Reload the weights from a Hugging Face checkpoint; returns the version now served.

        ``generation`` orders reloads: a call older than the weights held is stale (a retried or late
        call) and changes nothing. Without it the reload always happens.
        """
        if generation is not None and generation <= self.generation:
            return self.version
        try:
            self.engine.load_weights(local_copy(checkpoint_dir))
        except Exception as e:
            self.errors += 1
            self.version = f"broken:{version}"  # a reload that failed part-way leaves the engine unusable
            if isinstance(e, EngineError):
                raise
            raise EngineError(f"replica pid {os.getpid()}: reload of {checkpoint_dir} failed: {e}") from e
        self.version = version
        self.generation = generation if generation is not None else self.generation + 1
        return version

    def sync(self, checkpoint_dir: str | None, version: str, generation: int) -> str:
        """Serve at least reload ``generation`` (after a restart the actor is back at its first weights)."""
        if generation > self.generation:
            if checkpoint_dir is None:
                raise EngineError(f"replica pid {os.getpid()}: no checkpoint given for version {version!r}")
            self.load_weights(checkpoint_dir, version, generation)
        return self.version

    @ray.method(concurrency_group="control")
    def ready(self) -> dict[str, Any]:
        """Answers once the engine is built: pid, node and the weights version."""
        return {"pid": os.getpid(), "node": ray.get_runtime_context().get_node_id(), "version": self.version}

    @ray.method(concurrency_group="control")
    def stats(self) -> dict[str, Any]:
        return {
            "pid": os.getpid(),
            "version": self.version,
            "generation": self.generation,
            "requests": self.requests,
            "completions": self.completions,
            "tokens": self.tokens,
            "batches": self.batches,
            "scored": self.scored,
            "in_flight": self.in_flight,
            "errors": self.errors,
            "busy_s": round(self.busy_s, 3),
            "uptime_s": round(time.time() - self.started, 3),
        }

    def close(self) -> None:
        """Shut the engine down (and its engine-core process, when it has one)."""
        self.engine.close()
