"""Deficiency mining, the pure part (DESIGN §1): what is asked of the policy, the mined row, the
deficiency rule, the summary, and what the later stages read back from the rows.

    requests, gt_pairs = mining_requests(samples, prompts, stop=eot, cfg=cfg)   # in the Ray Data UDF
    rows = mined_rows(samples, fleet.generate(requests), fleet.score_batch(gt_pairs), cfg)
    rows = apply_rule(rows, ratio=0.3, rule="wrong_or_hard")     # on the driver: needs every perplexity
    summary = summarize(rows)
    deficient_samples(rows, limit=…), deficient_answer(row), row_sample(row)   # search and pairs stages

For every sample the policy answers once greedily and ``mining.samples_per_prompt`` times at the mining
temperature (seeded per sample), and the ground-truth answer (+ end of turn) is scored once.

A sample is deficient when the policy answers it wrongly (the greedy answer or any sampled answer has
reward < 1, i.e. is not an exact match), or when its ground truth is among the hardest ``ratio`` of its
group by perplexity under the policy. Groups are "has a call" and "no call" (the right answer is ``[]``),
ranked separately as in the paper, so the many easy no-call samples do not crowd out the call samples.

Rows are flat dicts of Arrow-friendly values (strings, numbers, booleans, lists of them); the Sample
travels as JSON text in ``sample`` because tool schemas differ from row to row.
"""

from __future__ import annotations

import math
import zlib
from collections import defaultdict
from collections.abc import Iterable, Sequence
from typing import Any, Literal

from itool_ray.config import Config
from itool_ray.data.io import sample_from_row
from itool_ray.data.schema import Sample
from itool_ray.engines.base import GenerationRequest, GenerationResult

Rule = Literal["wrong_or_hard", "wrong", "hard"]
# rule -> the reasons that make a sample deficient under it
RULE_REASONS: dict[str, tuple[str, ...]] = {
    "wrong_or_hard": ("wrong", "hard"),
    "wrong": ("wrong",),
    "hard": ("hard",),
}


def arrow_schema() -> Any:  # -> pyarrow.Schema
    """Arrow types of a mined row, in output order (the Parquet file's schema)."""
    import pyarrow as pa

    return pa.schema(
        [
            ("id", pa.string()),
            ("category", pa.string()),
            ("difficulty", pa.string()),
            ("has_call", pa.bool_()),
            ("greedy_text", pa.string()),
            ("greedy_score", pa.float64()),
            ("greedy_exact", pa.bool_()),
            ("sampled_texts", pa.list_(pa.string())),
            ("sampled_scores", pa.list_(pa.float64())),
            ("sampled_exact", pa.list_(pa.bool_())),
            ("generated_tokens", pa.int64()),  # the greedy and sampled answers' tokens together
            ("gt_tokens", pa.int64()),
            ("gt_logprob", pa.float64()),
            ("gt_perplexity", pa.float64()),
            ("wrong", pa.bool_()),
            ("hard", pa.bool_()),
            ("deficient", pa.bool_()),
            ("reason", pa.string()),
            ("sample", pa.string()),  # the Sample as JSON text: tool schemas differ from row to row
        ]
    )


def sample_seed(run_seed: int, sample_id: str) -> int:
    """A per-sample sampling seed: the same answers whichever batch, actor or retry serves the sample."""
    return (run_seed * 1_000_003 + zlib.crc32(sample_id.encode())) % 2**31


def mining_requests(
    samples: Sequence[Sample], prompts: Sequence[str], *, stop: str, cfg: Config
) -> tuple[list[GenerationRequest], list[tuple[str, str]]]:
    """What mining asks of the policy for ``samples`` (with their rendered prompts): the generation
    requests (every greedy one, then every sampled one) and the (prompt, ground truth) pairs to score."""
    from itool_ray.prompts import render_answer

    max_tokens, k = cfg.data.max_answer_tokens, cfg.mining.samples_per_prompt
    requests = [GenerationRequest(p, n=1, max_tokens=max_tokens, stop=[stop]) for p in prompts]
    if k:
        requests += [
            GenerationRequest(
                p,
                n=k,
                max_tokens=max_tokens,
                temperature=cfg.mining.temperature,
                stop=[stop],
                seed=sample_seed(cfg.run.seed, s.id),
            )
            for p, s in zip(prompts, samples, strict=True)
        ]
    gt_pairs = [(p, render_answer(s.answer) + stop) for p, s in zip(prompts, samples, strict=True)]
    return requests, gt_pairs


