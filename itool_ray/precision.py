"""Which floating-point format runs fast *here*: bf16 where the hardware has it, fp32 elsewhere.

bf16 autocast on a CPU without native bf16 (AVX512-BF16 or AMX) is emulated and slow: a SmolLM2-135M
warm-up step took 237 s in bf16 against 18 s in fp32 on a 2-core AVX2 machine (BENCHMARKS.md, session 7),
while on an AVX512-BF16 CPU bf16 is 1.5-3x faster than fp32. ``auto`` (``model.dtype`` for the engines,
``distributed.precision`` for training) is resolved where the work runs — in the replica or the training
worker, since nodes of one cluster may differ — never on the driver.
"""

from __future__ import annotations


def native_bf16(*, on_gpu: bool) -> bool:
    """True when bf16 runs in hardware: a CUDA GPU that supports it, or a CPU with AVX512-BF16 or AMX."""
    import torch

    if on_gpu:
        return bool(torch.cuda.is_available() and torch.cuda.is_bf16_supported())
    cpu = torch.cpu
    return bool(
        getattr(cpu, "_is_avx512_bf16_supported", lambda: False)()
        or getattr(cpu, "_is_amx_tile_supported", lambda: False)()
    )


def resolve_dtype(dtype: str, *, on_gpu: bool) -> str:
    """An engine's weights dtype: ``auto`` is ``bfloat16`` where it is native here, else ``float32``."""
    if dtype != "auto":
        return dtype
    return "bfloat16" if native_bf16(on_gpu=on_gpu) else "float32"


def resolve_precision(precision: str, *, on_gpu: bool) -> str:
    """Training precision: ``auto`` is ``bf16`` (autocast, fp32 master weights) where native, else ``fp32``."""
    if precision != "auto":
        return precision
    return "bf16" if native_bf16(on_gpu=on_gpu) else "fp32"
