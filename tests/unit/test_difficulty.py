"""Structural difficulty, levels and equal-size buckets."""

from __future__ import annotations

import math
import random

import pytest

from itool_ray.data.difficulty import assign_difficulty, bucketize, difficulty_level, structural_score
from itool_ray.data.schema import Sample
from itool_ray.data.synth import generate


def _tool(name: str, *params: str) -> dict:
    return {
        "name": name,
        "description": "",
        "parameters": {
            "type": "object",
            "properties": {p: {"type": "string"} for p in params},
            "required": [],
        },
    }


def _sample(sid: str, tools: list[dict], answer: list[dict], tags: list[str] | None = None) -> Sample:
    return Sample(
        id=sid, tools=tools, messages=[{"role": "user", "content": "x"}], answer=answer, tags=tags or []
    )


SIMPLE = _sample("a", [_tool("f", "x")], [{"name": "f", "arguments": {"x": "1"}}])
PARALLEL3 = _sample(
    "b",
    [_tool("g", "x", "y")],
    [{"name": "g", "arguments": {"x": str(i), "y": "z"}} for i in range(3)],
)


def test_a_three_call_parallel_sample_is_harder_than_a_one_argument_simple_one():
    assert structural_score(PARALLEL3) > structural_score(SIMPLE)
    assert difficulty_level(structural_score(SIMPLE)) == "easy"
    assert difficulty_level(structural_score(PARALLEL3)) == "hard"


def test_each_ingredient_adds_difficulty():
    base = structural_score(SIMPLE)
    more_args = _sample("c", [_tool("f", "x", "y")], [{"name": "f", "arguments": {"x": "1", "y": "2"}}])
    array = _sample("d", [_tool("f", "x")], [{"name": "f", "arguments": {"x": ["1", "2"]}}])
    obj = _sample("e", [_tool("f", "x")], [{"name": "f", "arguments": {"x": {"k": 1}}}])
    distractor = _sample("f", [_tool("f", "x"), _tool("h")], SIMPLE.answer)
    reasoning = _sample("g", SIMPLE.tools, SIMPLE.answer, tags=["reasoning", "reasoning:unit"])
    for harder in (more_args, array, obj, distractor, reasoning):
        assert structural_score(harder) > base, harder.id
    assert structural_score(obj) > structural_score(array)
    assert difficulty_level(structural_score(reasoning)) == "hard"


def test_a_no_call_sample_scores_above_a_trivial_call():
    no_call = _sample("n", [_tool("f", "x")], [])
    assert structural_score(no_call) > structural_score(SIMPLE)


def test_assign_difficulty_returns_copies_with_levels():
    samples = [SIMPLE, PARALLEL3]
    out = assign_difficulty(samples)
    assert [s.difficulty for s in out] == ["easy", "hard"]
    assert SIMPLE.difficulty is None  # the input is not modified


def test_generator_levels_follow_the_structure():
    samples = generate(600, seed=1)
    assert [s.difficulty for s in samples] == [s.difficulty for s in assign_difficulty(samples)]
    levels = {lvl: sum(s.difficulty == lvl for s in samples) for lvl in ("easy", "medium", "hard")}
    assert all(n > 60 for n in levels.values()), levels
    simple = [s for s in samples if s.category == "simple"]
    reasoning = [s for s in samples if s.category == "reasoning"]
    assert sum(s.difficulty == "easy" for s in simple) > len(simple) / 2
    assert sum(s.difficulty == "hard" for s in reasoning) > len(reasoning) * 0.8


def test_bucketize_makes_equal_terciles_ordered_by_score():
    samples = generate(301, seed=2)
    buckets = bucketize(samples)
    assert list(buckets) == ["easy", "medium", "hard"]
    assert [len(b) for b in buckets.values()] == [101, 100, 100]
    assert max(map(structural_score, buckets["easy"])) <= min(map(structural_score, buckets["medium"]))
    assert max(map(structural_score, buckets["medium"])) <= min(map(structural_score, buckets["hard"]))
    # inside a bucket the input order is kept
    pos = {s.id: i for i, s in enumerate(samples)}
    for b in buckets.values():
        assert [pos[s.id] for s in b] == sorted(pos[s.id] for s in b)


