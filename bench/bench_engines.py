"""Generation throughput of the vllm engine vs the hf engine on the MCTS-shaped workload.

    python bench/bench_engines.py                         # SmolLM2-135M, 32 prompts, n=3, 48 tokens, T=1.0
    python bench/bench_engines.py --engines hf --dtype bfloat16 --threads 2

The prompts are tool-calling prompts that share one system prompt (the same tool list), rendered by
itool_ray.prompts when it is there. Each engine runs in its own fresh process, with the engine
environment (itool_ray.engines.vllm.cpu_env) set before torch is imported, so neither engine's thread
settings leak into the other's. An untimed warm-up call precedes the timed one. Figures on a shared
machine move with its load: the load average is printed next to them.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

TOOLS_FALLBACK = [
    {
        "name": name,
        "description": desc,
        "parameters": {
            "type": "object",
            "properties": {
                p: {"type": "string", "description": f"the {p.replace('_', ' ')}"} for p in params
            },
            "required": list(params[:1]),
        },
    }
    for name, desc, params in [
        ("get_weather", "Current weather for a city.", ("city", "unit")),
        ("get_time", "Current local time in a time zone.", ("timezone",)),
        (
            "convert_currency",
            "Convert an amount between currencies.",
            ("amount", "from_currency", "to_currency"),
        ),
        ("book_table", "Book a restaurant table.", ("restaurant", "date", "time", "party_size")),
        ("search_flights", "Search flights between two airports.", ("origin", "destination", "date")),
        ("stock_price", "Latest price of a stock ticker.", ("ticker",)),
        ("translate", "Translate text into a language.", ("text", "target_language")),
        ("set_reminder", "Set a reminder at a time.", ("message", "time")),
    ]
]
QUESTIONS_FALLBACK = [
    "What's the weather in {c} in celsius?",
    "Convert 250 USD to EUR, then tell me the time in {c}.",
    "Book a table for 4 at Chez Nous in {c} tomorrow at 8pm.",
    "Find flights from {c} to Tokyo on 2026-03-02.",
]
CITIES = ["Paris", "Berlin", "Lima", "Oslo", "Kyoto", "Cairo", "Austin", "Porto"]


def make_prompts(tokenizer, count: int, n_tools: int) -> tuple[list[str], str]:
    """``count`` chat prompts sharing one system prompt (same tools); returns them and how they were made."""
    try:
        from itool_ray.data.synth import generate, tool_catalogue
        from itool_ray.prompts import render_prompt
    except ImportError:
        render_prompt = None
    if render_prompt is not None:
        tools = tool_catalogue("train")[:n_tools]
        samples = generate(count, seed=0, split="train")
        prompts = [render_prompt(tokenizer, tools, s.messages, style="compact") for s in samples]
        return (
            prompts,
            f"itool_ray.prompts.render_prompt (compact), {n_tools} shared tools, synthetic questions",
        )
    system = "You can call these tools. Reply with a list of calls like [f(a=1)].\n" + json.dumps(
        TOOLS_FALLBACK
    )
    prompts = []
    for i in range(count):
        q = QUESTIONS_FALLBACK[i % len(QUESTIONS_FALLBACK)].format(c=CITIES[i % len(CITIES)])
        chat = [{"role": "system", "content": system}, {"role": "user", "content": q}]
        prompts.append(tokenizer.apply_chat_template(chat, tokenize=False, add_generation_prompt=True))
    return prompts, "fixed system prompt listing 8 tools (itool_ray.prompts not available)"


def shared_prefix_tokens(tokenizer, prompts: list[str]) -> int:
    ids = [tokenizer(p, add_special_tokens=False)["input_ids"] for p in prompts]
    n = 0
    while all(len(x) > n and x[n] == ids[0][n] for x in ids):
        n += 1
    return n


def worker(args: argparse.Namespace) -> None:
    """Runs in a fresh process: start one engine, warm it up, time one batch, print a JSON line."""
    from itool_ray.config import EngineConfig
    from itool_ray.engines import GenerationRequest, make_engine

    prompts = json.loads(open(args.prompts_file).read())
    cfg = EngineConfig(cpu_threads=args.threads, max_model_len=args.max_model_len)
    t0 = time.perf_counter()
    engine = make_engine(args.worker, args.model_dir, cfg, dtype=args.dtype, seed=0)
    startup = time.perf_counter() - t0
    engine.generate([GenerationRequest(prompts[0], n=1, max_tokens=8, temperature=1.0)])
    reqs = [
        GenerationRequest(p, n=args.n, max_tokens=args.max_tokens, temperature=args.temperature)
        for p in prompts
    ]
    t0 = time.perf_counter()
    results = engine.generate(reqs)
    seconds = time.perf_counter() - t0
    tokens = sum(len(c.token_ids) for r in results for c in r.completions)
    engine.close()
    print("RESULT " + json.dumps({"startup_s": startup, "seconds": seconds, "tokens": tokens}), flush=True)


def run_engine(kind: str, args: argparse.Namespace, prompts_file: str) -> dict:
    from itool_ray.config import EngineConfig
    from itool_ray.engines.vllm import cpu_env

    env = dict(os.environ, **cpu_env(EngineConfig(cpu_threads=args.threads)))
    cmd = [
        sys.executable,
        __file__,
        "--worker",
        kind,
        "--model-dir",
        args.model_dir,
        "--prompts-file",
        prompts_file,
    ]
    for flag in ("n", "max_tokens", "temperature", "dtype", "threads", "max_model_len"):
        cmd += [f"--{flag.replace('_', '-')}", str(getattr(args, flag))]
    load_before = os.getloadavg()[0]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
    lines = [line for line in proc.stdout.splitlines() if line.startswith("RESULT ")]
    if proc.returncode != 0 or not lines:
        sys.stderr.write(proc.stderr[-4000:])
        raise SystemExit(f"bench: the {kind} engine failed (exit {proc.returncode})")
    out = json.loads(lines[-1][len("RESULT ") :])
    out["load"] = (load_before + os.getloadavg()[0]) / 2
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="embedded:smollm2")
    ap.add_argument("--data-dir", default="~/.cache/itool-ray")
    ap.add_argument("--engines", default="vllm,hf")
    ap.add_argument("--prompts", type=int, default=32)
    ap.add_argument("--tools", type=int, default=4, help="tools in the shared system prompt")
    ap.add_argument("--n", type=int, default=3)
    ap.add_argument("--max-tokens", type=int, default=48)
    ap.add_argument("--temperature", type=float, default=1.0)
    ap.add_argument("--dtype", default="float32")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--max-model-len", type=int, default=1024)
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    ap.add_argument("--model-dir", help=argparse.SUPPRESS)
    ap.add_argument("--prompts-file", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        worker(args)
        return

    from transformers import AutoTokenizer

    from itool_ray.models import ModelError, resolve_model

    note = ""
    try:
        args.model_dir = resolve_model(args.model, data_dir=args.data_dir)
    except ModelError as e:
        args.model_dir = resolve_model("tiny", data_dir=args.data_dir)
        note = f"NOTE: {args.model} unavailable ({e}); measured on the tiny model instead"
    tokenizer = AutoTokenizer.from_pretrained(args.model_dir)
    prompts, how = make_prompts(tokenizer, args.prompts, args.tools)
    lengths = [len(tokenizer(p, add_special_tokens=False)["input_ids"]) for p in prompts]
    prompts_file = os.path.join(os.path.expanduser(args.data_dir), "bench_prompts.json")
    os.makedirs(os.path.dirname(prompts_file), exist_ok=True)
    with open(prompts_file, "w") as f:
        json.dump(prompts, f)

    from itool_ray.engines import vllm_available

    rows = {}
    for kind in args.engines.split(","):
        if kind == "vllm" and not vllm_available():
            print("vllm: not installed, skipped")
            continue
        rows[kind] = run_engine(kind, args, prompts_file)

    print(f"\nmodel: {args.model_dir}" + (f"\n{note}" if note else ""))
    print(
        f"prompts: {len(prompts)} ({how}); {min(lengths)}-{max(lengths)} tokens, shared prefix {shared_prefix_tokens(tokenizer, prompts)}"
    )
    print(
        f"workload: n={args.n}, max_tokens={args.max_tokens}, temperature={args.temperature}, {args.dtype}, {args.threads} threads, {os.cpu_count()} CPUs\n"
    )
    base = rows.get("hf")
    print(
        f"{'engine':<6} {'start-up s':>10} {'tokens':>7} {'seconds':>8} {'tok/s':>7} {'vs hf':>6} {'load avg':>8}"
    )
    for kind, r in rows.items():
        rate = r["tokens"] / r["seconds"]
        rel = f"{rate / (base['tokens'] / base['seconds']):.1f}x" if base else "-"
        print(
            f"{kind:<6} {r['startup_s']:>10.1f} {r['tokens']:>7} {r['seconds']:>8.1f} {rate:>7.1f} {rel:>6} {r['load']:>8.1f}"
        )


if __name__ == "__main__":
    main()