def mined_rows(
    samples: Sequence[Sample],
    results: Sequence[GenerationResult],
    gt_logprobs: Sequence[Sequence[float]],
    cfg: Config,
) -> list[dict[str, Any]]:
    """The rows of one batch from the answers to ``mining_requests`` and the ground truths' logprobs."""
    n, k = len(samples), cfg.mining.samples_per_prompt

    def tokens(result: GenerationResult) -> int:
        return sum(len(c.token_ids) for c in result.completions)

    return [
        mine_record(
            s,
            results[i].completions[0].text,
            [c.text for c in results[n + i].completions] if k else [],
            gt_logprobs[i],
            generated_tokens=tokens(results[i]) + (tokens(results[n + i]) if k else 0),
        )
        for i, s in enumerate(samples)
    ]


def perplexity(logprobs: Sequence[float]) -> float:
    """exp(-mean token logprob) of a continuation; the ground truth's difficulty under the policy."""
    if not logprobs:
        raise ValueError("perplexity of an empty continuation: the ground-truth text scored to no tokens")
    return math.exp(-math.fsum(logprobs) / len(logprobs))


def mine_record(
    sample: Sample,
    greedy_text: str,
    sampled_texts: Sequence[str],
    gt_logprobs: Sequence[float],
    *,
    generated_tokens: int = 0,
) -> dict[str, Any]:
    """One sample's scores: greedy and sampled answers with their rewards, ground-truth perplexity, and
    the tokens the policy generated for them (``generated_tokens``: the mining's cost).

    ``hard``/``deficient``/``reason`` are placeholders until ``apply_rule`` sees every record.
    """
    from itool_ray.reward import match

    greedy = match(greedy_text, sample)
    sampled = [match(t, sample) for t in sampled_texts]
    wrong = not greedy.exact or not all(m.exact for m in sampled)
    return {
        "id": sample.id,
        "category": sample.category,
        "difficulty": sample.difficulty or "",
        "has_call": bool(sample.answer),
        "greedy_text": greedy_text,
        "greedy_score": float(greedy.score),
        "greedy_exact": bool(greedy.exact),
        "sampled_texts": list(sampled_texts),
        "sampled_scores": [float(m.score) for m in sampled],
        "sampled_exact": [bool(m.exact) for m in sampled],
        "generated_tokens": int(generated_tokens),
        "gt_tokens": len(gt_logprobs),
        "gt_logprob": math.fsum(gt_logprobs),
        "gt_perplexity": perplexity(gt_logprobs),
        "wrong": wrong,
        "hard": False,
        "deficient": False,
        "reason": "",
        "sample": sample.to_json(),
    }


def hardest_ids(rows: Iterable[dict[str, Any]], ratio: float) -> set[str]:
    """Ids whose ground truth is among the hardest ``ratio`` by perplexity, per has-call/no-call group.

    ``floor(ratio * group size)`` per group, so the kept fraction never exceeds ``ratio``; ties are
    broken by id so the choice does not depend on the order rows arrived in.
    """
    if not 0 <= ratio <= 1:
        raise ValueError(f"mining ratio must be in [0, 1], got {ratio}")
    groups: dict[bool, list[dict[str, Any]]] = defaultdict(list)
    for r in rows:
        groups[bool(r["has_call"])].append(r)
    out: set[str] = set()
    for group in groups.values():
        k = math.floor(ratio * len(group) + 1e-9)
        ranked = sorted(group, key=lambda r: (-r["gt_perplexity"], r["id"]))
        out.update(r["id"] for r in ranked[:k])
    return out


def apply_rule(
    rows: Sequence[dict[str, Any]], *, ratio: float, rule: Rule = "wrong_or_hard"
) -> list[dict[str, Any]]:
    """New rows with ``hard``, ``deficient`` and ``reason`` ("wrong", "hard", "wrong+hard" or "") set.

    ``hard`` is recorded under every rule (it is a fact about the sample); ``deficient`` follows ``rule``.
    Duplicate ids are an error: a sample mined twice would be counted twice.
    """
    if rule not in RULE_REASONS:
        raise ValueError(f"unknown mining rule {rule!r} (rules: {', '.join(RULE_REASONS)})")
    seen: set[str] = set()
    for r in rows:
        if r["id"] in seen:
            raise ValueError(f"sample {r['id']!r} was mined twice: sample ids must be unique")
        seen.add(r["id"])
    hard = hardest_ids(rows, ratio)
    out = []
    for r in rows:
        is_hard = r["id"] in hard
        hits = {"wrong": r["wrong"], "hard": is_hard}
        reasons = [name for name in RULE_REASONS[rule] if hits[name]]
        out.append({**r, "hard": is_hard, "deficient": bool(reasons), "reason": "+".join(reasons)})
    return out


