"""Supervised fine-tuning on tool-use samples: the easy -> medium -> hard warm-up, and plain SFT.

    result = run_warmup(samples, model_dir=..., out_dir=..., cfg=cfg)               # buckets in order
    result = run_sft(samples, model_dir=..., out_dir=..., cfg=cfg, token_budget=n)  # equal-compute control

One training text per sample: ``render_prompt(...) + render_answer(answer) + end_of_turn``; the loss is
on the answer and the end-of-turn token only (TRL SFTTrainer, prompt-completion rows with
``completion_only_loss``). We tokenize (common.encode) and hand TRL ``input_ids`` + ``completion_mask``.

Warm-up phases: one TRL run in which the rows of each bucket follow the previous bucket's (each bucket
shuffled and repeated ``warmup.epochs`` times, padded to a whole global batch so no optimizer step mixes
two buckets). So phase k starts from phase k-1's weights *and* optimizer state, and the learning-rate
schedule does NOT restart per phase: ``warmup.scheduler`` with ``warmup.warmup_ratio`` spans the whole
warm-up (with the default constant_with_warmup that is one warm-up at the start, then a constant rate).
A checkpoint is taken at every phase end, so a restart never repeats a finished phase.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from itool_ray.config import Config
from itool_ray.data.schema import Sample
from itool_ray.train.common import (
    TrainError,
    TrainResult,
    checkpoint_steps,
    encode,
    schedule_rows,
    starting_point,
    steps_for,
)
from itool_ray.train.ray_train import TrainJob, run_job

MAX_SKIPPED_IDS = 20  # skipped sample ids listed in the summary (all are counted)


def _row_length(row: dict[str, Any]) -> int:
    return len(row["input_ids"])


def sft_rows(
    tokenizer: Any,
    samples: Sequence[Sample],
    *,
    style: str,
    max_prompt_tokens: int,
    max_answer_tokens: int,
) -> tuple[list[dict[str, list[int]]], list[str]]:
    """(rows of input_ids + completion_mask, ids of samples skipped as too long).

    A sample whose prompt exceeds ``max_prompt_tokens`` or whose answer + end of turn exceeds
    ``max_answer_tokens`` is skipped, not truncated: a cut prompt or a cut call teaches the wrong thing.
    """
    from itool_ray.prompts import end_of_turn, render_example

    eot = end_of_turn(tokenizer)
    rows, skipped = [], []
    for sample in samples:
        prompt, answer = render_example(tokenizer, sample, style)
        prompt_ids, answer_ids = encode(tokenizer, prompt), encode(tokenizer, answer + eot)
        if len(prompt_ids) > max_prompt_tokens or len(answer_ids) > max_answer_tokens:
            skipped.append(sample.id)
            continue
        rows.append(
            {
                "input_ids": prompt_ids + answer_ids,
                "completion_mask": [0] * len(prompt_ids) + [1] * len(answer_ids),
            }
        )
    return rows, skipped


def run_warmup(
    samples: list[Sample],
    *,
    model_dir: str,
    out_dir: str,
    cfg: Config,
    scores: Mapping[str, float] | None = None,
    checkpoint_every_steps: int = 0,
) -> TrainResult:
    """Warm-up SFT through ``cfg.warmup.buckets`` in order; a HF checkpoint and metrics.json in ``out_dir``.

    Buckets are equal-size cuts by the structural score, or — with ``warmup.bucket_by: perplexity`` — by
    ``scores`` (sample id -> ground-truth perplexity under the starting model, computed by the caller).
    Per-step metrics carry their ``phase``; the summary lists each phase's steps and first/last loss.
    """
    from itool_ray.data.difficulty import bucketize

    w = cfg.warmup
    within = (lambda s: s.category) if w.bucket_within == "category" else None
    if w.bucket_by == "perplexity":
        if scores is None:
            raise TrainError(
                "warmup.bucket_by: perplexity needs the scores mapping (sample id -> perplexity)"
            )
        missing = [s.id for s in samples if s.id not in scores]
        if missing:
            raise TrainError(
                f"warmup.bucket_by: perplexity: {len(missing)} samples have no score (first: {missing[:5]})"
            )
    by = (lambda s: scores[s.id]) if w.bucket_by == "perplexity" else None
    buckets = bucketize(samples, by=by, names=tuple(w.buckets), within=within)
    return _run_phases(
        [(name, buckets[name]) for name in w.buckets],
        model_dir=model_dir,
        out_dir=out_dir,
        cfg=cfg,
        epochs=w.epochs,
        token_budget=None,
        checkpoint_every_steps=checkpoint_every_steps,
        extra={"bucket_by": w.bucket_by, "bucket_within": w.bucket_within},
    )


def run_sft(
    samples: list[Sample],
    *,
    model_dir: str,
    out_dir: str,
    cfg: Config,
    epochs: float | None = None,
    token_budget: int | None = None,
    checkpoint_every_steps: int = 0,
) -> TrainResult:
    """Plain SFT on ``samples`` (one shuffled phase) with the warm-up hyperparameters.

    ``token_budget`` stops after about that many trained tokens (prompt + answer; rounded up to a whole
    global batch), cycling through the samples as often as needed: the equal-compute control for a
    preference stage. ``result.trained_tokens`` / ``result.loss_tokens`` say what was trained.
    """
    return _run_phases(
        [("all", samples)],
        model_dir=model_dir,
        out_dir=out_dir,
        cfg=cfg,
        epochs=cfg.warmup.epochs if epochs is None else epochs,
        token_budget=token_budget,
        checkpoint_every_steps=checkpoint_every_steps,
        extra={},
    )


def _run_phases(
    phases: list[tuple[str, Sequence[Sample]]],
    *,
    model_dir: str,
    out_dir: str,
    cfg: Config,
    epochs: float,
    token_budget: int | None,
    checkpoint_every_steps: int,
    extra: dict[str, Any],
) -> TrainResult:
    w, d = cfg.warmup, cfg.distributed
    model_dir, tokenizer, gb = starting_point(
        model_dir, cfg, micro_batch_size=w.batch_size, grad_accum=w.grad_accum
    )
    ordered: list[dict[str, list[int]]] = []
    skipped: list[str] = []
    info = []
    for i, (name, samples) in enumerate(phases):
        rows, phase_skipped = sft_rows(
            tokenizer,
            samples,
            style=cfg.data.prompt_style,
            max_prompt_tokens=cfg.data.max_prompt_tokens,
            max_answer_tokens=cfg.data.max_answer_tokens,
        )
        skipped += phase_skipped
        if token_budget is not None:
            rows = _within_budget(rows, token_budget, seed=cfg.run.seed + i)
        passes = 1.0 if token_budget is not None else epochs
        scheduled = schedule_rows(rows, epochs=passes, seed=cfg.run.seed + i, multiple=gb, length=_row_length)
        first = len(ordered) // gb + 1
        ordered += scheduled
        info.append(
            {
                "name": name,
                "samples": len(samples),
                "skipped": len(phase_skipped),
                "rows": len(scheduled),
                "first_step": first if scheduled else None,
                "last_step": len(ordered) // gb if scheduled else None,
            }
        )
    total_steps = steps_for(len(ordered), gb)
    phase_ends = [p["last_step"] for p in info if p["last_step"]]
    every = checkpoint_steps(checkpoint_every_steps, total_steps)
    job = TrainJob(
        kind="sft",
        build=build_sft_trainer,
        model_dir=model_dir,
        out_dir=out_dir,
        dist=d,
        micro_batch_size=w.batch_size,
        grad_accum=w.grad_accum,
        lr=w.lr,
        scheduler=w.scheduler,
        warmup_steps=int(w.warmup_ratio * total_steps),
        seed=cfg.run.seed,
        checkpoint_steps=sorted(set(phase_ends[:-1]) | set(every)),
    )
    summary = {
        **extra,
        "samples": sum(len(s) for _, s in phases),
        "rows": len(ordered),
        "trained_tokens": sum(len(r["input_ids"]) for r in ordered),
        "loss_tokens": sum(sum(r["completion_mask"]) for r in ordered),
        "skipped": len(skipped),
        "skipped_ids": skipped[:MAX_SKIPPED_IDS],
        "lr": w.lr,
        "global_batch": gb,
        "phases": info,
    }
    if token_budget is not None:
        summary["token_budget"] = token_budget
    return run_job(job, ordered, summary=summary)


def _within_budget(rows: list[dict[str, list[int]]], budget: int, *, seed: int) -> list[dict[str, list[int]]]:
    """Rows (shuffled passes over ``rows``) until their tokens reach ``budget``."""
    import random

    if not rows:
        return []
    rng = random.Random(seed)
    out, tokens = [], 0
    while tokens < budget:
        for row in rng.sample(rows, len(rows)):
            out.append(row)
            tokens += len(row["input_ids"])
            if tokens >= budget:
                break
    return out


def build_sft_trainer(job: TrainJob, *, output_dir: str, callbacks: list[Any]) -> Any:
    """In a worker: TRL SFTTrainer on the job's pre-tokenized rows (loss on completion_mask tokens)."""
    import torch
    from datasets import load_from_disk
    from transformers import AutoModelForCausalLM
    from trl import SFTConfig, SFTTrainer

    from itool_ray.models import load_tokenizer

    # Arguments first: under ZeRO-3 they register the DeepSpeed config, so from_pretrained below builds
    # the model already partitioned (zero.Init).
    args = SFTConfig(
        **job.training_arguments(output_dir),
        completion_only_loss=True,
        max_length=None,  # rows were length-checked when they were built
        packing=False,
    )
    tokenizer = load_tokenizer(job.model_dir, data_dir=job.out_dir)  # a directory: data_dir unused
    model = AutoModelForCausalLM.from_pretrained(job.model_dir, dtype=torch.float32)
    return SFTTrainer(
        model=model,
        args=args,
        train_dataset=load_from_disk(job.dataset_dir),
        processing_class=tokenizer,
        callbacks=callbacks,
    )
