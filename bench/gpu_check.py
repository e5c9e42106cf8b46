"""GPU checks for a bare machine with only PyTorch and transformers (no vLLM, Ray, DeepSpeed or network).

    python bench/gpu_check.py                      # on a CUDA machine: every check, ~3-6 minutes on one H100
    python bench/gpu_check.py --device cpu --quick # the same code path on a CPU (a smoke run, minutes)

Prints one line per figure; CI never runs it. What it measures:
1. the hf engine (the project's transformers engine) on CUDA: greedy output is deterministic, and the
   logprobs it reports match a plain forward pass;
2. the batched MCTS vs the same search one tree at a time (one engine call per expansion), on the hf
   engine: the >= 8x target that two CPU cores cannot show (measured ceiling there: 3.7x);
3. a DPO step in bf16 (sigmoid loss, reference log-probs precomputed, as the project trains) on a
   Llama-shaped model: seconds per step, tokens per second and MFU against the GPU's bf16 peak.
Models are built here (random weights, no download): the tiny test model for 1-2 (its own BPE tokenizer,
trained in seconds), a Llama of --dpo-size (135m, 1b, 8b shapes) for 3. A random policy rarely writes a
call, so its trees end early and 2 is a lower bound of what batching gives a trained policy; pass
--model DIR (a checkpoint small enough to carry, bf16) for the real figure. Needs pydantic and PyYAML besides
torch and transformers (the project's config); without network, carry their wheels and
`pip install --no-index wheels/*.whl`.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time

# bf16 dense peak TFLOP/s by device name (vendor figures, no sparsity)
PEAK_TFLOPS = {"H100": 989.0, "H200": 989.0, "A100": 312.0, "L4": 121.0}

DPO_SHAPES = {  # hidden, layers, heads, kv heads, intermediate
    "135m": (576, 30, 9, 3, 1536),
    "1b": (2048, 16, 32, 8, 8192),
    "8b": (4096, 32, 32, 8, 14336),
}


def _line(name: str, value: str) -> None:
    print(f"{name:<44} {value}", flush=True)


def check_engine(model_dir: str, device: str) -> None:
    import torch

    from itool_ray.config import EngineConfig
    from itool_ray.engines.base import GenerationRequest
    from itool_ray.engines.hf import HFEngine

    engine = HFEngine(model_dir, EngineConfig(kind="hf", cpu_threads=os.cpu_count() or 1), dtype="bfloat16")
    _line("hf engine device", str(next(engine.model.parameters()).device))
    if device == "cuda":
        assert next(engine.model.parameters()).is_cuda, "the hf engine did not put the model on CUDA"
    reqs = [
        GenerationRequest(f'[get_weather(city="Paris {i}"', max_tokens=16, logprobs=True) for i in range(8)
    ]
    a, b = engine.generate(reqs), engine.generate(reqs)
    same = all(x.completions[0].token_ids == y.completions[0].token_ids for x, y in zip(a, b, strict=True))
    _line("greedy output deterministic", str(same))
    c = a[0].completions[0]
    prompt_ids = engine.tokenizer(reqs[0].prompt, add_special_tokens=False)["input_ids"]
    ids = torch.tensor([prompt_ids + list(c.token_ids)], device=engine.model.device)
    with torch.no_grad():
        logits = engine.model(ids).logits.float()
    lp = torch.log_softmax(logits[0, len(prompt_ids) - 1 : -1], -1)
    ref = lp.gather(1, ids[0, len(prompt_ids) :, None]).squeeze(1).tolist()
    err = max(abs(x - y) for x, y in zip(ref, c.logprobs, strict=True)) if c.logprobs else float("nan")
    _line("max |logprob - forward pass| (bf16)", f"{err:.2e}")
    engine.close()


def check_mcts_batching(model_dir: str, trees: int, simulations: int) -> None:
    from itool_ray.config import EngineConfig, MCTSConfig
    from itool_ray.data.synth import generate
    from itool_ray.engines.hf import HFEngine
    from itool_ray.mcts import SearchTask, run_search
    from itool_ray.models import load_tokenizer
    from itool_ray.prompts import render_prompt

    tok = load_tokenizer(model_dir, data_dir=model_dir)
    samples = generate(trees, seed=0, split="train", categories=["simple", "parallel", "reasoning"])
    tasks = [SearchTask(s, render_prompt(tok, s.tools, s.messages)) for s in samples]
    engine = HFEngine(model_dir, EngineConfig(kind="hf"), dtype="bfloat16", seed=0)
    base = MCTSConfig(simulations=simulations, max_tokens=48, max_failed_fraction=1.0)
    runs = {
        "batched": base.model_copy(update={"concurrent_trees": trees}),
        "one tree at a time": base.model_copy(update={"concurrent_trees": 1, "leaves_per_tree": 1}),
    }
    run_search(tasks[:2], engine, runs["batched"])  # warm-up
    rate = {}
    for name, cfg in runs.items():
        t = time.perf_counter()
        res = run_search(tasks, engine, cfg)
        dt = time.perf_counter() - t
        rate[name] = trees / dt
        _line(
            f"mcts {name}",
            f"{rate[name]:.2f} trees/s ({dt:.1f} s, {res.stats.engine_calls} engine calls, "
            f"{res.stats.generated_tokens} tokens)",
        )
    _line("mcts batched / one tree at a time", f"{rate['batched'] / rate['one tree at a time']:.1f}x")
    engine.close()


def check_dpo_step(size: str, device: str, batch: int, length: int, steps: int) -> None:
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    hidden, layers, heads, kv, inter = DPO_SHAPES[size]
    cfg = LlamaConfig(
        vocab_size=49152,
        hidden_size=hidden,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        num_key_value_heads=kv,
        intermediate_size=inter,
        max_position_embeddings=4096,
        tie_word_embeddings=size == "135m",
    )
    torch.manual_seed(0)
    model = LlamaForCausalLM(cfg).to(device=device, dtype=torch.float32)
    if device == "cuda":
        model.gradient_checkpointing_enable()
    params = sum(p.numel() for p in model.parameters())
    opt = torch.optim.AdamW(model.parameters(), lr=1e-6, fused=device == "cuda")
    prompt = length // 2
    chosen = torch.randint(0, cfg.vocab_size, (batch, length), device=device)
    rejected = chosen.clone()
    rejected[:, prompt:] = torch.randint(0, cfg.vocab_size, (batch, length - prompt), device=device)
    seqs = torch.cat([chosen, rejected])
    mask = torch.zeros_like(seqs, dtype=torch.bool)
    mask[:, prompt:] = True

    def logps(m) -> torch.Tensor:
        with torch.autocast(device_type=device, dtype=torch.bfloat16):
            logits = m(seqs).logits[:, :-1].float()
        lp = torch.log_softmax(logits, -1).gather(2, seqs[:, 1:, None]).squeeze(2)
        return (lp * mask[:, 1:]).sum(1)

    with torch.no_grad():
        ref = logps(model)  # precomputed reference log-probs, as the project's DPO does
    times = []
    for _ in range(steps + 1):
        if device == "cuda":
            torch.cuda.synchronize()
        t = time.perf_counter()
        pol = logps(model)
        margin = (pol[:batch] - ref[:batch]) - (pol[batch:] - ref[batch:])
        loss = -torch.nn.functional.logsigmoid(0.1 * margin).mean()
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        if device == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t)
    step = sorted(times[1:])[len(times[1:]) // 2]  # median, first step excluded
    tokens = 2 * batch * length
    # 6 N T for forward + backward, plus one more forward under gradient checkpointing (8 N T).
    flops = (8 if device == "cuda" else 6) * params * tokens / step
    _line(
        f"dpo step bf16 ({size}, {params / 1e6:.0f}M params)",
        f"{step:.3f} s/step, {tokens / step:,.0f} tokens/s",
    )
    _line("dpo loss finite", str(bool(torch.isfinite(loss).item())))
    if device == "cuda":
        name = torch.cuda.get_device_name()
        peak = next((v for k, v in PEAK_TFLOPS.items() if k in name), None)
        mfu = f"{flops / (peak * 1e12):.1%} of {peak:.0f} TFLOP/s" if peak else "unknown peak"
        _line(f"dpo MFU ({name})", f"{flops / 1e12:.1f} TFLOP/s = {mfu}")
        _line("peak GPU memory", f"{torch.cuda.max_memory_allocated() / 2**30:.1f} GiB")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--device", default=None, help="cuda (default when available) or cpu")
    ap.add_argument("--quick", action="store_true", help="small sizes (a CPU smoke run)")
    ap.add_argument("--trees", type=int, default=64)
    ap.add_argument("--simulations", type=int, default=8)
    ap.add_argument("--dpo-size", default="1b", choices=sorted(DPO_SHAPES))
    ap.add_argument("--model", default=None, help="a HF checkpoint for checks 1-2 (default: the tiny model)")
    args = ap.parse_args()
    import torch

    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    if args.quick:
        args.trees, args.simulations, args.dpo_size = 8, 4, "135m"
    _line("torch / cuda", f"{torch.__version__} / {torch.version.cuda} ({device})")
    from itool_ray.models import build_tiny

    with tempfile.TemporaryDirectory() as tmp:
        t = time.perf_counter()
        model_dir = args.model or build_tiny(tmp)
        _line("model for the engine checks", f"{model_dir} ({time.perf_counter() - t:.1f} s)")
        check_engine(model_dir, device)
        check_mcts_batching(model_dir, args.trees, args.simulations)
    batch, length = (2, 128) if args.quick else (8, 1024)
    check_dpo_step(args.dpo_size, device, batch, length, steps=2 if args.quick else 5)


if __name__ == "__main__":
    main()
