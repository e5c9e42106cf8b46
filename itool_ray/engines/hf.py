"""The transformers engine: always available, CPU or GPU, no vLLM needed.

A hand-written batched decoding loop over the model's KV cache rather than ``model.generate``, because
the protocol lets every request in a batch carry its own temperature, top_p, max_tokens, stop strings
and seed, and ``generate`` takes one setting per call. What it does, to agree with the vLLM engine:
- prompts are left-padded and prefilled once per request; the cache rows are then repeated ``n`` times
  (no recomputation of a shared prompt for its ``n`` samples); finished rows leave the batch;
- a completion stops at an end-of-sequence id (tokenizer's and generation config's; the id is kept in
  ``token_ids`` but not in ``text``), at the first stop string (``text`` is cut before it, ``token_ids``
  keep the token that completed it) or at ``max_tokens`` / ``max_model_len`` ("length");
- ``logprobs`` are the sampled tokens' logprobs under the model's raw distribution (log-softmax of the
  logits before temperature and top_p), which is vLLM's default ``logprobs_mode="raw_logprobs"``;
- text prompts are tokenized as rendered chat text: no special tokens are added (the template has them).
Seeds: a request with ``seed`` samples completion ``i`` from its own generator seeded ``seed + i`` (as
vLLM does for its n children), so its output does not depend on the rest of the batch; requests
without a seed draw from one engine generator seeded at construction.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from itool_ray.config import EngineConfig
from itool_ray.engines.base import (
    Completion,
    EngineError,
    GenerationRequest,
    GenerationResult,
    score_sequences,
)

log = logging.getLogger(__name__)


@dataclass
class _Row:
    """One completion being decoded."""

    request: int
    generator: Any  # torch.Generator or None (engine generator)
    max_new: int
    token_ids: list[int] = field(default_factory=list)
    logprobs: list[float] = field(default_factory=list)
    text: str | None = None
    finish_reason: str | None = None


class HFEngine:
    """Batched generation and scoring with a transformers causal LM."""

    def __init__(
        self,
        model_dir: str,
        cfg: EngineConfig,
        *,
        dtype: str = "float32",
        seed: int = 0,
        max_batch_rows: int = 64,
    ):
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        self.cfg = cfg
        self.model_dir = model_dir
        self.max_batch_rows = max_batch_rows
        self.device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
        if self.device.type == "cpu":
            # A no-op (with a warning) when an in-process vLLM engine already bound the threads.
            torch.set_num_threads(cfg.cpu_threads)
        try:
            self.tokenizer = AutoTokenizer.from_pretrained(model_dir)
            self.model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=getattr(torch, dtype))
        except (OSError, ValueError) as e:
            raise EngineError(f"hf engine: cannot load the model in {model_dir}: {e}") from e
        self.model.to(self.device).eval()
        self.eos_ids = _eos_ids(self.tokenizer, self.model)
        pad = self.tokenizer.pad_token_id
        self.pad_id = pad if pad is not None else min(self.eos_ids, default=0)
        self._rng = torch.Generator(device="cpu").manual_seed(seed)

    # ------------------------------------------------------------------------------------------ generate
    def generate(self, requests: list[GenerationRequest]) -> list[GenerationResult]:
        prompts = [self._prompt_ids(r.prompt, where=f"request {i}") for i, r in enumerate(requests)]
        for i, (r, ids) in enumerate(zip(requests, prompts, strict=True)):
            if r.n < 1 or r.max_tokens < 1 or r.temperature < 0 or not 0 < r.top_p <= 1:
                raise EngineError(
                    f"request {i}: needs n >= 1, max_tokens >= 1, temperature >= 0 and 0 < top_p <= 1 "
                    f"(got n={r.n}, max_tokens={r.max_tokens}, temperature={r.temperature}, top_p={r.top_p})"
                )
            if len(ids) >= self.cfg.max_model_len:
                raise EngineError(
                    f"request {i}: prompt of {len(ids)} tokens does not fit engine.max_model_len={self.cfg.max_model_len}"
                )
        results: list[GenerationResult] = [GenerationResult([]) for _ in requests]
        for chunk in self._chunks(requests):
            rows = self._decode([requests[i] for i in chunk], [prompts[i] for i in chunk])
            for row in rows:
                req = requests[chunk[row.request]]
                results[chunk[row.request]].completions.append(
                    Completion(
                        text=row.text or "",
                        token_ids=row.token_ids,
                        logprobs=row.logprobs if req.logprobs else None,
                        finish_reason=row.finish_reason or "length",
                    )
                )
        return results

    def _chunks(self, requests: list[GenerationRequest]) -> list[list[int]]:
        """Consecutive request groups of at most max_batch_rows completions (one request never splits)."""
        chunks: list[list[int]] = []
        rows = 0
        for i, r in enumerate(requests):
            if chunks and rows + r.n <= self.max_batch_rows:
                chunks[-1].append(i)
                rows += r.n
            else:
                chunks.append([i])
                rows = r.n
        return chunks

    def _decode(self, requests: list[GenerationRequest], prompts: list[list[int]]) -> list[_Row]:
        import torch

        rows: list[_Row] = []
        for q, r in enumerate(requests):
            room = self.cfg.max_model_len - len(prompts[q])
            for i in range(r.n):
                gen = None
                if r.seed is not None and r.temperature > 0:
                    gen = torch.Generator(device="cpu").manual_seed(r.seed + i)
                rows.append(_Row(request=q, generator=gen, max_new=min(r.max_tokens, room)))

        with torch.inference_mode():
            ids, mask = self._left_pad(prompts)
            pos = (mask.cumsum(-1) - 1).clamp(min=0)
            out = self.model(
                input_ids=ids, attention_mask=mask, position_ids=pos, use_cache=True, logits_to_keep=1
            )
            # Prefill once per request, then one cache row per completion.
            expand = torch.tensor([row.request for row in rows], device=self.device)
            cache = out.past_key_values
            cache.reorder_cache(expand)
            logits = out.logits[:, -1, :].index_select(0, expand)
            mask, pos = mask.index_select(0, expand), pos[:, -1:].index_select(0, expand)
            active = list(range(len(rows)))  # indices into rows, aligned with the batch dimension

            while True:
                next_ids = self._sample(
                    logits, [rows[a] for a in active], [requests[rows[a].request] for a in active]
                )
                keep = []
                for b, a in enumerate(active):
                    if not self._finished(rows[a], requests[rows[a].request], next_ids[b]):
                        keep.append(b)
                if not keep:
                    break
                if len(keep) < len(active):
                    sel = torch.tensor(keep, device=self.device)
                    cache.reorder_cache(sel)
                    mask, pos = mask.index_select(0, sel), pos.index_select(0, sel)
                    active = [active[b] for b in keep]
                step = torch.tensor([[rows[a].token_ids[-1]] for a in active], device=self.device)
                mask = torch.cat([mask, mask.new_ones((len(active), 1))], dim=1)
                pos = pos + 1
                out = self.model(
                    input_ids=step,
                    attention_mask=mask,
                    position_ids=pos,
                    past_key_values=cache,
                    use_cache=True,
                )
                cache, logits = out.past_key_values, out.logits[:, -1, :]
        return rows

    def _sample(
        self, logits: Any, rows: list[_Row], requests: list[GenerationRequest]
    ) -> list[tuple[int, float]]:
        import torch

        logits = logits.float()
        raw = torch.log_softmax(logits, dim=-1)
        picks = []
        for b, (row, req) in enumerate(zip(rows, requests, strict=True)):
            if req.temperature <= 0:
                token = int(torch.argmax(logits[b]))
            else:
                probs = torch.softmax(logits[b] / req.temperature, dim=-1)
                if req.top_p < 1.0:
                    probs = _top_p(probs, req.top_p)
                gen = row.generator if row.generator is not None else self._rng
                token = int(torch.multinomial(probs.cpu(), 1, generator=gen))
            picks.append((token, float(raw[b, token])))
        return picks

    def _finished(self, row: _Row, req: GenerationRequest, pick: tuple[int, float]) -> bool:
        """Append the sampled token; True (and text, finish_reason set) when the row is done."""
        token, logprob = pick
        row.token_ids.append(token)
        row.logprobs.append(logprob)
        text = None
        if req.stop:
            text = self._text(row.token_ids)
            cut = min((p for p in (text.find(s) for s in req.stop if s) if p >= 0), default=-1)
            if cut >= 0:
                row.text, row.finish_reason = text[:cut], "stop"
                return True
        if token in self.eos_ids:
            row.finish_reason = "stop"
        elif len(row.token_ids) >= row.max_new:
            row.finish_reason = "length"
        else:
            return False
        row.text = text if text is not None else self._text(row.token_ids)
        return True

    # ------------------------------------------------------------------------------------------ score
    def score(self, prompt: str | list[int], continuation: str | list[int]) -> list[float]:
        return self.score_batch([(prompt, continuation)])[0]

    def score_batch(self, items: list[tuple[str | list[int], str | list[int]]]) -> list[list[float]]:
        """Continuation token logprobs for many (prompt, continuation) pairs, one forward pass per batch."""
        import torch

        seqs, lens = score_sequences(
            items, lambda x, where: self._prompt_ids(x, where=where), self.cfg.max_model_len
        )
        out: list[list[float]] = []
        for start in range(0, len(seqs), self.max_batch_rows):
            batch, clens = (
                seqs[start : start + self.max_batch_rows],
                lens[start : start + self.max_batch_rows],
            )
            with torch.inference_mode():
                ids, mask = self._left_pad(batch)
                pos = (mask.cumsum(-1) - 1).clamp(min=0)
                keep = max(clens) + 1
                logits = self.model(
                    input_ids=ids, attention_mask=mask, position_ids=pos, use_cache=False, logits_to_keep=keep
                ).logits.float()
                logp = torch.log_softmax(logits[:, :-1, :], dim=-1)  # position j predicts token j+1
                targets = ids[:, -keep + 1 :]
                picked = logp.gather(-1, targets.unsqueeze(-1)).squeeze(-1)
            for b, n in enumerate(clens):
                out.append(picked[b, -n:].tolist())
        return out

    # ------------------------------------------------------------------------------------------ weights
    def load_weights(self, checkpoint_dir: str) -> None:
        """Copy a Hugging Face checkpoint's tensors into the live model (same architecture)."""
        state = _read_safetensors(checkpoint_dir)
        tied = set(_tied_keys(self.model))
        try:
            missing, unexpected = self.model.load_state_dict(state, strict=False)
        except RuntimeError as e:  # shape mismatch: a different architecture
            raise EngineError(
                f"hf engine: checkpoint {checkpoint_dir} does not fit the loaded model: {e}"
            ) from e
        missing = [k for k in missing if k not in tied]
        if missing or unexpected:
            raise EngineError(
                f"hf engine: checkpoint {checkpoint_dir} does not match the loaded model "
                f"(missing {missing[:5]}, unexpected {unexpected[:5]})"
            )
        self.model_dir = checkpoint_dir

    def close(self) -> None:
        self.model = None
        if self.device.type == "cuda":
            import torch

            torch.cuda.empty_cache()

    # ------------------------------------------------------------------------------------------ helpers
    def _prompt_ids(self, prompt: str | list[int], *, where: str) -> list[int]:
        if isinstance(prompt, str):
            return self.tokenizer(prompt, add_special_tokens=False)["input_ids"]
        if not all(isinstance(t, int) for t in prompt):
            raise EngineError(f"{where}: a prompt is text or a list of int token ids")
        return list(prompt)

    def _left_pad(self, seqs: list[list[int]]) -> tuple[Any, Any]:
        import torch

        width = max(len(s) for s in seqs)
        ids = torch.full((len(seqs), width), self.pad_id, dtype=torch.long)
        mask = torch.zeros((len(seqs), width), dtype=torch.long)
        for i, s in enumerate(seqs):
            if s:
                ids[i, width - len(s) :] = torch.tensor(s)
                mask[i, width - len(s) :] = 1
        return ids.to(self.device), mask.to(self.device)

    def _text(self, token_ids: list[int]) -> str:
        return self.tokenizer.decode(token_ids, skip_special_tokens=True)


