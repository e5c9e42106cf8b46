"""Trees per second of the batched MCTS vs the same search one tree at a time (one engine call per expansion).

    python bench/bench_mcts.py                       # tiny model, hf engine, 32 trees
    python bench/bench_mcts.py --model embedded:smollm2 --engine vllm --trees 32
    python bench/bench_mcts.py --model runs/NAME/warmup/ckpt --engine vllm --dtype bfloat16 --leaves-per-tree 1,4
    python bench/bench_mcts.py ... --no-prefix-cache --no-sequential    # the prefix cache's share

Batched: ``concurrent_trees`` trees advance together and every wave is one engine call.
Sequential: ``concurrent_trees=1`` and ``leaves_per_tree=1`` — one tree at a time, one engine call per
expansion, as a naive implementation does. Same engine, same samples, same budgets.
"""

from __future__ import annotations

import argparse
import os
import time


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="tiny")
    ap.add_argument("--engine", default="hf", choices=["hf", "vllm"])
    ap.add_argument("--trees", type=int, default=32)
    ap.add_argument("--simulations", type=int, default=8)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--dtype", default="float32", help="engine dtype (the quickstart uses bfloat16)")
    ap.add_argument("--kv-cache-mb", type=int, default=1024, help="vLLM on CPU: KV cache size")
    ap.add_argument(
        "--leaves-per-tree",
        default="1",
        help="batched search: leaves per tree per wave (comma list: one run each)",
    )
    ap.add_argument("--no-prefix-cache", action="store_true", help="vllm: run with prefix caching off")
    ap.add_argument("--no-sequential", action="store_true", help="skip the one-tree-at-a-time run")
    ap.add_argument("--data-dir", default=os.path.expanduser("~/.cache/itool-ray"))
    args = ap.parse_args()
    os.environ.setdefault("OMP_NUM_THREADS", str(args.threads))

    from itool_ray.config import EngineConfig, MCTSConfig
    from itool_ray.data.synth import generate
    from itool_ray.engines import make_engine
    from itool_ray.mcts import SearchTask, run_search
    from itool_ray.models import load_tokenizer, resolve_model
    from itool_ray.prompts import render_prompt

    model_dir = resolve_model(args.model, data_dir=args.data_dir)
    tok = load_tokenizer(model_dir, data_dir=args.data_dir)
    samples = generate(args.trees, seed=0, split="train", categories=["simple", "parallel", "reasoning"])
    tasks = [SearchTask(s, render_prompt(tok, s.tools, s.messages)) for s in samples]
    engine_cfg = EngineConfig(
        cpu_threads=args.threads,
        kv_cache_memory_bytes=args.kv_cache_mb * 2**20,
        enable_prefix_caching=not args.no_prefix_cache,
    )
    engine = make_engine(args.engine, model_dir, engine_cfg, dtype=args.dtype, seed=0)
    base = MCTSConfig(simulations=args.simulations, max_tokens=64, max_failed_fraction=1.0)
    leaves = [int(x) for x in args.leaves_per_tree.split(",")]
    runs = {
        f"batched, {k} leaf/tree": base.model_copy(
            update={"concurrent_trees": args.trees, "leaves_per_tree": k}
        )
        for k in leaves
    }
    if not args.no_sequential:
        runs["one tree at a time"] = base.model_copy(update={"concurrent_trees": 1, "leaves_per_tree": 1})
    run_search(tasks[:2], engine, next(iter(runs.values())))  # warm-up (compilation, caches)
    print(
        f"model {args.model} ({model_dir}), engine {args.engine}, {args.trees} trees, "
        f"{args.simulations} simulations, "
        f"KV cache {args.kv_cache_mb} MiB, prefix cache {'off' if args.no_prefix_cache else 'on'}, "
        f"{args.dtype}, load {os.getloadavg()[0]:.1f}"
    )
    rates = {}
    for name, cfg in runs.items():
        t = time.perf_counter()
        res = run_search(tasks, engine, cfg)
        dt = time.perf_counter() - t
        s = res.stats
        rates[name] = len(tasks) / dt
        print(
            f"{name:>22}: {dt:7.1f} s  {rates[name]:6.2f} trees/s  engine calls {s.engine_calls:5d}  "
            f"requests {s.requests:5d}  tokens {s.generated_tokens:6d}  failed {s.trees_failed}"
        )
    if "one tree at a time" in rates:
        for name, rate in rates.items():
            if name != "one tree at a time":
                print(f"speed-up of {name}: {rate / rates['one tree at a time']:.1f}x")
    engine.close()


if __name__ == "__main__":
    main()
