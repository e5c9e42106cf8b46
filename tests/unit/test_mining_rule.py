"""The deficiency rule and the mining summary (itool_ray.mining): pure functions over mined rows."""

from __future__ import annotations

import math

import pytest
from tools import weather_tool

from itool_ray.data.schema import Sample
from itool_ray.mining import apply_rule, deficient_samples, hardest_ids, mine_record, perplexity, summarize
from itool_ray.prompts import render_answer

WEATHER = weather_tool(unit=False, description="Weather for a city.")


def _sample(sid: str, answer: list[dict], category: str = "simple") -> Sample:
    return Sample(
        id=sid,
        tools=[WEATHER],
        messages=[{"role": "user", "content": "weather in Paris?"}],
        answer=answer,
        category=category,
    )


CALL = [{"name": "get_weather", "arguments": {"city": "Paris"}}]


def _row(
    sid: str, ppl: float, *, has_call: bool = True, wrong: bool = False, category: str = "simple"
) -> dict:
    return {
        "id": sid,
        "category": category,
        "has_call": has_call,
        "gt_perplexity": ppl,
        "wrong": wrong,
        "greedy_exact": not wrong,
        "greedy_score": 0.0 if wrong else 1.0,
        "sampled_exact": [not wrong, True],
        "sampled_scores": [0.0 if wrong else 1.0, 1.0],
        "hard": False,
        "deficient": False,
        "reason": "",
    }


def test_perplexity_is_exp_of_mean_negative_logprob():
    assert perplexity([math.log(0.5)] * 4) == pytest.approx(2.0)
    with pytest.raises(ValueError, match="empty continuation"):
        perplexity([])


def test_hardest_are_taken_per_call_and_no_call_group():
    rows = [_row(f"c{i}", float(i)) for i in range(10)] + [
        _row(f"n{i}", 100.0 + i, has_call=False) for i in range(5)
    ]
    # floor(0.3 * 10) = 3 call samples, floor(0.3 * 5) = 1 no-call sample: the no-call group's much
    # higher perplexities do not crowd out the call group.
    assert hardest_ids(rows, 0.3) == {"c9", "c8", "c7", "n4"}


def test_hardest_ties_are_broken_by_id_not_arrival_order():
    rows = [_row("b", 2.0), _row("a", 2.0), _row("c", 1.0)]
    assert hardest_ids(rows, 0.34) == {"a"}
    assert hardest_ids(list(reversed(rows)), 0.34) == {"a"}


@pytest.mark.parametrize(
    ("rule", "expected"),
    [
        ("wrong_or_hard", {"w": "wrong", "h": "hard", "wh": "wrong+hard", "ok": ""}),
        ("wrong", {"w": "wrong", "h": "", "wh": "wrong", "ok": ""}),
        ("hard", {"w": "", "h": "hard", "wh": "hard", "ok": ""}),
    ],
)
def test_rule_decides_which_reasons_make_a_sample_deficient(rule, expected):
    rows = [_row("w", 1.0, wrong=True), _row("h", 9.0), _row("wh", 8.0, wrong=True), _row("ok", 2.0)]
    out = {r["id"]: r for r in apply_rule(rows, ratio=0.5, rule=rule)}
    assert {k: r["reason"] for k, r in out.items()} == expected
    assert {k: r["deficient"] for k, r in out.items()} == {k: bool(v) for k, v in expected.items()}
    assert {k for k, r in out.items() if r["hard"]} == {"h", "wh"}  # recorded under every rule


def test_rule_rejects_duplicate_ids_and_unknown_rules():
    with pytest.raises(ValueError, match="mined twice"):
        apply_rule([_row("a", 1.0), _row("a", 2.0)], ratio=0.3)
    with pytest.raises(ValueError, match="unknown mining rule"):
        apply_rule([_row("a", 1.0)], ratio=0.3, rule="easy")