def _top_p(probs: Any, top_p: float) -> Any:
    """Keep the smallest set of most likely tokens whose mass reaches top_p; renormalise."""
    import torch

    sorted_probs, order = torch.sort(probs, descending=True)
    outside = sorted_probs.cumsum(-1) - sorted_probs >= top_p  # the first token is always kept
    sorted_probs[outside] = 0.0
    return torch.zeros_like(probs).scatter(-1, order, sorted_probs) / sorted_probs.sum()


def _eos_ids(tokenizer: Any, model: Any) -> set[int]:
    """End-of-sequence ids as vLLM takes them: the tokenizer's plus the generation config's."""
    ids: set[int] = set()
    if tokenizer.eos_token_id is not None:
        ids.add(int(tokenizer.eos_token_id))
    gen_eos = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
    if isinstance(gen_eos, int):
        ids.add(gen_eos)
    elif gen_eos:
        ids.update(int(t) for t in gen_eos)
    return ids


def _tied_keys(model: Any) -> list[str]:
    """Parameter names that share storage with another parameter (absent from saved checkpoints)."""
    seen: dict[int, str] = {}
    tied = []
    for name, p in model.named_parameters(remove_duplicate=False):
        if id(p) in seen:
            tied.append(name)
        else:
            seen[id(p)] = name
    return tied


def _read_safetensors(checkpoint_dir: str) -> dict[str, Any]:
    from safetensors.torch import load_file

    root = Path(checkpoint_dir)
    index = root / "model.safetensors.index.json"
    if index.is_file():
        files = sorted(set(json.loads(index.read_text())["weight_map"].values()))
    else:
        files = sorted(p.name for p in root.glob("*.safetensors"))
    if not files:
        raise EngineError(
            f"hf engine: no safetensors weights in {checkpoint_dir} (expected a save_pretrained directory)"
        )
    state: dict[str, Any] = {}
    for name in files:
        state.update(load_file(os.fspath(root / name)))
    return state