def test_bucketize_does_not_depend_on_input_order():
    samples = generate(200, seed=3)
    shuffled = list(samples)
    random.Random(0).shuffle(shuffled)
    a = {k: sorted(s.id for s in v) for k, v in bucketize(samples).items()}
    b = {k: sorted(s.id for s in v) for k, v in bucketize(shuffled).items()}
    assert a == b


def test_bucketize_takes_any_score_and_names():
    samples = generate(10, seed=4)
    rank = {s.id: -i for i, s in enumerate(samples)}  # e.g. a perplexity: here the reverse order
    buckets = bucketize(samples, by=lambda s: rank[s.id], names=("low", "high"))
    assert [s.id for s in buckets["low"]] == [s.id for s in samples[5:]]
    assert [s.id for s in buckets["high"]] == [s.id for s in samples[:5]]


def test_bucketize_edge_cases():
    assert bucketize([]) == {"easy": [], "medium": [], "hard": []}
    assert [len(v) for v in bucketize([SIMPLE]).values()] == [1, 0, 0]
    with pytest.raises(ValueError, match="NaN.*'a'"):
        bucketize([SIMPLE], by=lambda s: math.nan)
    with pytest.raises(ValueError):
        bucketize([SIMPLE], names=("x", "x"))


def test_one_cut_over_all_categories_leaves_the_last_phase_without_a_no_call_answer():
    """Why warmup.bucket_within exists: by the structural score "no call" answers are easy or medium."""
    samples = generate(600, seed=5)
    hard = bucketize(samples)["hard"]
    assert not [s for s in hard if s.category == "irrelevance"]


def test_bucketize_within_a_group_cuts_each_groups_own_terciles():
    samples = generate(600, seed=5)
    buckets = bucketize(samples, within=lambda s: s.category)
    by_cat: dict[str, dict[str, list]] = {}
    for name, bucket in buckets.items():
        for s in bucket:
            by_cat.setdefault(s.category, {}).setdefault(name, []).append(s)
    assert set(by_cat) == set(s.category for s in samples)
    for cat, cut in by_cat.items():
        own = [s for s in samples if s.category == cat]
        # every phase trains every category, in that category's own terciles (earlier ones take the rest)
        assert list(cut) == ["easy", "medium", "hard"], cat
        assert [len(cut[n]) for n in ("easy", "medium", "hard")] == [
            len(b) for b in bucketize(own).values()
        ], cat
        assert {n: [s.id for s in cut[n]] for n in cut} == {
            n: [s.id for s in b] for n, b in bucketize(own).items()
        }, cat
    # input order is kept inside a bucket, and every sample is in exactly one bucket
    pos = {s.id: i for i, s in enumerate(samples)}
    for b in buckets.values():
        assert [pos[s.id] for s in b] == sorted(pos[s.id] for s in b)
    assert sorted(s.id for b in buckets.values() for s in b) == sorted(s.id for s in samples)


@pytest.mark.parametrize("within", ["all", "category"])
def test_the_warmup_cuts_its_phases_as_warmup_bucket_within_says(monkeypatch, within):
    from itool_ray.config import load_config
    from itool_ray.train import sft

    seen = {}
    monkeypatch.setattr(
        sft, "_run_phases", lambda phases, **kw: seen.update(phases=phases, extra=kw["extra"])
    )
    samples = generate(300, seed=6)
    cfg = load_config("tiny", ["--warmup.bucket_within", within])
    sft.run_warmup(samples, model_dir="unused", out_dir="unused", cfg=cfg)
    last = {s.category for s in seen["phases"][-1][1]}
    assert ("irrelevance" in last) == (within == "category")
    assert seen["extra"]["bucket_within"] == within