def test_mine_record_scores_answers_and_ground_truth():
    s = _sample("s1", CALL)
    right = render_answer(s.answer)
    row = mine_record(s, right, [right, '[get_weather(city="Rome")]'], [math.log(0.25)] * 3)
    assert row["greedy_exact"] and row["greedy_score"] == 1.0
    assert row["sampled_exact"] == [True, False] and row["sampled_scores"][1] < 1.0
    assert row["wrong"] is True  # one sampled answer is wrong
    assert row["gt_tokens"] == 3 and row["gt_perplexity"] == pytest.approx(4.0)
    assert row["has_call"] is True
    assert Sample.model_validate_json(row["sample"]) == s


def test_deficient_samples_per_category_shares_the_limit_out_across_categories():
    right = render_answer(CALL)
    s = [
        _sample(f"s{i}", CALL, category=c)
        for i, c in enumerate(["reasoning"] * 4 + ["simple", "parallel"] * 2)
    ]
    records = [mine_record(x, "nonsense", [], [-1.0 - i]) for i, x in enumerate(s[:4])]  # greedy wrong
    records += [mine_record(x, right, ["nonsense"], [-0.1]) for x in s[4:]]  # only a sample wrong
    rows = apply_rule(records, ratio=0.0)
    # most deficient first would take reasoning only; per category: each category's best, then the next
    assert deficient_samples(rows, limit=3) == s[1:4]
    assert deficient_samples(rows, limit=3, per_category=True) == [s[3], s[4], s[5]]
    # a category that runs out leaves its share to the others
    assert deficient_samples(rows, limit=7, per_category=True) == [s[1], s[2], s[3], *s[4:]]
    assert deficient_samples(rows, limit=8, per_category=True) == deficient_samples(rows) == s


def test_mine_record_no_call_sample_answered_with_no_call_is_right():
    row = mine_record(_sample("n1", [], category="irrelevance"), "[]", ["[]"], [-0.1])
    assert row["has_call"] is False and row["wrong"] is False


def test_summary_counts_accuracy_by_category_group_and_reason():
    rows = [
        _row("a", 1.0, wrong=True),
        _row("b", 5.0),
        _row("c", 2.0, category="parallel"),
        _row("d", 3.0, has_call=False, category="irrelevance"),
    ]
    summary = summarize(apply_rule(rows, ratio=0.5))
    assert summary["n"] == 4
    assert summary["greedy_accuracy"] == pytest.approx(0.75)
    assert summary["sampled_accuracy"] == pytest.approx(7 / 8)
    assert summary["deficient"] == 2 and summary["deficient_by_reason"] == {"hard": 1, "wrong": 1}
    assert summary["by_category"]["simple"]["n"] == 2
    assert summary["by_category"]["simple"]["greedy_accuracy"] == pytest.approx(0.5)
    assert summary["by_group"]["call"]["hard"] == 1 and summary["by_group"]["no_call"]["hard"] == 0
    assert summary["by_group"]["call"]["hard_threshold_perplexity"] == 5.0


def test_deficient_samples_reads_back_the_kept_samples():
    s1, s2 = _sample("s1", CALL), _sample("s2", CALL)
    right = render_answer(CALL)
    rows = [mine_record(s1, "nonsense", [], [-1.0]), mine_record(s2, right, [], [-0.1])]
    assert deficient_samples(apply_rule(rows, ratio=0.0)) == [s1]


