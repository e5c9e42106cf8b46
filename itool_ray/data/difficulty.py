"""Difficulty: a structural score per sample, easy/medium/hard levels, and equal-size buckets.

The warm-up SFT trains easy -> medium -> hard (DESIGN §1). The structural score counts what a correct
answer has to get right:

    1.0   per call                      0.25  per argument
    0.5   per array value               0.75  per object value (also objects inside arrays)
    2.25  per reasoning tag             0.5   per tool shown but not called (distractors)
    1.0   when the right answer is no call

Levels by fixed thresholds: ``easy`` below 2.0, ``medium`` below 3.5, ``hard`` from 3.5. On the
synthetic data (default mix) that gives about 23% easy / 38% medium / 39% hard: a simple call with up to
three plain arguments, a one-argument call beside one distractor, or "no call" beside one tool is easy;
most ``multiple`` and irrelevance samples and short two-call answers are medium; three calls, long
two-call answers, and every argument that needs reasoning (>= 1.25 + 2.25) are hard.

``bucketize`` ignores the thresholds and cuts equal terciles (or as many buckets as names) by any score:
the structural one by default, or e.g. the policy's perplexity of the ground truth.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

from itool_ray.data.schema import DIFFICULTIES, Sample

CALL = 1.0
ARGUMENT = 0.25
ARRAY = 0.5
OBJECT = 0.75
REASONING = 2.25
DISTRACTOR = 0.5
NO_CALL = 1.0
EASY_BELOW = 2.0
HARD_FROM = 3.5


def _value_weight(v: Any) -> float:
    if isinstance(v, dict):
        return OBJECT
    if isinstance(v, list):
        return ARRAY + (OBJECT if any(isinstance(x, dict) for x in v) else 0.0)
    return 0.0


def structural_score(sample: Sample) -> float:
    """Higher = harder; see the module docstring for the weights."""
    score = 0.0
    called = set()
    for call in sample.answer:
        called.add(call["name"])
        args = call.get("arguments") or {}
        score += CALL + sum(ARGUMENT + _value_weight(v) for v in args.values())
    score += DISTRACTOR * sum(1 for t in sample.tool_functions() if t.get("name") not in called)
    if not sample.answer:
        score += NO_CALL
    score += REASONING * sum(1 for tag in sample.tags if tag.startswith("reasoning:"))
    return score


def difficulty_level(score: float) -> str:
    """``easy`` / ``medium`` / ``hard`` by the fixed thresholds ``EASY_BELOW`` and ``HARD_FROM``."""
    if score < EASY_BELOW:
        return "easy"
    return "medium" if score < HARD_FROM else "hard"


def assign_difficulty(samples: Sequence[Sample]) -> list[Sample]:
    """Copies of ``samples`` with ``difficulty`` set from the structural score."""
    return [s.model_copy(update={"difficulty": difficulty_level(structural_score(s))}) for s in samples]


def bucketize(
    samples: Sequence[Sample],
    *,
    by: Callable[[Sample], float] | None = None,
    names: Sequence[str] = DIFFICULTIES,
    within: Callable[[Sample], str] | None = None,
) -> dict[str, list[Sample]]:
    """Split into ``len(names)`` buckets of equal size (earlier buckets take the remainder) by score;
    with ``within``, equal within each group.

    Ranks by ``(score, id, position)``, so ties are cut the same way whatever the input order; inside a
    bucket samples keep their input order (the curriculum runs across buckets, not within one).

    ``within`` (e.g. the category) cuts each group's own terciles and joins them: every bucket then holds
    every group (a group's easiest samples first, its hardest last) instead of one group's samples all
    falling into one bucket, as "no call" answers do under the structural score — a curriculum whose last
    phase holds no irrelevance sample unlearns abstaining.
    """
    if not names:
        raise ValueError("bucketize needs at least one bucket name")
    if len(set(names)) != len(names):
        raise ValueError(f"bucket names must be distinct, got {list(names)}")
    score = by or structural_score
    keys = []
    for i, s in enumerate(samples):
        v = float(score(s))
        if math.isnan(v):
            raise ValueError(f"difficulty score is NaN for sample {s.id!r} (position {i}); fix the scorer")
        keys.append((v, s.id, i))
    groups: dict[str, list[int]] = {}
    for i, s in enumerate(samples):
        groups.setdefault(within(s) if within else "", []).append(i)
    bucket_of = [0] * len(samples)
    for members in groups.values():
        ranked = sorted(members, key=keys.__getitem__)
        base, extra = divmod(len(ranked), len(names))
        start = 0
        for b in range(len(names)):
            size = base + (1 if b < extra else 0)
            for i in ranked[start : start + size]:
                bucket_of[i] = b
            start += size
    out: dict[str, list[Sample]] = {name: [] for name in names}
    for i, s in enumerate(samples):
        out[names[bucket_of[i]]].append(s)
    return out
