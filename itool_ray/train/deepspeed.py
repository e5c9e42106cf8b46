"""The one place that builds, checks and initialises DeepSpeed for training.

    ds = build_deepspeed_config(cfg.distributed, micro_batch_size=2, grad_accum=1, world_size=2)
    # -> None for zero_stage 0 (plain DDP), else a dict for TrainingArguments(deepspeed=ds)

Every value the HF Trainer would otherwise fill in ("auto") is written out, so the checker can verify
the batch arithmetic and precision before any worker starts; only the bucket sizes that depend on the
model's hidden size stay "auto". The optimizer is always the Trainer's own torch AdamW (a *client*
optimizer): no compiled DeepSpeed CPU-Adam op is needed, which is why CPU offload sets
``zero_force_ds_cpu_optimizer: false``.
"""

from __future__ import annotations

from typing import Any

from itool_ray.config import DistributedConfig

# Keys the HF integration may fill from the model's hidden size; every other value must be concrete.
AUTO_ALLOWED = frozenset(
    {
        "zero_optimization.reduce_bucket_size",
        "zero_optimization.stage3_prefetch_bucket_size",
        "zero_optimization.stage3_param_persistence_threshold",
    }
)


# Must equal TrainingArguments.max_grad_norm (the HF integration checks the two agree).
GRADIENT_CLIPPING = 1.0


class DeepSpeedConfigError(ValueError):
    """A DeepSpeed config that would fail (or silently misbehave) at start-up; lists every problem."""


def build_deepspeed_config(
    dist: DistributedConfig, *, micro_batch_size: int, grad_accum: int, world_size: int
) -> dict[str, Any] | None:
    """The DeepSpeed config for ``dist`` (None for zero_stage 0), checked with check_deepspeed_config."""
    if dist.zero_stage == 0:
        return None
    zero: dict[str, Any] = {
        "stage": dist.zero_stage,
        "overlap_comm": dist.use_gpu,  # overlapping needs a second stream; on CPU it only costs memory
        "contiguous_gradients": True,
        "reduce_bucket_size": "auto",
    }
    if dist.offload_optimizer:
        zero["offload_optimizer"] = {"device": "cpu", "pin_memory": dist.use_gpu}
    if dist.offload_params:
        zero["offload_param"] = {"device": "cpu", "pin_memory": dist.use_gpu}
    if dist.zero_stage == 3:
        zero["stage3_prefetch_bucket_size"] = "auto"
        zero["stage3_param_persistence_threshold"] = "auto"
        # save_model() must gather the shards into full weights, or the export holds empty tensors.
        zero["stage3_gather_16bit_weights_on_model_save"] = True
    ds: dict[str, Any] = {
        "train_batch_size": micro_batch_size * grad_accum * world_size,
        "train_micro_batch_size_per_gpu": micro_batch_size,
        "gradient_accumulation_steps": grad_accum,
        "gradient_clipping": GRADIENT_CLIPPING,
        "zero_optimization": zero,
        "bf16": {"enabled": dist.precision == "bf16"},
        "fp16": {"enabled": dist.precision == "fp16"},
        "zero_allow_untested_optimizer": True,
        "steps_per_print": 10**9,  # the Trainer logs; DeepSpeed's own step prints are noise
        "wall_clock_breakdown": False,
    }
    if dist.offload_optimizer or dist.offload_params:
        ds["zero_force_ds_cpu_optimizer"] = False
    check_deepspeed_config(ds, world_size=world_size, use_gpu=dist.use_gpu)
    return ds


def check_deepspeed_config(ds: dict[str, Any], *, world_size: int, use_gpu: bool) -> None:
    """Raise DeepSpeedConfigError naming every inconsistency in ``ds`` for this world size and device."""
    problems: list[str] = []

    def concrete_int(key: str) -> int | None:
        value = ds.get(key)
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            problems.append(f"{key} must be a positive integer, got {value!r}")
            return None
        return value

    train = concrete_int("train_batch_size")
    micro = concrete_int("train_micro_batch_size_per_gpu")
    accum = concrete_int("gradient_accumulation_steps")
    if None not in (train, micro, accum) and train != micro * accum * world_size:
        problems.append(
            f"train_batch_size {train} != train_micro_batch_size_per_gpu {micro} x gradient_accumulation_steps "
            f"{accum} x world size {world_size} (= {micro * accum * world_size})"
        )

    for path, value in _flatten(ds):
        if value == "auto" and path not in AUTO_ALLOWED:
            problems.append(f"{path} is 'auto': write the value out so it can be checked")

    bf16 = bool(ds.get("bf16", {}).get("enabled"))
    fp16 = bool(ds.get("fp16", {}).get("enabled"))
    if bf16 and fp16:
        problems.append("bf16.enabled and fp16.enabled are both true: pick one precision")
    if fp16 and not use_gpu:
        problems.append("fp16.enabled on CPU: DeepSpeed's fp16 loss scaling needs a GPU (use bf16 or fp32)")

    zero = ds.get("zero_optimization", {})
    stage = zero.get("stage", 0)
    if stage not in (0, 1, 2, 3):
        problems.append(f"zero_optimization.stage must be 0, 1, 2 or 3, got {stage!r}")
    offload_opt = zero.get("offload_optimizer", {}).get("device", "none") not in ("none", None)
    offload_param = zero.get("offload_param", {}).get("device", "none") not in ("none", None)
    if offload_param and stage != 3:
        problems.append(f"zero_optimization.offload_param needs stage 3, got stage {stage}")
    if offload_opt and stage == 0:
        problems.append("zero_optimization.offload_optimizer needs stage >= 1")
    if (
        (offload_opt or offload_param)
        and "optimizer" not in ds
        and ds.get("zero_force_ds_cpu_optimizer", True)
    ):
        problems.append(
            'CPU offload with the Trainer\'s own (client) optimizer needs "zero_force_ds_cpu_optimizer": false '
            "(otherwise DeepSpeed insists on its compiled CPU-Adam)"
        )
    if stage == 3 and not zero.get("stage3_gather_16bit_weights_on_model_save", False):
        problems.append(
            "ZeRO-3 needs zero_optimization.stage3_gather_16bit_weights_on_model_save: true, or the exported "
            "Hugging Face checkpoint holds empty (partitioned) weights"
        )
    for section in ("optimizer", "scheduler"):
        if section in ds:
            problems.append(
                f"'{section}' section: the Trainer builds the {section}; remove it from the config"
            )

    if problems:
        raise DeepSpeedConfigError("invalid DeepSpeed config:\n  " + "\n  ".join(problems))


def init_deepspeed_comm(*, use_gpu: bool) -> None:
    """Initialise ``deepspeed.comm`` on top of the process group Ray Train already created.

    Must run at the top of the train function, before any model is built. Under ZeRO-3 the HF
    integration builds every ``from_pretrained`` model (our policy, and TRL's implicit reference model)
    inside ``deepspeed.zero.Init``; if deepspeed.comm is not initialised then, DeepSpeed sees a world
    size of 1 and fails with "train_batch_size is not equal to micro_batch_per_gpu * gradient_acc_step *
    world_size" (see NOTES-stack, DeepSpeed on CPU).
    """
    import deepspeed

    deepspeed.init_distributed(dist_backend="nccl" if use_gpu else "gloo")


def _flatten(d: dict[str, Any], prefix: str = ""):
    for key, value in d.items():
        path = f"{prefix}{key}"
        if isinstance(value, dict):
            yield from _flatten(value, f"{path}.")
        else:
            yield path, value
