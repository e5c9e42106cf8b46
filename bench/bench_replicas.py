"""Generation throughput of a ReplicaPool: 1 replica vs 2, for the hf and vllm engines.

    python bench/bench_replicas.py --model smollm2 --engines hf,vllm --prompts 24
    python bench/bench_replicas.py --model tiny --prompts 64

The workload is MCTS-like: every synthetic sample's prompt (compact style) is one key, asking for
``--n`` sampled continuations of up to ``--max-tokens`` tokens, all in one ``pool.generate`` call.
On a CPU machine the cores are split evenly: with C cores, 1 replica runs C threads and 2 replicas run
C/2 threads each, so the comparison is "one engine using every core" vs "two engines sharing them".
Prints one line per configuration and a markdown table at the end.
"""

from __future__ import annotations

import argparse
import os
import time


def _prompts(model_dir: str, count: int) -> tuple[list[str], str]:
    from transformers import AutoTokenizer

    from itool_ray.data.synth import generate
    from itool_ray.prompts import end_of_turn, render_prompt

    tok = AutoTokenizer.from_pretrained(model_dir)
    samples = generate(count, seed=0)
    return [render_prompt(tok, s.tools, s.messages, style="compact") for s in samples], end_of_turn(tok)


def bench(kind: str, replicas: int, model_dir: str, args: argparse.Namespace) -> dict:
    from actors.pool import ReplicaPool
    from itool_ray.config import EngineConfig, ReplicaConfig
    from itool_ray.engines.base import GenerationRequest

    cores = args.cores
    threads = max(1, cores // replicas)
    engine = EngineConfig(
        kind=kind, cpu_threads=threads, kv_cache_memory_bytes=256 * 2**20, max_model_len=1024
    )
    rcfg = ReplicaConfig(num_replicas=replicas, num_cpus=threads, max_restarts=0, max_request_retries=0)
    prompts, stop = _prompts(model_dir, args.prompts)
    requests = [
        GenerationRequest(p, n=args.n, max_tokens=args.max_tokens, temperature=1.0, stop=[stop])
        for p in prompts
    ]
    keys = list(range(len(requests)))

    t0 = time.perf_counter()
    pool = ReplicaPool(model_dir, engine, rcfg, ready_timeout_s=900)
    start_s = time.perf_counter() - t0
    try:
        pool.generate(
            requests[: 2 * replicas], keys=[f"warm-{i}" for i in range(2 * replicas)]
        )  # compile/warm
        best = None
        for _ in range(args.repeats):
            t = time.perf_counter()
            results = pool.generate(requests, keys=keys)
            wall = time.perf_counter() - t
            tokens = sum(len(c.token_ids) for r in results for c in r.completions)
            if best is None or tokens / wall > best[0] / best[1]:
                best = (tokens, wall)
            pool.release()
        per_replica = [row.get("tokens", 0) for row in pool.stats()]
    finally:
        pool.close()
    tokens, wall = best
    return {
        "engine": kind,
        "replicas": replicas,
        "threads_per_replica": threads,
        "start_s": round(start_s, 1),
        "tokens": tokens,
        "wall_s": round(wall, 2),
        "tok_per_s": round(tokens / wall, 1),
        "tokens_per_replica": per_replica,
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", default="smollm2", help="tiny | smollm2 | a Hugging Face model directory")
    parser.add_argument("--engines", default="hf,vllm")
    parser.add_argument("--replicas", default="1,2")
    parser.add_argument("--prompts", type=int, default=24)
    parser.add_argument("--n", type=int, default=3)
    parser.add_argument("--max-tokens", type=int, default=48)
    parser.add_argument(
        "--repeats", type=int, default=2, help="timed runs per configuration; the best is kept"
    )
    parser.add_argument(
        "--cores", type=int, default=os.cpu_count() or 2, help="CPU cores to split among replicas"
    )
    parser.add_argument("--data-dir", default=os.path.expanduser("~/.cache/itool-ray"))
    args = parser.parse_args()

    import ray

    from itool_ray.models import import_embedded, resolve_model

    if args.model == "smollm2":
        model_dir = import_embedded(args.data_dir)
    else:
        model_dir = resolve_model(args.model, data_dir=args.data_dir)
    ray.init(num_cpus=args.cores, log_to_driver=False)
    rows = []
    for kind in args.engines.split(","):
        for replicas in (int(r) for r in args.replicas.split(",")):
            row = bench(kind, replicas, model_dir, args)
            print(row, flush=True)
            rows.append(row)
    ray.shutdown()

    print(
        f"\nmodel {model_dir}; {args.prompts} prompts x n={args.n}, <= {args.max_tokens} tokens, {args.cores} cores"
    )
    print(
        "| engine | replicas x threads | tokens | wall s | tok/s | tokens per replica (all runs) | start s |"
    )
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        print(
            f"| {r['engine']} | {r['replicas']} x {r['threads_per_replica']} | {r['tokens']} | {r['wall_s']} | "
            f"{r['tok_per_s']} | {r['tokens_per_replica']} | {r['start_s']} |"
        )


if __name__ == "__main__":
    main()
