"""Preference optimisation on step-level pairs: TRL DPO (sigmoid, IPO, hinge, robust) or SimPO (TRL CPO).

    result = run_preference(pairs, model_dir=policy_k_minus_1, out_dir=..., cfg=cfg)

Pairs are the MCTS helper's records (itool_ray/mcts/pairs.py): the prompt ends with a *partial*
assistant answer (the shared prefix), so a chat template must not render it — it would close the
turn. ``pair_texts`` renders plain text (prompt = render_prompt(conversation) + prefix, chosen/rejected =
continuation + end_of_turn) and we tokenize it ourselves (common.encode: no BOS/EOS added, prompt and
continuation separately, as the engines see them). TRL receives token ids only: DPOTrainer through an
overridden ``_prepare_dataset`` (TRL's own would re-tokenize the text, adding BOS on tokenizers that do
and appending EOS after our end-of-turn when the two differ), CPOTrainer through ``tokenize_row``.

Reference model = the policy at the start of the iteration (``model_dir``). With
``train.precompute_ref_log_probs`` (default) TRL computes the reference log-probs once before training
and holds no second model (under ZeRO-3 it precomputes through a second DeepSpeed engine on the same
modules, whose hooks we remove afterwards: see ``trl_compat``). Otherwise DPO keeps
an implicit reference copy, built under zero.Init with ZeRO-3 — which is why the worker initialises
deepspeed.comm first. With LoRA the reference is the base model with the adapter disabled; the adapter
is merged into a full checkpoint at the end. SimPO is reference-free (``cpo_alpha = train.sft_weight``,
0 by default).

Epochs are laid out by common.schedule_rows (each pass reshuffled, sequential sampling), so with
``train.epochs`` > 1 the precompute pass also runs once per epoch over the repeated rows.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from itool_ray.config import Config
from itool_ray.train.common import (
    DPOLoss,
    SimPOLoss,
    TrainError,
    TrainResult,
    checkpoint_steps,
    encode,
    schedule_rows,
    starting_point,
    steps_for,
)
from itool_ray.train.ray_train import TrainJob, run_job

DPO_LOSSES = {"sigmoid": "sigmoid", "ipo": "ipo", "hinge": "hinge", "robust": "robust"}
ROBUST_LABEL_SMOOTHING = 0.1  # robust DPO's assumed label-flip rate (the paper's recommendation)
SCHEDULER = "linear"
WARMUP_RATIO = 0.1
MAX_SKIPPED = 20


def pair_rows(
    tokenizer: Any,
    pairs: Sequence[dict[str, Any]],
    *,
    style: str,
    max_prompt_tokens: int,
    max_answer_tokens: int,
) -> tuple[list[dict[str, list[int]]], dict[str, list[str]]]:
    """(rows of prompt_ids / chosen_ids / rejected_ids, skipped sample ids by reason).

    Tokens: see ``_split_tokens``. Limits: the prompt (conversation + shared prefix) may use
    ``max_prompt_tokens + max_answer_tokens``; a longer one is skipped. A continuation longer than
    ``max_answer_tokens`` is cut there (a rejected answer that ran to the generation limit is still a
    useful negative; TRL truncates the same way). Pairs whose two continuations are the same after that
    are skipped.
    """
    from itool_ray.mcts.pairs import pair_texts

    rows: list[dict[str, list[int]]] = []
    skipped: dict[str, list[str]] = {"too_long": [], "identical": []}
    for i, pair in enumerate(pairs):
        sample_id = str(pair.get("meta", {}).get("sample_id", f"pair {i}"))
        try:
            texts = pair_texts(pair, tokenizer, style=style)
        except (KeyError, IndexError, TypeError, ValueError) as e:
            raise TrainError(f"preference pair {i} (sample {sample_id}) is malformed: {e!r}") from None
        prompt, chosen, rejected = _split_tokens(tokenizer, texts, str(pair["prompt"][-1]["content"]))
        chosen, rejected = chosen[:max_answer_tokens], rejected[:max_answer_tokens]
        if len(prompt) > max_prompt_tokens + max_answer_tokens:
            skipped["too_long"].append(sample_id)
        elif chosen == rejected:
            skipped["identical"].append(sample_id)
        else:
            rows.append({"prompt_ids": prompt, "chosen_ids": chosen, "rejected_ids": rejected})
    return rows, skipped


def _split_tokens(
    tokenizer: Any, texts: dict[str, str], prefix: str
) -> tuple[list[int], list[int], list[int]]:
    """(prompt_ids, chosen_ids, rejected_ids) with the answer tokenized as the policy writes it.

    The conversation is encoded alone (as the engines encode a rendered prompt); the shared answer prefix
    is encoded together with each continuation, and the tokens the two sides share (never more than the
    prefix's own) move to the prompt. Encoding the prefix apart would cut the answer at a token boundary
    the policy never produces (``"`` then ``),`` instead of ``"),``) and train both sides on it.
    """
    base = texts["prompt"][: len(texts["prompt"]) - len(prefix)] if prefix else texts["prompt"]
    full_c = encode(tokenizer, prefix + texts["chosen"])
    full_r = encode(tokenizer, prefix + texts["rejected"])
    cap = len(encode(tokenizer, prefix)) if prefix else 0
    k = 0
    while k < min(cap, len(full_c), len(full_r)) and full_c[k] == full_r[k]:
        k += 1
    return encode(tokenizer, base) + full_c[:k], full_c[k:], full_r[k:]


def _pair_length(row: dict[str, list[int]]) -> int:
    return len(row["prompt_ids"]) + max(len(row["chosen_ids"]), len(row["rejected_ids"]))


def run_preference(
    pairs: list[dict[str, Any]],
    *,
    model_dir: str,
    out_dir: str,
    cfg: Config,
    checkpoint_every_steps: int = 0,
) -> TrainResult:
    """Train the policy in ``model_dir`` on ``pairs`` with ``cfg.train.loss``; HF checkpoint + metrics in out_dir.

    Per-step metrics include TRL's rewards/accuracies, rewards/margins, logps/chosen, logps/rejected.
    """
    from itool_ray.train import trl_compat

    trl_compat.check()  # in the driver, before any worker starts

    t, d = cfg.train, cfg.distributed
    model_dir, tokenizer, gb = starting_point(
        model_dir, cfg, micro_batch_size=t.batch_size, grad_accum=t.grad_accum
    )
    rows, skipped = pair_rows(
        tokenizer,
        pairs,
        style=cfg.data.prompt_style,
        max_prompt_tokens=cfg.data.max_prompt_tokens,
        max_answer_tokens=cfg.data.max_answer_tokens,
    )
    ordered = schedule_rows(rows, epochs=t.epochs, seed=cfg.run.seed, multiple=gb, length=_pair_length)
    total_steps = steps_for(len(ordered), gb)
    kind = "simpo" if t.loss == "simpo" else "dpo"
    job = TrainJob(
        kind=kind,
        build=build_preference_trainer,
        model_dir=model_dir,
        out_dir=out_dir,
        dist=d,
        micro_batch_size=t.batch_size,
        grad_accum=t.grad_accum,
        lr=t.lr,
        scheduler=SCHEDULER,
        warmup_steps=int(WARMUP_RATIO * total_steps),
        seed=cfg.run.seed,
        loss=_loss_options(cfg),
        lora=t.lora if t.lora.enabled else None,
        checkpoint_steps=checkpoint_steps(checkpoint_every_steps, total_steps),
    )
    pair_tokens = [2 * len(r["prompt_ids"]) + len(r["chosen_ids"]) + len(r["rejected_ids"]) for r in ordered]
    summary = {
        "loss": t.loss,
        "beta": t.beta,
        "lr": t.lr,
        "pairs": len(pairs),
        "rows": len(ordered),
        "global_batch": gb,
        "trained_tokens": sum(pair_tokens),
        "loss_tokens": sum(len(r["chosen_ids"]) + len(r["rejected_ids"]) for r in ordered),
        # DPO also runs the reference model forward (no backward) over every row, precomputed or live.
        "reference_tokens": sum(pair_tokens) if kind == "dpo" else 0,
        "skipped": sum(len(v) for v in skipped.values()),
        "skipped_ids": {k: v[:MAX_SKIPPED] for k, v in skipped.items() if v},
        "precompute_ref_log_probs": kind == "dpo" and t.precompute_ref_log_probs,
        "lora": t.lora.enabled,
    }
    return run_job(job, ordered, summary=summary)


def _loss_options(cfg: Config) -> DPOLoss | SimPOLoss:
    t = cfg.train
    if t.loss == "simpo":
        return SimPOLoss(beta=t.beta, simpo_gamma=t.simpo_gamma, cpo_alpha=t.sft_weight)
    loss_type, weights = [DPO_LOSSES[t.loss]], [1.0]
    if t.sft_weight > 0:  # TRL 1.16 has no rpo_alpha: the NLL on chosen is the "sft" loss term
        loss_type.append("sft")
        weights.append(t.sft_weight)
    return DPOLoss(
        loss_type=tuple(loss_type),
        loss_weights=tuple(weights),
        beta=t.beta,
        label_smoothing=ROBUST_LABEL_SMOOTHING if t.loss == "robust" else 0.0,
        precompute_ref_log_probs=t.precompute_ref_log_probs,
    )


def build_preference_trainer(job: TrainJob, *, output_dir: str, callbacks: list[Any]) -> Any:
    """In a worker: a TRL DPO or CPO (SimPO) trainer on the job's tokenized pairs."""
    import torch
    from datasets import load_from_disk
    from transformers import AutoModelForCausalLM

    from itool_ray.models import load_tokenizer
    from itool_ray.train import trl_compat

    trl_compat.check()
    common = job.training_arguments(output_dir)
    if job.kind == "simpo":
        from trl.experimental.cpo import CPOConfig

        # Arguments before the model: under ZeRO-3 from_pretrained then builds it partitioned.
        args = CPOConfig(**common, **job.loss.trl_kwargs(), max_length=None)
        trainer_cls = trl_compat.pretokenized_cpo_trainer()
    else:
        from trl import DPOConfig

        args = DPOConfig(
            **common,
            **job.loss.trl_kwargs(),
            max_length=None,  # rows were length-checked when they were built
            precompute_ref_batch_size=2 * job.micro_batch_size,
        )
        trainer_cls = trl_compat.pretokenized_dpo_trainer()
    tokenizer = load_tokenizer(job.model_dir, data_dir=job.out_dir)  # a directory: data_dir unused

    return trainer_cls(
        model=AutoModelForCausalLM.from_pretrained(job.model_dir, dtype=torch.float32),
        args=args,
        train_dataset=load_from_disk(job.dataset_dir),
        processing_class=tokenizer,
        callbacks=callbacks,
        peft_config=_peft_config(job.lora) if job.lora else None,
    )


def _peft_config(lora: Any) -> Any:
    from peft import LoraConfig

    # "all-linear" leaves out the LM head (TRL refuses an adapter there).
    return LoraConfig(
        r=lora.r,
        lora_alpha=lora.alpha,
        lora_dropout=lora.dropout,
        target_modules="all-linear",
        task_type="CAUSAL_LM",
    )
