"""Training cost on CPU: seconds per DPO step and peak RSS, with and without precomputed reference
log-probs, and SFT tokens/s — SmolLM2-135M (the embedded model), fp32, one process (num_workers 0).

    python bench/bench_train.py                       # all three runs
    python bench/bench_train.py --runs dpo-precomputed --steps 4

DPO: batches of 2 pairs of about 400 tokens each (BFCL-style prompts, ground-truth answer vs a wrong
argument value, empty shared prefix). SFT: batches of 4 samples, compact prompts. Every run is a fresh
subprocess (peak RSS = that process's ru_maxrss, model load and reference precompute included) going
through the real entry points (run_preference / run_sft). The first step is a warm-up and not timed.
``plain_fwd_bwd_s`` is one bare forward+backward of the same batch shape in the same process after
the run: the yardstick that tells trainer overhead from machine load.
The load average is printed next to the figures: on a shared machine they move with it.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

RUNS = ("dpo-precomputed", "dpo-live-reference", "sft")


def _pairs(tokenizer, n: int, *, min_tokens: int = 350, max_tokens: int = 450) -> list[dict]:
    """``n`` ground-truth-vs-wrong-value pairs whose BFCL-style prompt + chosen is min..max tokens."""
    from itool_ray.data.synth import generate
    from itool_ray.mcts.pairs import pair_texts
    from itool_ray.prompts import render_answer
    from itool_ray.train.common import encode

    pairs = []
    for sample in generate(40 * n, seed=0, split="train"):
        calls = sample.answer
        if not calls or not calls[0].get("arguments"):
            continue
        wrong = [dict(c, arguments=dict(c["arguments"])) for c in calls]
        key = next(iter(wrong[0]["arguments"]))
        wrong[0]["arguments"][key] = "unknown"
        pair = {
            "prompt": [*sample.messages, {"role": "assistant", "content": ""}],
            "chosen": [{"role": "assistant", "content": render_answer(calls)}],
            "rejected": [{"role": "assistant", "content": render_answer(wrong)}],
            "tools": sample.tools,
            "meta": {"sample_id": sample.id, "origin": "ground_truth", "prefix": ""},
        }
        t = pair_texts(pair, tokenizer, style="bfcl")
        if min_tokens <= len(encode(tokenizer, t["prompt"] + t["chosen"])) <= max_tokens:
            pairs.append(pair)
        if len(pairs) == n:
            return pairs
    raise SystemExit(f"only {len(pairs)} synthetic pairs of {min_tokens}-{max_tokens} tokens; lower --steps")


def _plain_step_seconds(model_dir: str, *, batch: int, length: int) -> float:
    """One bare forward+backward of a (batch, length) batch, after the run: the same machine's
    yardstick for the trainer's per-step time (load moves both)."""
    import torch
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).train()
    ids = torch.randint(100, model.config.vocab_size - 100, (batch, length))
    start = time.perf_counter()
    model(input_ids=ids, labels=ids).loss.backward()
    return round(time.perf_counter() - start, 2)


def one(run: str, steps: int, data_dir: str) -> dict:
    import resource

    from itool_ray.config import load_config
    from itool_ray.data.synth import generate
    from itool_ray.mcts.pairs import pair_texts
    from itool_ray.models import import_embedded, load_tokenizer
    from itool_ray.train import run_preference, run_sft
    from itool_ray.train.common import encode

    model_dir = import_embedded(data_dir)
    out = tempfile.mkdtemp(prefix=f"bench-train-{run}-")
    base = {
        "run": {"data_dir": data_dir},
        "distributed": {"num_workers": 0, "zero_stage": 0, "precision": "fp32"},
    }
    start = time.perf_counter()
    if run.startswith("dpo"):
        cfg = load_config(
            "quickstart",
            overrides=base
            | {
                "data": {"prompt_style": "bfcl", "max_prompt_tokens": 1024},
                "train": {"batch_size": 2, "epochs": 1, "precompute_ref_log_probs": run == "dpo-precomputed"},
            },
        )
        tokenizer = load_tokenizer(model_dir, data_dir=data_dir)
        pairs = _pairs(tokenizer, 2 * steps)
        lengths = []
        for p in pairs:
            t = pair_texts(p, tokenizer, style="bfcl")
            lengths.append(len(encode(tokenizer, t["prompt"])) + len(encode(tokenizer, t["chosen"])))
        result = run_preference(pairs, model_dir=model_dir, out_dir=out, cfg=cfg)
        shape = {"pairs_per_step": 2, "mean_pair_tokens": round(statistics.mean(lengths), 1)}
    else:
        cfg = load_config("quickstart", overrides=base | {"warmup": {"batch_size": 4, "epochs": 1}})
        samples = list(generate(4 * steps, seed=0, split="train"))
        result = run_sft(samples, model_dir=model_dir, out_dir=out, cfg=cfg)
        shape = {"samples_per_step": 4}
    wall = time.perf_counter() - start
    shutil.rmtree(out, ignore_errors=True)  # a 540 MB checkpoint per run
    baseline = _plain_step_seconds(
        model_dir,
        batch=4,
        length=round(
            result.trained_tokens / max(1, result.summary["rows"]) / (2 if run.startswith("dpo") else 1)
        ),
    )
    timed = result.steps[1:] or result.steps
    step_s = [s["step_time_s"] for s in timed]
    tokens_per_step = result.trained_tokens / max(1, len(result.steps))
    return {
        "run": run,
        **shape,
        "steps": len(result.steps),
        "s_per_step_median": round(statistics.median(step_s), 2),
        "s_per_step_all": [round(s["step_time_s"], 2) for s in result.steps],
        "trained_tokens_per_s": round(tokens_per_step / statistics.median(step_s), 1),
        "plain_fwd_bwd_s": baseline,
        "peak_rss_gb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, 2),
        "wall_s": round(wall, 1),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", nargs="+", choices=RUNS, default=list(RUNS))
    ap.add_argument("--steps", type=int, default=3, help="optimizer steps per run (the first is not timed)")
    ap.add_argument("--data-dir", default=os.path.expanduser("~/.cache/itool-ray"))
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--one", choices=RUNS, help=argparse.SUPPRESS)  # internal: run one in this process
    a = ap.parse_args()
    if a.one:
        print("RESULT " + json.dumps(one(a.one, a.steps, a.data_dir)), flush=True)
        return
    env = dict(os.environ, OMP_NUM_THREADS=str(a.threads), TOKENIZERS_PARALLELISM="false", HF_HUB_OFFLINE="1")
    env.setdefault("RAY_TRAIN_ENABLE_PRINT_PATCH", "0")
    for run in a.runs:
        load_before = os.getloadavg()[0]
        proc = subprocess.run(
            [sys.executable, __file__, "--one", run, "--steps", str(a.steps), "--data-dir", a.data_dir],
            env=env,
            capture_output=True,
            text=True,
        )
        lines = [line for line in proc.stdout.splitlines() if line.startswith("RESULT ")]
        if proc.returncode or not lines:
            print(f"{run}: failed (exit {proc.returncode})\n{proc.stderr[-3000:]}", file=sys.stderr)
            continue
        figures = json.loads(lines[-1][len("RESULT ") :])
        figures["load_avg_1m_before_after"] = [round(load_before, 1), round(os.getloadavg()[0], 1)]
        print(json.dumps(figures), flush=True)


if __name__ == "__main__":
    main()
