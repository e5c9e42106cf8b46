"""``auto`` precision: bf16 only where this machine runs it natively (emulated bf16 is many times slower)."""

from __future__ import annotations

import pytest
import torch

from itool_ray.config import load_config
from itool_ray.precision import native_bf16, resolve_dtype, resolve_precision


@pytest.mark.parametrize(
    "avx512_bf16, amx, expected", [(True, False, True), (False, True, True), (False, False, False)]
)
def test_a_cpu_has_native_bf16_with_avx512_bf16_or_amx(monkeypatch, avx512_bf16, amx, expected):
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: avx512_bf16, raising=False)
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: amx, raising=False)
    assert native_bf16(on_gpu=False) is expected
    assert resolve_dtype("auto", on_gpu=False) == ("bfloat16" if expected else "float32")
    assert resolve_precision("auto", on_gpu=False) == ("bf16" if expected else "fp32")
    # An explicit choice is kept whatever the hardware.
    assert (
        resolve_dtype("bfloat16", on_gpu=False) == "bfloat16"
        and resolve_precision("fp32", on_gpu=False) == "fp32"
    )


def test_the_quickstart_asks_for_auto_and_the_config_accepts_it():
    cfg = load_config("quickstart")
    assert cfg.model.dtype == "auto" and cfg.distributed.precision == "auto"


@pytest.mark.parametrize("native", [False, True])
def test_an_engine_built_with_auto_takes_the_dtype_this_machine_runs_natively(
    monkeypatch, tiny_model_dir, native
):
    from itool_ray import precision
    from itool_ray.engines import make_engine

    monkeypatch.setattr(precision, "native_bf16", lambda *, on_gpu: native)
    cfg = load_config("tiny")
    engine = make_engine("hf", tiny_model_dir, cfg.engine, dtype="auto")
    try:
        assert engine.model.dtype == (torch.bfloat16 if native else torch.float32)
    finally:
        engine.close()
