"""What the stages share (DESIGN §1, §4): the config, the run directory and its layout, and the policy
fleet, which the runner owns.

A plan entry declares what it needs (``Needs``): the fleet serving a given policy, the training workers,
or nothing. The runner reads that before each stage; a stage only asks ``ctx.fleet`` for the fleet
its entry declared. One fleet serves every generation stage of a policy version: it is started on first
use, its replicas reload new weights in place when the declared policy changes, and it is closed before
training that needs its CPUs/GPUs, and at the end of the run. Starts, reloads and closes are logged and
recorded in ``manifest.json`` (``fleet``).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from itool_ray.config import Config
from itool_ray.driver.rundir import BASE, RunDir, RunLayout

log = logging.getLogger("itool")


@dataclass(frozen=True)
class Needs:
    """What a plan entry needs from the runner (nothing but the driver, by default)."""

    fleet: str | None = None  # the policy the fleet must serve: "base", "warmup", "iter_<k>", a control
    train: bool = False  # the training workers (which may need the fleet's CPUs/GPUs)


NOTHING = Needs()
TRAIN = Needs(train=True)


def fleet_of(policy: str) -> Needs:
    return Needs(fleet=policy)


class PlanEntry(NamedTuple):
    name: str
    run: Callable[[Context], None]
    needs: Needs = NOTHING


@dataclass
class Context:
    cfg: Config
    run: RunDir
    layout: RunLayout = field(init=False)
    stage: str = ""  # the stage running now (for the fleet's records)
    needs: Needs = NOTHING  # what the running stage declared
    _pool: Any = None
    _pool_model: str | None = None
    _tokenizer: Any = None
    _samples: dict[str, list] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.layout = RunLayout.of(self.cfg)

    # -- data and models ----------------------------------------------------------------------------
    def samples(self, split: str) -> list:
        if split not in self._samples:
            from itool_ray.data.loaders import load_samples

            samples, _ = load_samples(self.run.url(self.layout.split(split)), strict=True)
            self._samples[split] = samples
        return self._samples[split]

    def base_model(self) -> str:
        return self.run.read_model(self.layout.BASE_MODEL)

    def policy_model(self, policy: str) -> str:
        """The model of a policy: the base model, or the checkpoint its training stage left (local or URI)."""
        if policy == BASE:
            return self.base_model()
        return self.run.read_model(self.layout.policy_file(policy))

    def tokenizer(self) -> Any:
        if self._tokenizer is None:
            from itool_ray.models import load_tokenizer

            self._tokenizer = load_tokenizer(self.base_model(), data_dir=self.cfg.run.data_dir)
        return self._tokenizer

    # -- the policy fleet ---------------------------------------------------------------------------
    def enter(self, name: str, needs: Needs) -> None:
        """Before a stage: record what it declared; training that needs the fleet's resources gets them."""
        from actors.placement import fits_beside_fleet

        self.stage, self.needs = name, needs
        if needs.train and self._pool is not None and not fits_beside_fleet(self.cfg):
            self.release_pool("training needs its CPUs/GPUs")

    @property
    def fleet(self) -> Any:
        """The fleet serving the policy the running stage declared: started on first use, reloaded in
        place when the policy changed since the last stage."""
        if self.needs.fleet is None:
            raise RuntimeError(f"stage {self.stage} uses the fleet but its plan entry does not declare it")
        return self._open_pool(self.policy_model(self.needs.fleet))

    def _open_pool(self, model_dir: str) -> Any:
        from actors.pool import ReplicaPool

        t = time.time()
        if self._pool is None:
            self._pool = ReplicaPool.from_config(self.cfg, model_dir)
            event = "start"
        elif self._pool_model != model_dir:
            self._pool.load_weights(model_dir, version=model_dir)
            event = "reload"
        else:
            return self._pool
        self._pool_model = model_dir
        self._fleet_event(event, model_dir, time.time() - t)
        return self._pool

    def release_pool(self, reason: str = "") -> None:
        """Close the fleet: every replica's engine shut down, its CPUs/GPUs free."""
        if self._pool is not None:
            t = time.time()
            model = self._pool_model
            self._pool.close()
            self._pool, self._pool_model = None, None
            self._fleet_event("close", model or "", time.time() - t, reason=reason)

    def _fleet_event(self, event: str, model: str, seconds: float, reason: str = "") -> None:
        n = self.cfg.replicas.num_replicas
        verb = {"start": "started", "reload": "reloaded in place", "close": "closed"}[event]
        log.info(
            "fleet: %d replica(s) %s in %.1f s (%s)%s",
            n,
            verb,
            seconds,
            model,
            f": {reason}" if reason else "",
        )
        self.run.record_fleet(
            {"event": event, "stage": self.stage, "model": model, "replicas": n, "seconds": round(seconds, 2)}
            | ({"reason": reason} if reason else {})
        )

    def held_after_stage(self, settle_s: float = 10.0) -> dict[str, float]:
        """Cluster resources still held once a stage is over: the fleet's, while the runner keeps it, and
        nothing else. Waits up to ``settle_s`` for Ray to see released actors go."""
        import ray

        from actors.placement import fleet_resources

        allowed = fleet_resources(self.cfg) if self._pool is not None else {}
        deadline = time.time() + settle_s
        while True:
            total, free = ray.cluster_resources(), ray.available_resources()
            held = {
                k: round(v - free.get(k, 0.0), 3)
                for k, v in total.items()
                if not k.startswith("node:")
                and k not in ("memory", "object_store_memory")
                and v - free.get(k, 0.0) > 1e-6
            }
            if all(v <= allowed.get(k, 0) for k, v in held.items()) or time.time() > deadline:
                return held
            time.sleep(0.2)
