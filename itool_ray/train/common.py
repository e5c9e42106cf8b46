"""What SFT and preference training share: the result record, tokenization, and data ordering.

Tokenization is ours, not TRL's: every text is encoded with ``add_special_tokens=False`` (the chat
template already wrote BOS where the model wants one), prompt and completion separately, which is what
the generation engines see — they encode the rendered prompt the same way and generate the completion
token by token. TRL would instead tokenize prompt+completion jointly (BPE merges across the boundary
then move tokens between prompt and completion) and, for the DPO/CPO text format, may add a BOS.
"""

from __future__ import annotations

import json
import math
import random
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any


class TrainError(RuntimeError):
    """Training cannot start or did not finish; the message says what to change."""


@dataclass
class TrainResult:
    """A finished training run: the exported Hugging Face directory and its metrics.

    ``steps`` holds one dict per optimizer step (loss, learning_rate, grad_norm, step_time_s, and the
    trainer's own metrics such as rewards/accuracies and rewards/margins for DPO); ``summary`` the run's
    totals (trained_tokens, loss_tokens, tokens_per_s, step_seconds, wall_s, train_loss, global_steps,
    resumed_from_step, skipped …). Both are also in ``<model_dir>/metrics.json``.
    """

    model_dir: str
    steps: list[dict[str, Any]] = field(default_factory=list)
    summary: dict[str, Any] = field(default_factory=dict)

    @property
    def trained_tokens(self) -> int:
        """Tokens the model ran forward and backward on (prompt + completion, no padding)."""
        return int(self.summary.get("trained_tokens", 0))

    @property
    def loss_tokens(self) -> int:
        """Tokens that carried a loss (completions only)."""
        return int(self.summary.get("loss_tokens", 0))

    def to_dict(self) -> dict[str, Any]:
        return {"model_dir": self.model_dir, "steps": self.steps, "summary": self.summary}

    @classmethod
    def load(cls, model_dir: str) -> TrainResult:
        data = json.loads((Path(model_dir) / METRICS_FILE).read_text())
        return cls(model_dir=model_dir, steps=data["steps"], summary=data["summary"])


METRICS_FILE = "metrics.json"


# -- preference losses, as TRL's configs take them (typed: a TrainJob carries one) ----------------------------
@dataclass(frozen=True)
class DPOLoss:
    """TRL DPOConfig's loss fields: the loss terms with their weights (``sft`` = NLL on chosen)."""

    loss_type: tuple[str, ...]
    loss_weights: tuple[float, ...]
    beta: float
    label_smoothing: float
    precompute_ref_log_probs: bool

    def trl_kwargs(self) -> dict[str, Any]:
        return {**asdict(self), "loss_type": list(self.loss_type), "loss_weights": list(self.loss_weights)}


@dataclass(frozen=True)
class SimPOLoss:
    """TRL CPOConfig's loss fields for SimPO (reference-free; ``cpo_alpha`` weighs the NLL on chosen)."""

    beta: float
    simpo_gamma: float
    cpo_alpha: float

    def trl_kwargs(self) -> dict[str, Any]:
        return {"loss_type": "simpo", **asdict(self)}


def encode(tokenizer: Any, text: str) -> list[int]:
    """Token ids of ``text`` exactly as written: no BOS/EOS added (the engines encode the same way)."""
    return list(tokenizer(text, add_special_tokens=False)["input_ids"])


def global_batch(micro_batch_size: int, grad_accum: int, world_size: int) -> int:
    return micro_batch_size * grad_accum * world_size


def starting_point(
    model_dir: str, cfg: Any, *, micro_batch_size: int, grad_accum: int
) -> tuple[str, Any, int]:
    """What every training job starts from: the model as a local directory (a hub id or the embedded
    model resolved), its tokenizer, and the global batch over ``distributed.num_workers``."""
    from itool_ray.models import load_tokenizer, resolve_model

    model_dir = resolve_model(model_dir, data_dir=cfg.run.data_dir)
    tokenizer = load_tokenizer(model_dir, data_dir=cfg.run.data_dir)
    return (
        model_dir,
        tokenizer,
        global_batch(micro_batch_size, grad_accum, max(1, cfg.distributed.num_workers)),
    )


def checkpoint_steps(every: int, total_steps: int) -> list[int]:
    """The steps after which a job checkpoints (every ``every`` steps, not the last; none when 0)."""
    return list(range(every, total_steps, every)) if every > 0 else []


LENGTH_WINDOW_BATCHES = 8  # length grouping sorts within windows of this many global batches


def schedule_rows(
    rows: Sequence[dict[str, Any]],
    *,
    epochs: float,
    seed: int,
    multiple: int,
    length: Callable[[dict[str, Any]], int] | None = None,
) -> list[dict[str, Any]]:
    """The rows in training order: ``epochs`` passes, each freshly shuffled (a fractional epoch takes the
    head of one more shuffle), padded with random repeats to a multiple of the global batch so no
    optimizer step mixes two phases and every rank gets full batches.

    With ``length`` (a row's token count), each window of LENGTH_WINDOW_BATCHES global batches of the
    shuffled order is sorted by length, cut into global batches, and the batches are shuffled within the
    window: batches of similar lengths pad less (the collators pad to the longest row of a batch), and
    the order stays random at the scale of a window.
    """
    if not rows:
        return []
    rng = random.Random(seed)
    out: list[dict[str, Any]] = []
    whole, frac = divmod(epochs, 1.0)
    for _ in range(int(whole)):
        out.extend(rng.sample(list(rows), len(rows)))
    if frac > 1e-9:
        out.extend(rng.sample(list(rows), len(rows))[: max(1, round(frac * len(rows)))])
    if len(out) % multiple:
        out.extend(rng.choice(rows) for _ in range(multiple - len(out) % multiple))
    if length is not None:
        out = _group_by_length(out, length, multiple=multiple, rng=rng)
    return out


def _group_by_length(
    rows: list[dict[str, Any]], length: Callable[[dict[str, Any]], int], *, multiple: int, rng: random.Random
) -> list[dict[str, Any]]:
    window = multiple * LENGTH_WINDOW_BATCHES
    out: list[dict[str, Any]] = []
    for start in range(0, len(rows), window):  # len(rows) is a multiple of ``multiple``
        ordered = sorted(rows[start : start + window], key=length)
        batches = [ordered[i : i + multiple] for i in range(0, len(ordered), multiple)]
        rng.shuffle(batches)
        for batch in batches:
            out.extend(batch)
    return out


def steps_for(n_rows: int, global_batch_size: int) -> int:
    return math.ceil(n_rows / global_batch_size) if n_rows else 0
