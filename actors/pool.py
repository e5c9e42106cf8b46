"""ReplicaPool: a driver-side router over PolicyReplica actors that can be used exactly as an Engine.

    pool = ReplicaPool.from_config(cfg, model_dir)
    results = pool.generate(requests, keys=[tree_id, ...])   # one batch, split across replicas by key
    pool.load_weights(ckpt_dir, version="iter_1")            # every replica reloads, or it raises

Routing: a key (one search tree) is homed on one replica for its whole life, so that replica's prefix
cache holds the tree's shared prompt; a new key goes to the least-loaded replica (requests in flight,
then keys homed, then index). Requests without a key are placed one by one by the same load order.
One ``generate`` call sends one sub-batch per replica and gathers them in request order; the replicas
work in parallel.

Failures: a sub-batch whose replica died (RayActorError) or whose engine failed (EngineError) is retried
on another live replica, or on the restarted one, up to ``max_request_retries`` times per request; the
keys homed on a failed replica are re-homed. A failed replica is "down" until a ``sync`` call answers
(Ray retries that one call until the actor has restarted), which also brings it back to the pool's
weights version; a replica whose restarts are spent (ActorDiedError) is "dead" and left out. Other
exceptions (a bad request, a bug) are raised at once: retrying them elsewhere would fail the same way.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Hashable, Sequence
from dataclasses import dataclass, field
from typing import Any

import ray
from ray.exceptions import ActorDiedError, GetTimeoutError, RayActorError

from actors.placement import cpu_engine_config, engine_kwargs, replica_options
from actors.replica import BASE_VERSION, PolicyReplica
from itool_ray.config import Config, EngineConfig, ReplicaConfig
from itool_ray.engines.base import EngineError, GenerationRequest, GenerationResult

log = logging.getLogger(__name__)

UP, DOWN, DEAD = "up", "down", "dead"
RETRYABLE = (RayActorError, EngineError)


@dataclass
class _Replica:
    index: int
    handle: Any  # ActorHandle of PolicyReplica
    state: str = UP
    in_flight: int = 0  # requests sent and not yet answered (this driver's view)
    keys: int = 0  # keys homed here
    failures: int = 0
    recovery: Any = None  # ObjectRef of the sync call that brings a down replica back
    last_error: str | None = None
    served: int = 0  # requests answered, this driver's view


@dataclass(frozen=True)
class FleetHandle:
    """What another process needs to route requests over a running fleet (picklable): the replica actors
    and the weights version they serve. ``ReplicaPool.attach(handle)`` builds a router over them."""

    actors: tuple[Any, ...]
    version: str
    weights_dir: str | None
    generation: int
    max_request_retries: int
    recovery_timeout_s: float


@dataclass
class _Call:
    replica: _Replica
    indices: list[int] = field(default_factory=list)


class NoReplicaError(EngineError):
    """No replica can serve: all are dead, or down with no recovery under way."""


class ReplicaPool:
    """Least-loaded, key-sticky dispatch over replicas, with retry on failure and broadcast reload."""

    def __init__(
        self,
        model_dir: str,
        engine_cfg: EngineConfig,
        replica_cfg: ReplicaConfig,
        *,
        dtype: str = "float32",
        seed: int = 0,
        ready_timeout_s: float = 600.0,
        recovery_timeout_s: float = 600.0,
    ):
        self.model_dir = model_dir
        self.owner = True  # close() stops the actors (an attached pool only routes over them)
        self.max_request_retries = replica_cfg.max_request_retries
        self.recovery_timeout_s = recovery_timeout_s
        self.version = BASE_VERSION
        self.weights_dir: str | None = None  # None = the weights the replicas were built with
        self.generation = 0  # bumped by every reload; replicas ignore stale reload and sync calls
        engine_cfg = cpu_engine_config(engine_cfg, replica_cfg)
        options = replica_options(replica_cfg, engine_cfg)
        self.replicas = [
            _Replica(
                i,
                PolicyReplica.options(**options).remote(
                    model_dir,
                    engine_cfg,
                    dtype=dtype,
                    seed=seed + i,
                    engine_kwargs=engine_kwargs(replica_cfg),
                ),
            )
            for i in range(replica_cfg.num_replicas)
        ]
        self._homes: dict[Hashable, _Replica] = {}
        self._lock = threading.Lock()
        try:
            self.wait_ready(ready_timeout_s)
        except BaseException:
            self.close()  # do not leave half a pool holding the cluster's resources
            raise

    @classmethod
    def from_config(cls, cfg: Config, model_dir: str, **kwargs: Any) -> ReplicaPool:
        return cls(model_dir, cfg.engine, cfg.replicas, dtype=cfg.model.dtype, seed=cfg.run.seed, **kwargs)

    def handle(self) -> FleetHandle:
        """This fleet, for a router in another process (a Ray Data UDF): same actors, same version."""
        return FleetHandle(
            actors=tuple(r.handle for r in self.replicas if r.state != DEAD),
            version=self.version,
            weights_dir=self.weights_dir,
            generation=self.generation,
            max_request_retries=self.max_request_retries,
            recovery_timeout_s=self.recovery_timeout_s,
        )

    @classmethod
    def attach(cls, fleet: FleetHandle) -> ReplicaPool:
        """A router over a running fleet that it does not own: retries and failover as usual; ``close``
        leaves the actors running; ``load_weights`` is the owner's."""
        pool = cls.__new__(cls)
        pool.model_dir = fleet.weights_dir or ""
        pool.owner = False
        pool.max_request_retries = fleet.max_request_retries
        pool.recovery_timeout_s = fleet.recovery_timeout_s
        pool.version, pool.weights_dir, pool.generation = fleet.version, fleet.weights_dir, fleet.generation
        pool.replicas = [_Replica(i, h) for i, h in enumerate(fleet.actors)]
        pool._homes = {}
        pool._lock = threading.Lock()
        return pool

    def wait_ready(self, timeout_s: float) -> list[dict[str, Any]]:
        """Block until every replica has built its engine; an engine that cannot start is raised here."""
        refs = [r.handle.ready.remote() for r in self.replicas]
        try:
            return ray.get(refs, timeout=timeout_s)
        except GetTimeoutError:
            raise TimeoutError(
                f"{len(self.replicas)} replica(s) not ready after {timeout_s:.0f} s: is the cluster short of "
                f"the resources one replica asks for? (see `ray status`)"
            ) from None

    # ------------------------------------------------------------------------------------------ routing
    def _load(self, r: _Replica) -> tuple[int, int, int]:
        return (r.in_flight, r.keys, r.index)

    def _usable(self) -> list[_Replica]:
        """Up replicas; when none is up, wait for a down one to come back (restart and sync)."""
        self._poll_recoveries()
        while True:
            up = [r for r in self.replicas if r.state == UP]
            if up:
                return up
            down = [r for r in self.replicas if r.state == DOWN and r.recovery is not None]
            if not down:
                errors = "; ".join(f"replica {r.index} {r.state}: {r.last_error}" for r in self.replicas)
                raise NoReplicaError(
                    f"no replica can serve (dead, or failed to load version {self.version!r}): {errors}"
                )
            self._await_recovery(down)

    def _home(self, key: Hashable, usable: list[_Replica], avoid: set[int]) -> _Replica:
        home = self._homes.get(key)
        if home is not None and home.state == UP and home.index not in avoid:
            return home
        if home is not None:
            home.keys -= 1
        candidates = [r for r in usable if r.index not in avoid] or usable
        home = min(candidates, key=self._load)
        home.keys += 1
        self._homes[key] = home
        return home

    def _assign(
        self, indices: list[int], keys: Sequence[Hashable | None] | None, avoid: dict[int, set[int]]
    ) -> dict[int, _Call]:
        """replica index -> the requests it serves now; updates loads as it goes."""
        calls: dict[int, _Call] = {}
        with self._lock:
            usable = self._usable()
            for i in indices:
                key = keys[i] if keys is not None else None
                if key is not None:
                    r = self._home(key, usable, avoid.get(i, set()))
                else:
                    candidates = [r for r in usable if r.index not in avoid.get(i, set())] or usable
                    r = min(candidates, key=self._load)
                r.in_flight += 1
                calls.setdefault(r.index, _Call(r)).indices.append(i)
        return calls

    def replica_of(self, key: Hashable) -> int | None:
        """The index of the replica a key is homed on (None if the key is not known)."""
        home = self._homes.get(key)
        return home.index if home is not None else None

    def release(self, keys: Sequence[Hashable] | None = None) -> None:
        """Forget finished keys (trees; None: all), so they no longer count towards their replica's load."""
        with self._lock:
            for key in list(self._homes) if keys is None else keys:
                home = self._homes.pop(key, None)
                if home is not None:
                    home.keys -= 1

    # ------------------------------------------------------------------------------------------ failures
    def _fail(self, r: _Replica, error: Exception) -> None:
        """Take a replica out of rotation after a failure; queue the call that brings it back."""
        with self._lock:
            r.failures += 1
            r.last_error = f"{type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''}"
            for key, home in list(self._homes.items()):
                if home is r:
                    del self._homes[key]
            r.keys = 0
            if isinstance(error, ActorDiedError):
                r.state, r.recovery = DEAD, None
                log.warning("replica %d is dead (restarts spent): %s", r.index, r.last_error)
                return
            r.state = DOWN
            if r.recovery is None:
                r.recovery = self._recover(r)
            log.warning("replica %d failed (%s); its requests are retried elsewhere", r.index, r.last_error)

    def _recover(self, r: _Replica) -> Any:
        """Queue the call that brings a failed replica back. A call to a restarting actor fails at once
        with ActorUnavailableError, so this one call is retried by Ray until the actor is alive again
        (or dead for good: ActorDiedError)."""
        return r.handle.sync.options(max_task_retries=-1).remote(
            self.weights_dir, self.version, self.generation
        )

    def _settle(self, r: _Replica) -> None:
        """Record the outcome of a finished recovery call."""
        ref, r.recovery = r.recovery, None
        try:
            ray.get(ref)
        except ActorDiedError as e:
            r.state, r.last_error = DEAD, f"{type(e).__name__}: {e}"
        except RayActorError as e:  # died again while restarting: wait for the next restart
            r.last_error = f"{type(e).__name__}: {e}"
            r.recovery = self._recover(r)
        except EngineError as e:  # the reload failed: down until a load_weights succeeds on it
            r.last_error = f"{type(e).__name__}: {e}"
            log.error("replica %d cannot load version %s: %s", r.index, self.version, r.last_error)
        else:
            r.state = UP
            log.info("replica %d is back (version %s)", r.index, self.version)

    def _poll_recoveries(self) -> None:
        pending = [r for r in self.replicas if r.state == DOWN and r.recovery is not None]
        if not pending:
            return
        done, _ = ray.wait([r.recovery for r in pending], num_returns=len(pending), timeout=0)
        for r in pending:
            if r.recovery in done:
                self._settle(r)

    def _await_recovery(self, down: list[_Replica]) -> None:
        refs = [r.recovery for r in down]
        done, _ = ray.wait(refs, num_returns=1, timeout=self.recovery_timeout_s)
        if not done:
            raise EngineError(f"no replica came back within {self.recovery_timeout_s:.0f} s of failing")
        for r in down:
            if r.recovery in done:
                self._settle(r)

    # ------------------------------------------------------------------------------------------ serving
    def _dispatch(
        self, method: str, items: Sequence[Any], keys: Sequence[Hashable | None] | None
    ) -> list[Any]:
        """Send ``items`` to the replicas' ``method`` in per-replica batches; results in item order."""
        if keys is not None and len(keys) != len(items):
            raise ValueError(
                f"keys has {len(keys)} entries for {len(items)} requests: give one key per request"
            )
        results: list[Any] = [None] * len(items)
        attempts = [0] * len(items)
        avoid: dict[int, set[int]] = {}
        refs: dict[Any, _Call] = {}

        def submit(indices: list[int]) -> None:
            for c in self._assign(indices, keys, avoid).values():
                refs[getattr(c.replica.handle, method).remote([items[i] for i in c.indices])] = c

        submit(list(range(len(items))))
        try:
            while refs:
                done, _ = ray.wait(list(refs), num_returns=1)
                call = refs.pop(done[0])
                r = call.replica
                with self._lock:
                    r.in_flight -= len(call.indices)
                try:
                    out = ray.get(done[0])
                except RETRYABLE as e:
                    self._fail(r, e)
                    for i in call.indices:
                        attempts[i] += 1
                        if attempts[i] > self.max_request_retries:
                            raise EngineError(
                                f"request {i} failed {attempts[i]} time(s), last on replica {r.index}: {e}"
                            ) from e
                        avoid.setdefault(i, set()).add(r.index)
                    submit(call.indices)  # at once, so the retry overlaps the survivors' work
                    continue
                r.served += len(call.indices)
                for i, value in zip(call.indices, out, strict=True):
                    results[i] = value
        finally:
            with self._lock:  # calls abandoned by a raise no longer count as load
                for call in refs.values():
                    call.replica.in_flight -= len(call.indices)
        return results

    def generate(
        self, requests: list[GenerationRequest], keys: Sequence[Hashable | None] | None = None
    ) -> list[GenerationResult]:
        """Serve a batch across the replicas; ``keys[i]`` pins request i's replica (None: any)."""
        return self._dispatch("generate", requests, keys)

    def score_batch(
        self,
        pairs: Sequence[tuple[str | list[int], str | list[int]]],
        keys: Sequence[Hashable | None] | None = None,
    ) -> list[list[float]]:
        """Continuation token logprobs for many (prompt, continuation) pairs, spread over the replicas."""
        return self._dispatch("score_batch", list(pairs), keys)

    def score(self, prompt: str | list[int], continuation: str | list[int]) -> list[float]:
        return self.score_batch([(prompt, continuation)])[0]

    # ------------------------------------------------------------------------------------------ weights
    def load_weights(self, checkpoint_dir: str, version: str | None = None) -> dict[int, str]:
        """Every live replica reloads ``checkpoint_dir``; returns {replica index: version served}.

        Raises EngineError naming the replicas that failed; those stay down and retry the reload when
        next polled (a replica that failed part-way must not serve the old or a mixed model).
        """
        if not self.owner:
            raise EngineError("an attached fleet router cannot reload weights: the fleet's owner does")
        version = version or checkpoint_dir
        with self._lock:
            self.weights_dir, self.version = checkpoint_dir, version
            self.generation += 1
            targets = [r for r in self.replicas if r.state != DEAD]
            # Retried by Ray if the actor dies mid-reload: the restarted actor then reloads from scratch.
            refs = {
                r.handle.load_weights.options(max_task_retries=-1).remote(
                    checkpoint_dir, version, self.generation
                ): r
                for r in targets
            }
        versions: dict[int, str] = {}
        failed: list[str] = []
        for ref, r in refs.items():
            try:
                versions[r.index] = ray.get(ref)
                with self._lock:
                    r.state, r.recovery = UP, None
            except RETRYABLE as e:
                self._fail(r, e)
                failed.append(f"replica {r.index}: {type(e).__name__}: {str(e).splitlines()[0]}")
        if failed or not versions:
            raise EngineError(
                f"reload of {checkpoint_dir} as {version!r} failed on {len(failed)} of {len(refs)} replica(s): "
                + "; ".join(failed or ["no live replica"])
            )
        return versions

    # ------------------------------------------------------------------------------------------ status
    def stats(self, timeout_s: float = 10.0) -> list[dict[str, Any]]:
        """Per replica: the pool's view (state, in flight, keys, failures) and the actor's own counters."""
        with self._lock:
            self._poll_recoveries()
        out = []
        refs = {r.index: r.handle.stats.remote() for r in self.replicas if r.state != DEAD}
        for r in self.replicas:
            row: dict[str, Any] = {
                "replica": r.index,
                "state": r.state,
                "pool_in_flight": r.in_flight,
                "keys": r.keys,
                "failures": r.failures,
                "served": r.served,
                "last_error": r.last_error,
            }
            if r.index in refs:
                try:
                    row.update(ray.get(refs[r.index], timeout=timeout_s))
                except (RayActorError, GetTimeoutError) as e:
                    row["unreachable"] = type(e).__name__
            out.append(row)
        return out

    def health(self) -> dict[str, Any]:
        """Replica states and the weights version; ``ok`` when every replica is up on that version."""
        rows = self.stats()
        states = [r["state"] for r in rows]
        ok = all(r["state"] == UP and r.get("version") == self.version for r in rows)
        return {
            "ok": ok,
            "version": self.version,
            "up": states.count(UP),
            "down": states.count(DOWN),
            "dead": states.count(DEAD),
            "replicas": rows,
        }

    def close(self, timeout_s: float = 30.0) -> None:
        """Stop every replica: its engine shuts down first (vLLM's engine core may be a child process that
        a killed actor would orphan), then the actor is killed (no restart). An attached router only
        forgets the actors."""
        if self.owner:
            live = [r for r in self.replicas if r.state != DEAD]
            refs = [r.handle.close.remote() for r in live]
            if refs:  # a replica still busy with an abandoned batch, or hung, is killed at the timeout
                ray.wait(refs, num_returns=len(refs), timeout=timeout_s)
            for r in self.replicas:
                ray.kill(r.handle, no_restart=True)
        for r in self.replicas:
            r.state = DEAD
        self._homes.clear()

    def __enter__(self) -> ReplicaPool:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()
