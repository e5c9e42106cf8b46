"""Training: warm-up SFT and preference optimisation, TRL trainers inside Ray Train (see ray_train.py)."""

from itool_ray.train.common import TrainError, TrainResult
from itool_ray.train.deepspeed import DeepSpeedConfigError, build_deepspeed_config, check_deepspeed_config
from itool_ray.train.preference import run_preference
from itool_ray.train.sft import run_sft, run_warmup

__all__ = [
    "DeepSpeedConfigError",
    "TrainError",
    "TrainResult",
    "build_deepspeed_config",
    "check_deepspeed_config",
    "run_preference",
    "run_sft",
    "run_warmup",
]