def _accuracy(rows: Sequence[dict[str, Any]]) -> dict[str, Any]:
    n = len(rows)
    sampled_exact = [e for r in rows for e in r["sampled_exact"]]
    sampled_scores = [s for r in rows for s in r["sampled_scores"]]
    return {
        "n": n,
        "greedy_accuracy": sum(r["greedy_exact"] for r in rows) / n if n else None,
        "greedy_mean_score": math.fsum(r["greedy_score"] for r in rows) / n if n else None,
        "sampled_accuracy": sum(sampled_exact) / len(sampled_exact) if sampled_exact else None,
        "sampled_mean_score": math.fsum(sampled_scores) / len(sampled_scores) if sampled_scores else None,
        "deficient": sum(r["deficient"] for r in rows),
    }


def _median(values: list[float]) -> float | None:
    if not values:
        return None
    s = sorted(values)
    mid = len(s) // 2
    return s[mid] if len(s) % 2 else (s[mid - 1] + s[mid]) / 2


def summarize(rows: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Counts and accuracies for the report: overall, by category, by has-call group; deficient by reason;
    the tokens the policy generated and the ground-truth tokens it scored (what mining cost)."""
    by_reason: dict[str, int] = defaultdict(int)
    for r in rows:
        if r["deficient"]:
            by_reason[r["reason"]] += 1
    by_category: dict[str, list[dict[str, Any]]] = defaultdict(list)
    by_group: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for r in rows:
        by_category[r["category"]].append(r)
        by_group["call" if r["has_call"] else "no_call"].append(r)
    groups = {}
    for name, group in sorted(by_group.items()):
        ppl = [r["gt_perplexity"] for r in group]
        hard = [r["gt_perplexity"] for r in group if r["hard"]]
        groups[name] = {
            **_accuracy(group),
            "hard": len(hard),
            "median_gt_perplexity": _median(ppl),
            "hard_threshold_perplexity": min(hard) if hard else None,
        }
    return {
        **_accuracy(rows),
        "wrong": sum(r["wrong"] for r in rows),
        "hard": sum(r["hard"] for r in rows),
        "deficient_by_reason": dict(sorted(by_reason.items())),
        # rows mined before the count existed have no "generated_tokens"
        "generated_tokens": sum(int(r.get("generated_tokens") or 0) for r in rows),
        "scored_tokens": sum(int(r.get("gt_tokens") or 0) for r in rows),
        "by_category": {name: _accuracy(group) for name, group in sorted(by_category.items())},
        "by_group": groups,
    }


def deficient_samples(
    rows: Iterable[dict[str, Any]],
    limit: int | None = None,
    *,
    per_category: bool = False,
    priority: str = "hardest",
) -> list[Sample]:
    """The deficient rows' Samples (what the MCTS stage searches).

    All of them in row order; with ``limit``, the ``limit`` most deficient: those the policy's greedy
    answer gets wrong before those only a sample got wrong, the less likely ground truth (higher
    perplexity) first within each, row order breaking ties. ``priority="nearest"`` turns that round: the
    policy's near misses first (greedy right, a sample wrong), the more likely ground truth first within
    each. ``per_category`` shares the ``limit`` out evenly across the rows' categories (round robin over
    each category's ranking; a category with fewer deficient rows leaves its share to the others), so one
    category's failures cannot fill the budget.
    """
    kept = [(i, r) for i, r in enumerate(rows) if r["deficient"]]
    if limit is not None and len(kept) > limit:
        if priority not in ("hardest", "nearest"):
            raise ValueError(f"priority must be 'hardest' or 'nearest', not {priority!r}")
        sign = 1 if priority == "hardest" else -1
        ranked = sorted(
            kept,
            key=lambda t: (sign * bool(t[1]["greedy_exact"]), -sign * float(t[1]["gt_perplexity"]), t[0]),
        )
        if per_category:
            groups: dict[str, list[tuple[int, dict[str, Any]]]] = {}
            for t in ranked:
                groups.setdefault(str(t[1].get("category") or ""), []).append(t)
            queues = [groups[c] for c in sorted(groups)]
            picked: list[tuple[int, dict[str, Any]]] = []
            depth = 0
            while len(picked) < limit:
                picked += [q[depth] for q in queues if depth < len(q)][: limit - len(picked)]
                depth += 1
            ranked = picked
        kept = sorted(ranked[:limit], key=lambda t: t[0])
    return [row_sample(r) for _, r in kept]


def row_sample(row: dict[str, Any]) -> Sample:
    """The Sample a mined row is about."""
    return sample_from_row(row["sample"])


def deficient_answer(row: dict[str, Any]) -> str | None:
    """The policy's deficient answer for a ground-truth pair: the greedy one if wrong, else the worst
    sampled one (None when every answer was right)."""
    if not row["greedy_exact"]:
        return row["greedy_text"]
    wrong = [
        (s, t)
        for s, t, e in zip(row["sampled_scores"], row["sampled_texts"], row["sampled_exact"], strict=True)
        if not e
    ]
    return min(wrong)[1] if wrong else None
