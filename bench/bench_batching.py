"""How much batching can buy on this machine: generation throughput versus sequences in flight.

    python bench/bench_batching.py --model runs/NAME/warmup/ckpt --engine vllm --dtype bfloat16
    python bench/bench_batching.py                      # embedded SmolLM2, vllm when installed

The batched MCTS (bench_mcts.py) sends one engine call per wave; the one-tree-at-a-time search sends
one request with ``n`` continuations per call. Its speed-up can only come from (a) more tokens per second
at a larger batch and (b) fewer calls (per-call overhead). This bench measures (a) on the MCTS-shaped
request (tool-calling prompts, ``n`` continuations each, temperature 1, up to ``max_tokens`` tokens), so
the ceiling of the search's speed-up on the machine at hand is read off the last column. Every row
generates for the same requests, ``k`` per call (k=1 is the one-tree-at-a-time shape); the last column
is tokens per second relative to k=1, per-call overhead included. Prompts are sent once untimed first,
so every timed call finds them in the prefix cache, as the search's later waves do.
"""

from __future__ import annotations

import argparse
import os
import time


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="embedded:smollm2")
    ap.add_argument("--engine", default="auto", choices=["auto", "hf", "vllm"])
    ap.add_argument("--requests", default="1,4,16,32,64", help="requests per call, k (comma list)")
    ap.add_argument("--n", type=int, default=3, help="continuations per request (mcts.num_children)")
    ap.add_argument("--max-tokens", type=int, default=64)
    ap.add_argument("--dtype", default="bfloat16")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--kv-cache-mb", type=int, default=1024, help="vLLM on CPU: KV cache size")
    ap.add_argument("--data-dir", default=os.path.expanduser("~/.cache/itool-ray"))
    args = ap.parse_args()
    os.environ.setdefault("OMP_NUM_THREADS", str(args.threads))
    counts = [int(x) for x in args.requests.split(",")]

    from itool_ray.config import EngineConfig
    from itool_ray.data.synth import generate
    from itool_ray.engines import GenerationRequest, make_engine
    from itool_ray.models import load_tokenizer, resolve_model
    from itool_ray.prompts import render_prompt

    model_dir = resolve_model(args.model, data_dir=args.data_dir)
    tok = load_tokenizer(model_dir, data_dir=args.data_dir)
    samples = generate(max(counts), seed=0, split="train", categories=["simple", "parallel", "reasoning"])
    prompts = [render_prompt(tok, s.tools, s.messages) for s in samples]
    lengths = sorted(len(tok(p, add_special_tokens=False)["input_ids"]) for p in prompts)
    cfg = EngineConfig(
        kind=args.engine, cpu_threads=args.threads, kv_cache_memory_bytes=args.kv_cache_mb * 2**20
    )
    engine = make_engine(args.engine, model_dir, cfg, dtype=args.dtype, seed=0)

    every = [GenerationRequest(p, n=args.n, max_tokens=args.max_tokens, temperature=1.0) for p in prompts]
    engine.generate(every)  # untimed: fills the prefix cache, warms kernels
    print(
        f"model {args.model} ({model_dir}), engine {type(engine).__name__}, {args.dtype}, {args.threads} threads, "
        f"n={args.n}, max_tokens={args.max_tokens}, prompts {lengths[0]}-{lengths[-1]} tokens "
        f"(median {lengths[len(lengths) // 2]}), load {os.getloadavg()[0]:.1f}"
    )
    print(f"every row generates for the same {len(every)} requests, k requests per call")
    print(f"{'k':>4} {'sequences':>9} {'calls':>5} {'seconds':>8} {'tokens':>7} {'tok/s':>7} {'vs k=1':>7}")
    base = None
    for k in counts:
        t, tokens = time.perf_counter(), 0
        for i in range(0, len(every), k):
            out = engine.generate(every[i : i + k])
            tokens += sum(len(c.token_ids) for r in out for c in r.completions)
        dt = time.perf_counter() - t
        rate = tokens / dt
        base = base or rate
        calls = -(-len(every) // k)
        print(
            f"{k:>4} {k * args.n:>9} {calls:>5} {dt:>8.2f} {tokens:>7} {rate:>7.1f} {rate / base:>6.1f}x",
            flush=True,
        )
    engine.close()


if __name__ == "__main__":
    main()
