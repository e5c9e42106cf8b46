"""Held-out evaluation: greedy answers from any engine-like object, scored with ``reward.match``.

Accuracy is BFCL-exact (``MatchResult.exact``); the mean partial-credit score is reported beside it.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from itool_ray.data.schema import Sample
from itool_ray.engines.base import GenerationRequest
from itool_ray.prompts import end_of_turn, render_prompt
from itool_ray.reward import match


@dataclass
class EvalResult:
    accuracy: dict[str, float]  # category -> exact accuracy, plus "overall"
    mean_score: dict[str, float]  # category -> mean partial-credit score, plus "overall"
    counts: dict[str, int]  # category -> samples, plus "overall"
    records: list[dict[str, Any]] = field(
        default_factory=list
    )  # one per sample: id, category, output, exact, score
    too_long: int = 0  # prompts longer than the engine's context: counted as wrong, never sent

    def to_dict(self, *, with_records: bool = False) -> dict[str, Any]:
        out: dict[str, Any] = {
            "accuracy": self.accuracy,
            "mean_score": self.mean_score,
            "counts": self.counts,
            "too_long": self.too_long,
        }
        if with_records:
            out["records"] = self.records
        return out


def summarise(records: Sequence[dict[str, Any]]) -> EvalResult:
    by_cat: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for r in records:
        by_cat[r["category"]].append(r)
    acc, score, counts = {}, {}, {}
    for cat in sorted(by_cat):
        rs = by_cat[cat]
        acc[cat] = sum(r["exact"] for r in rs) / len(rs)
        score[cat] = sum(r["score"] for r in rs) / len(rs)
        counts[cat] = len(rs)
    n = len(records)
    acc["overall"] = sum(r["exact"] for r in records) / n if n else 0.0
    score["overall"] = sum(r["score"] for r in records) / n if n else 0.0
    counts["overall"] = n
    too_long = sum(1 for r in records if r.get("too_long"))
    return EvalResult(acc, score, counts, list(records), too_long)


def judge_with_reward(text: str, sample: Sample) -> dict[str, Any]:
    """The default judge: our AST reward (``exact`` agrees with BFCL's checker)."""
    m = match(text, sample)
    return {"exact": bool(m.exact), "score": float(m.score), "error": m.error}


def evaluate_samples(
    samples: Sequence[Sample],
    engine: Any,
    tokenizer: Any,
    *,
    style: str = "compact",
    max_tokens: int = 96,
    batch_size: int = 32,
    judge: Callable[[str, Sample], dict[str, Any]] = judge_with_reward,
    progress: Callable[[int], None] | None = None,
    max_model_len: int | None = None,
) -> EvalResult:
    """Greedy-decode every sample with ``engine.generate`` (an Engine or a replica pool) and judge it.

    ``judge(text, sample)`` returns at least ``exact`` and ``score`` for the sample's record. A prompt that
    leaves no room in ``max_model_len`` (the engine's context) is not sent (an engine refuses it, and with
    it the whole batch): it is one wrong answer, with the reason in its record and counted in ``too_long``.
    """
    stop = [end_of_turn(tokenizer)]
    records: list[dict[str, Any]] = []
    for start in range(0, len(samples), batch_size):
        batch = samples[start : start + batch_size]
        prompts = [render_prompt(tokenizer, s.tools, s.messages, style=style) for s in batch]
        sizes = [_prompt_tokens(tokenizer, p) if max_model_len else 0 for p in prompts]
        fits = [not max_model_len or n < max_model_len for n in sizes]
        requests = [
            GenerationRequest(prompt=p, max_tokens=max_tokens, temperature=0.0, stop=stop)
            for p, ok in zip(prompts, fits, strict=True)
            if ok
        ]
        answers = iter(engine.generate(requests) if requests else [])
        for s, ok, n in zip(batch, fits, sizes, strict=True):
            if not ok:
                records.append(
                    {
                        "id": s.id,
                        "category": s.category,
                        "output": "",
                        "exact": False,
                        "score": 0.0,
                        "error": f"prompt of {n} tokens does not fit the context (engine.max_model_len {max_model_len})",
                        "too_long": True,
                    }
                )
                continue
            text = next(answers).completions[0].text
            records.append({"id": s.id, "category": s.category, "output": text, **judge(text, s)})
        if progress:
            progress(len(batch))
    return summarise(records)


def _prompt_tokens(tokenizer: Any, prompt: str) -> int:
    return len(tokenizer(prompt, add_special_tokens=False)["input_ids"])
