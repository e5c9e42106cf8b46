"""Placement (DESIGN §4): what each actor asks Ray for, and how an actor hosts an engine — from config.

    options = replica_options(cfg.replicas, engine_cfg)        # Ray actor options of one policy replica
    replica_demand(cfg), worker_demand(cfg)                    # one replica's / one training worker's bundle
    fits_beside_fleet(cfg)                                     # fleet and training workers on the cluster at once
    engine = host_engine(model_dir, cfg.engine, cfg.replicas, dtype=..., seed=...)   # inside the actor

Every actor that hosts an engine (a fleet replica, a Serve replica) is placed and built through here, so
a replica's resources, its CPU threads and its CUDA check are the same wherever it runs. As in veRL's
resource pools, roles and their resources are data (``replicas.*``, ``distributed.*``), not code in stages.
"""

from __future__ import annotations

from typing import Any

from itool_ray.config import Config, EngineConfig, ReplicaConfig
from itool_ray.engines import resolve_kind
from itool_ray.engines.base import Engine, EngineError


def replica_gpus(rcfg: ReplicaConfig) -> float:
    """GPUs of one replica: ``num_gpus``, and at least one per tensor-parallel shard."""
    return max(rcfg.num_gpus, rcfg.tensor_parallel_size) if rcfg.num_gpus > 0 else 0


def replica_options(rcfg: ReplicaConfig, engine_cfg: EngineConfig) -> dict[str, Any]:
    """Ray actor options for one replica: resources, restart policy and environment, from config.

    A GPU replica takes ``num_gpus`` (at least ``tensor_parallel_size``: one GPU per shard). A CPU
    replica takes ``num_cpus`` cores and starts with the thread settings its engine needs before torch
    is imported (vLLM's ``cpu_env``). Several CPU replicas share a node's cores, so vLLM's
    multi-process mode must not pin them all to the same cores ("nobind"). The actor restarts on failure
    but never retries a task itself: the pool retries, so it can move a request to a survivor.
    """
    options: dict[str, Any] = {
        "num_cpus": rcfg.num_cpus,
        "num_gpus": replica_gpus(rcfg),
        "max_restarts": rcfg.max_restarts,
        "max_task_retries": 0,
    }
    if rcfg.resources:
        options["resources"] = dict(rcfg.resources)
    if rcfg.num_gpus == 0:
        env = {"OMP_NUM_THREADS": str(engine_cfg.cpu_threads)}
        if resolve_kind(engine_cfg.kind) == "vllm":
            from itool_ray.engines.vllm import cpu_env

            env = cpu_env(engine_cfg)
            if rcfg.num_replicas > 1:
                env["VLLM_CPU_OMP_THREADS_BIND"] = "nobind"
        options["runtime_env"] = {"env_vars": env}
    return options


def cpu_engine_config(engine_cfg: EngineConfig, rcfg: ReplicaConfig) -> EngineConfig:
    """A CPU replica's engine uses its configured threads, but no more than the cores Ray reserved for it."""
    if rcfg.num_gpus > 0:
        return engine_cfg
    threads = max(1, min(engine_cfg.cpu_threads, int(rcfg.num_cpus)))
    return engine_cfg.model_copy(update={"cpu_threads": threads})


def engine_kwargs(rcfg: ReplicaConfig) -> dict[str, Any]:
    """Engine arguments that come from the replica's placement (tensor parallelism)."""
    return {"tensor_parallel_size": rcfg.tensor_parallel_size} if rcfg.tensor_parallel_size > 1 else {}


def host_engine(model_dir: str, engine_cfg: EngineConfig, **kwargs: Any) -> Engine:
    """Build the engine an actor hosts, inside the actor. ``engine_cfg`` is already fitted to the actor's
    cores (``cpu_engine_config``). A GPU that Ray gave the actor but torch cannot use is an error, never a
    quiet fallback to the CPU."""
    import ray

    from itool_ray.engines import make_engine

    if ray.is_initialized() and ray.get_gpu_ids():
        import torch

        if not torch.cuda.is_available():
            raise EngineError(
                f"replica on node {ray.get_runtime_context().get_node_id()[:12]}: Ray gave it GPUs "
                f"{ray.get_gpu_ids()} but torch {torch.__version__} cannot use CUDA (driver too old for "
                "this torch build?)"
            )
    return make_engine(engine_cfg.kind, model_dir, engine_cfg, **kwargs)


# -- resource demands (the runner's placement decisions) ---------------------------------------------------
def replica_demand(cfg: Config) -> dict[str, float]:
    """What one replica of the fleet asks Ray for."""
    r = cfg.replicas
    return {k: v for k, v in {"CPU": r.num_cpus, "GPU": replica_gpus(r), **r.resources}.items() if v}


def worker_demand(cfg: Config) -> dict[str, float]:
    """What one training worker asks Ray for (nothing when training runs in the driver: num_workers 0)."""
    d = cfg.distributed
    if d.num_workers == 0:
        return {}
    per = {"CPU": d.cpus_per_worker, "GPU": d.gpus_per_worker if d.use_gpu else 0, **d.resources_per_worker}
    return {k: v for k, v in per.items() if v}


def fleet_resources(cfg: Config) -> dict[str, float]:
    return {k: v * cfg.replicas.num_replicas for k, v in replica_demand(cfg).items()}


def training_resources(cfg: Config) -> dict[str, float]:
    return {k: v * cfg.distributed.num_workers for k, v in worker_demand(cfg).items()}


def fits_beside_fleet(cfg: Config, total: dict[str, float] | None = None) -> bool:
    """True when the cluster (``ray.cluster_resources()`` now) holds the fleet and the training workers at
    once, so the fleet can stay up through training and take the new weights in place."""
    if total is None:
        import ray

        total = ray.cluster_resources()
    fleet, train = fleet_resources(cfg), training_resources(cfg)
    return all(fleet.get(k, 0) + train.get(k, 0) <= total.get(k, 0) for k in set(fleet) | set(train))
