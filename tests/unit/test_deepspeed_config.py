"""The DeepSpeed config builder and its consistency checker (no DeepSpeed import needed)."""

from __future__ import annotations

import copy

import pytest

from itool_ray.config import DistributedConfig
from itool_ray.train.deepspeed import DeepSpeedConfigError, build_deepspeed_config, check_deepspeed_config


def build(world_size: int = 2, micro: int = 2, accum: int = 1, **dist):
    return build_deepspeed_config(
        DistributedConfig(num_workers=world_size, **dist),
        micro_batch_size=micro,
        grad_accum=accum,
        world_size=world_size,
    )


def test_stage_zero_means_no_deepspeed():
    assert build(zero_stage=0) is None


@pytest.mark.parametrize("stage", [1, 2, 3])
def test_built_configs_pass_the_checker(stage):
    ds = build(world_size=4, micro=3, accum=2, zero_stage=stage)
    assert ds["train_batch_size"] == 3 * 2 * 4
    assert ds["zero_optimization"]["stage"] == stage
    check_deepspeed_config(ds, world_size=4, use_gpu=False)


def test_batch_arithmetic_must_match_the_world_size():
    ds = build(world_size=2, zero_stage=2)
    with pytest.raises(DeepSpeedConfigError, match=r"train_batch_size 4 != .* world size 1"):
        check_deepspeed_config(ds, world_size=1, use_gpu=False)


def test_zero3_export_needs_gathered_weights():
    ds = build(zero_stage=3)
    assert ds["zero_optimization"]["stage3_gather_16bit_weights_on_model_save"] is True
    ds["zero_optimization"]["stage3_gather_16bit_weights_on_model_save"] = False
    with pytest.raises(DeepSpeedConfigError, match="stage3_gather_16bit_weights_on_model_save"):
        check_deepspeed_config(ds, world_size=2, use_gpu=False)


def test_offload_with_the_client_optimizer_needs_force_ds_cpu_optimizer_off():
    ds = build(zero_stage=3, offload_optimizer=True, offload_params=True)
    assert ds["zero_force_ds_cpu_optimizer"] is False
    assert ds["zero_optimization"]["offload_param"]["device"] == "cpu"
    broken = copy.deepcopy(ds)
    del broken["zero_force_ds_cpu_optimizer"]
    with pytest.raises(DeepSpeedConfigError, match="zero_force_ds_cpu_optimizer"):
        check_deepspeed_config(broken, world_size=2, use_gpu=False)


def test_fp16_only_on_gpu_and_never_with_bf16():
    ds = build(zero_stage=2, precision="fp16", use_gpu=True)
    check_deepspeed_config(ds, world_size=2, use_gpu=True)
    with pytest.raises(DeepSpeedConfigError, match="fp16.enabled on CPU"):
        check_deepspeed_config(ds, world_size=2, use_gpu=False)
    ds["bf16"]["enabled"] = True
    with pytest.raises(DeepSpeedConfigError, match="pick one precision"):
        check_deepspeed_config(ds, world_size=2, use_gpu=True)


def test_bf16_is_allowed_on_cpu():
    ds = build(zero_stage=2, precision="bf16")
    assert ds["bf16"]["enabled"] is True and ds["fp16"]["enabled"] is False


def test_every_problem_is_reported_at_once():
    ds = build(zero_stage=3)
    ds["train_batch_size"] = "auto"
    ds["gradient_accumulation_steps"] = "auto"
    ds["zero_optimization"]["offload_param"] = {"device": "cpu"}
    ds["zero_optimization"]["stage"] = 2
    ds["optimizer"] = {"type": "AdamW"}
    with pytest.raises(DeepSpeedConfigError) as info:
        check_deepspeed_config(ds, world_size=2, use_gpu=False)
    message = str(info.value)
    for fragment in (
        "train_batch_size must be a positive integer",
        "gradient_accumulation_steps is 'auto'",
        "offload_param needs stage 3",
        "'optimizer' section",
    ):
        assert fragment in message, message


def test_hidden_size_buckets_may_stay_auto():
    ds = build(zero_stage=3)
    assert ds["zero_optimization"]["stage3_prefetch_bucket_size"] == "auto"
    check_deepspeed_config(ds, world_size=2, use_gpu=False)