def test_deficient_samples_limit_keeps_greedy_failures_first_then_the_least_likely_truth():
    right = render_answer(CALL)
    s = [_sample(f"s{i}", CALL) for i in range(5)]
    rows = apply_rule(
        [
            mine_record(s[0], right, ["nonsense"], [-0.1]),  # only a sample wrong, likely truth
            mine_record(s[1], "nonsense", [], [-0.2]),  # greedy wrong
            mine_record(s[2], right, ["nonsense"], [-3.0]),  # only a sample wrong, unlikely truth
            mine_record(s[3], "nonsense", [], [-2.0]),  # greedy wrong, less likely truth
            mine_record(s[4], right, [right], [-0.1]),  # right: not deficient
        ],
        ratio=0.0,
    )
    assert deficient_samples(rows, limit=2) == [s[1], s[3]]  # row order kept
    assert deficient_samples(rows, limit=3) == [s[1], s[2], s[3]]
    assert deficient_samples(rows, limit=10) == deficient_samples(rows) == s[:4]
    # near misses first (greedy right, a sample wrong), the more likely ground truth first
    assert deficient_samples(rows, limit=1, priority="nearest") == [s[0]]
    assert deficient_samples(rows, limit=3, priority="nearest") == [s[0], s[1], s[2]]
    with pytest.raises(ValueError, match="priority"):
        deficient_samples(rows, limit=1, priority="easiest")


def test_mining_asks_greedy_then_seeded_samples_and_scores_each_ground_truth(tmp_path):
    from itool_ray.config import load_config
    from itool_ray.engines.base import Completion, GenerationResult
    from itool_ray.mining import mined_rows, mining_requests, sample_seed

    cfg = load_config("tiny", ["--run.root", str(tmp_path), "--mining.samples_per_prompt", "2"])
    s = [_sample("a", CALL), _sample("b", [])]
    requests, gt = mining_requests(s, ["P-a", "P-b"], stop="<eot>", cfg=cfg)
    assert [(r.prompt, r.n, r.temperature) for r in requests] == [
        ("P-a", 1, 0.0),
        ("P-b", 1, 0.0),
        ("P-a", 2, cfg.mining.temperature),
        ("P-b", 2, cfg.mining.temperature),
    ]
    assert requests[2].seed == sample_seed(cfg.run.seed, "a") != requests[3].seed  # per sample, not per batch
    assert gt == [("P-a", render_answer(CALL) + "<eot>"), ("P-b", render_answer([]) + "<eot>")]

    def result(*texts: str) -> GenerationResult:
        return GenerationResult(
            [Completion(text=t, token_ids=[1] * len(t), logprobs=None, finish_reason="stop") for t in texts]
        )

    right = render_answer(CALL)
    answers = [result(right), result("[]"), result(right, "nonsense"), result("[]", "[]")]
    rows = mined_rows(s, answers, [[-0.1], [-0.2, -0.3]], cfg)
    assert [r["id"] for r in rows] == ["a", "b"]
    assert rows[0]["greedy_exact"] and rows[0]["sampled_exact"] == [True, False] and rows[0]["wrong"]
    assert not rows[1]["wrong"]
    # What mining cost: every token the policy generated for a sample (greedy and sampled answers), and
    # the ground-truth tokens it scored; the summary adds them up.
    assert [r["generated_tokens"] for r in rows] == [2 * len(right) + len("nonsense"), 3 * len("[]")]
    summary = summarize(apply_rule(rows, ratio=0.0))
    assert summary["generated_tokens"] == 2 * len(right) + len("nonsense") + 6
    assert summary["scored_tokens"] == 3


def test_the_deficient_answer_is_the_wrong_greedy_one_else_the_worst_sample():
    from itool_ray.mining import deficient_answer, row_sample

    s = _sample("a", CALL)
    right, rome = render_answer(CALL), '[get_weather(city="Rome")]'
    assert deficient_answer(mine_record(s, "nonsense", [rome], [-0.1])) == "nonsense"
    assert deficient_answer(mine_record(s, right, [rome, "nonsense"], [-0.1])) == "nonsense"  # lowest reward
    assert deficient_answer(mine_record(s, right, [right], [-0.1])) is None
    assert row_sample(mine_record(s, right, [], [-0.1])) == s


def test_a_sample_reads_back_the_same_from_json_text_and_from_a_parquet_row():
    from itool_ray.data.io import sample_from_row, samples_to_table

    s = _sample("a", CALL)
    assert sample_from_row(s.to_json()) == s
    assert sample_from_row(samples_to_table([s]).to_pylist()[0]) == s
