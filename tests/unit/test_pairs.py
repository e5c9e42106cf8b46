"""Preference pairs from hand-built trees: the gap/floor/step rules, caps, dedup, ground-truth pairs."""

from __future__ import annotations

import pytest

from itool_ray.config import PairsConfig
from itool_ray.data.schema import Sample
from itool_ray.mcts import Tree, build_pairs, ground_truth_pair, pair_texts, step_pairs
from itool_ray.mcts.pairs import PairStats
from itool_ray.prompts import render_answer

PREFIX = '[get_weather(city="Paris",'
C_STEP, F_STEP = ' unit="celsius")]', ' unit="fahrenheit")]'
CELSIUS, FAHRENHEIT = PREFIX + C_STEP, PREFIX + F_STEP


def sample(sid: str = "w0") -> Sample:
    return Sample(
        id=sid,
        tools=[
            {
                "name": "get_weather",
                "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
            }
        ],
        messages=[
            {
                "role": "user",
                "content": "Weather in Paris, in celsius?" + ("" if sid == "w0" else f" ({sid})"),
            }
        ],
        answer=[{"name": "get_weather", "arguments": {"city": "Paris", "unit": "celsius"}}],
    )


def fork_tree(c_rewards=(1.0, 1.0), f_rewards=(0.5,), sid: str = "w0", c_step=C_STEP, f_step=F_STEP) -> Tree:
    """root -> PREFIX -> {c_step, f_step}; every rollout of a child is that child's own answer."""
    tree = Tree(sid, status="done")
    fork = tree.add_child(tree.root, PREFIX)
    c = tree.add_child(fork, c_step)
    f = tree.add_child(fork, f_step)
    for r in c_rewards:
        tree.backup(c, r, PREFIX + c_step)
    for r in f_rewards:
        tree.backup(f, r, PREFIX + f_step)
    return tree


def only(pairs):
    assert len(pairs) == 1, pairs
    return pairs[0]


def test_step_pair_prefers_the_higher_q_child_and_shares_the_prefix():
    s = sample()
    pair = only(step_pairs(fork_tree(), s, PairsConfig(), iteration=2))
    assert pair["prompt"] == [*s.messages, {"role": "assistant", "content": PREFIX}]
    assert pair["chosen"] == [{"role": "assistant", "content": C_STEP}]
    assert pair["rejected"] == [{"role": "assistant", "content": F_STEP}]
    assert pair["tools"] == s.tools
    assert pair["meta"] == {
        "sample_id": "w0",
        "iteration": 2,
        "depth": 1,
        "q_chosen": 1.0,
        "q_rejected": 0.5,
        "origin": "mcts",
        "prefix": PREFIX,
        "reward_chosen": 1.0,
        "reward_rejected": 0.5,
    }


def test_best_and_worst_of_three_children_are_paired():
    tree = fork_tree(c_rewards=(1.0,), f_rewards=(0.0,))
    mid = tree.add_child(tree.nodes[1], ' unit="kelvin")]')
    tree.backup(mid, 0.5, PREFIX + ' unit="kelvin")]')
    pair = only(step_pairs(tree, sample(), PairsConfig(), iteration=1))
    assert (pair["chosen"][0]["content"], pair["rejected"][0]["content"]) == (C_STEP, F_STEP)


def test_continuations_are_the_best_rollouts_under_each_child():
    tree = Tree("w0", status="done")
    a = tree.add_child(tree.root, "[get_weather(")
    b = tree.add_child(tree.root, "[get_time(")
    tree.backup(a, 0.5, '[get_weather(city="Rome")]')
    tree.backup(a, 1.0, '[get_weather(city="Paris", unit="celsius")]')
    tree.backup(b, 0.0, '[get_time(tz="CET")]')
    pair = only(step_pairs(tree, sample(), PairsConfig(), iteration=1))
    assert pair["meta"]["prefix"] == "" and pair["meta"]["depth"] == 0
    assert pair["chosen"][0]["content"] == '[get_weather(city="Paris", unit="celsius")]'
    assert pair["rejected"][0]["content"] == '[get_time(tz="CET")]'


def test_small_q_gap_is_dropped_and_an_exact_gap_is_kept():
    pairs, stats = build_pairs(
        [fork_tree(c_rewards=(0.55,), f_rewards=(0.5,))],
        {"w0": sample()},
        PairsConfig(q_floor=0),
        iteration=1,
    )
    assert pairs == [] and stats.small_gap == 1
    pairs, _ = build_pairs(
        [fork_tree(c_rewards=(0.6,), f_rewards=(0.5,))], {"w0": sample()}, PairsConfig(q_floor=0), iteration=1
    )
    assert len(pairs) == 1  # 0.6 - 0.5 is 0.0999… in floats; still the configured gap of 0.1


def test_chosen_below_the_floor_is_dropped():
    tree = fork_tree(c_rewards=(0.4,), f_rewards=(0.0,))
    pairs, stats = build_pairs([tree], {"w0": sample()}, PairsConfig(q_floor=0.5), iteration=1)
    assert pairs == [] and stats.below_floor == 1
    pairs, _ = build_pairs([tree], {"w0": sample()}, PairsConfig(q_floor=0.4), iteration=1)
    assert len(pairs) == 1


def test_min_chosen_reward_keeps_only_pairs_whose_chosen_answer_is_good_enough():
    partly_right = fork_tree(c_rewards=(0.8,), f_rewards=(0.1,))
    exact = fork_tree(c_rewards=(1.0,), f_rewards=(0.1,), sid="w1")
    samples = {"w0": sample(), "w1": sample("w1")}
    pairs, stats = build_pairs(
        [partly_right, exact], samples, PairsConfig(min_chosen_reward=1.0), iteration=1
    )
    assert [p["meta"]["sample_id"] for p in pairs] == ["w1"] and stats.chosen_not_good == 1
    pairs, _ = build_pairs([partly_right, exact], samples, PairsConfig(), iteration=1)
    assert len(pairs) == 2


def test_steps_that_differ_only_in_whitespace_are_no_pair():
    tree = fork_tree(c_step=C_STEP, f_step="  " + C_STEP.strip())
    pairs, stats = build_pairs([tree], {"w0": sample()}, PairsConfig(), iteration=1)
    assert pairs == [] and stats.same_step == 1


def test_a_rejected_side_whose_best_rollout_is_as_good_is_dropped():
    tree = fork_tree(c_rewards=(1.0, 1.0, 1.0), f_rewards=(0.0, 0.0))
    f = tree.nodes[3]
    tree.backup(f, 1.0, PREFIX + ' unit="fahrenheit", x=1)]')  # Q_f = 1/3, best rollout 1.0
    pairs, stats = build_pairs([tree], {"w0": sample()}, PairsConfig(), iteration=1)
    assert pairs == [] and stats.rollout_not_worse == 1


def test_children_without_a_complete_rollout_are_not_paired():
    tree = Tree("w0", status="done")
    a = tree.add_child(tree.root, "[a(")
    b = tree.add_child(tree.root, "[b(")
    tree.backup(a, 1.0, "[a()]")
    tree.backup(b, 0.0, None)  # truncated by the token budget
    pairs, stats = build_pairs([tree], {"w0": sample()}, PairsConfig(), iteration=1)
    assert pairs == [] and stats.no_rollout == 1


def two_fork_tree(sid: str = "w0") -> Tree:
    """Forks at the root (gap 2.5/3 - 0) and one step deeper (gap 1.0 - 0.5)."""
    tree = fork_tree(c_rewards=(1.0, 1.0), f_rewards=(0.5,), sid=sid)
    other = tree.add_child(tree.root, "[get_time(")
    tree.backup(other, 0.0, '[get_time(tz="CET")]')
    tree.backup(other, 0.0, '[get_time(tz="UTC")]')
    return tree


def test_per_sample_cap_keeps_the_largest_gaps():
    tree = two_fork_tree()
    assert len(step_pairs(tree, sample(), PairsConfig(), iteration=1)) == 2
    pairs, stats = build_pairs([tree], {"w0": sample()}, PairsConfig(max_per_sample=1), iteration=1)
    pair = only(pairs)
    assert pair["meta"]["depth"] == 0 and pair["meta"]["q_rejected"] == 0.0
    assert stats.over_sample_cap == 1


def test_per_iteration_cap_keeps_the_largest_gaps_in_sample_order():
    trees = [fork_tree(c_rewards=(1.0,), f_rewards=(r,), sid=f"s{i}") for i, r in enumerate((0.6, 0.0, 0.3))]
    samples = {f"s{i}": sample(f"s{i}") for i in range(3)}
    pairs, stats = build_pairs(trees, samples, PairsConfig(max_per_iteration=2), iteration=1)
    assert [p["meta"]["sample_id"] for p in pairs] == ["s1", "s2"]
    assert stats.over_iteration_cap == 1 and stats.mcts_pairs == 2


def test_duplicate_pairs_are_kept_once():
    tree = fork_tree()
    pairs, stats = build_pairs([tree, tree], {"w0": sample()}, PairsConfig(), iteration=1)
    assert len(pairs) == 1 and stats.duplicates == 1


def test_failed_trees_give_no_pairs():
    tree = fork_tree()
    tree.status = "failed"
    pairs, stats = build_pairs([tree], {"w0": sample()}, PairsConfig(), iteration=1)
    assert pairs == [] and stats.trees_skipped == 1


def test_a_tree_without_its_sample_is_an_error():
    with pytest.raises(KeyError, match="'w0' has no sample"):
        build_pairs([fork_tree()], {}, PairsConfig(), iteration=1)


# -- ground-truth pairs ----------------------------------------------------------------------------------
def unit_score(text: str, s: Sample) -> float:
    return 1.0 if "celsius" in text else 0.5 if "fahrenheit" in text else 0.0


def test_ground_truth_pair_prefers_the_ground_truth_with_an_empty_prefix():
    s = sample()
    pair = ground_truth_pair(s, FAHRENHEIT, iteration=3, score=unit_score)
    assert pair["prompt"] == [*s.messages, {"role": "assistant", "content": ""}]
    assert pair["chosen"][0]["content"] == render_answer(s.answer)
    assert pair["rejected"][0]["content"] == FAHRENHEIT
    meta = pair["meta"]
    assert (meta["origin"], meta["depth"], meta["prefix"], meta["iteration"]) == ("ground_truth", 0, "", 3)
    assert (meta["q_chosen"], meta["q_rejected"]) == (1.0, 0.5)


def test_no_ground_truth_pair_when_the_policy_answer_is_right():
    assert ground_truth_pair(sample(), CELSIUS, iteration=1, score=unit_score) is None


def test_build_pairs_adds_ground_truth_pairs_unless_disabled():
    s = sample()
    args = dict(iteration=1, deficient=[(s, FAHRENHEIT)], score=unit_score)
    pairs, stats = build_pairs([fork_tree()], {"w0": s}, PairsConfig(), **args)
    assert sorted(p["meta"]["origin"] for p in pairs) == ["ground_truth", "mcts"]
    assert (stats.mcts_pairs, stats.ground_truth_pairs) == (1, 1)
    pairs, _ = build_pairs([fork_tree()], {"w0": s}, PairsConfig(ground_truth_pairs=False), **args)
    assert [p["meta"]["origin"] for p in pairs] == ["mcts"]


def test_same_calls_drops_ground_truth_pairs_whose_answer_has_another_number_of_calls():
    s = sample()
    extra = FAHRENHEIT[:-1] + ', get_weather(city="Rome", unit="fahrenheit")]'  # one call too many
    stats = PairStats()
    assert ground_truth_pair(s, extra, iteration=1, score=unit_score, stats=stats, same_calls=True) is None
    assert stats.gt_call_count == 1
    assert ground_truth_pair(s, extra, iteration=1, score=unit_score) is not None  # off by default
    # one call with a wrong value is kept; so is an answer that does not parse (its fault is the syntax)
    assert ground_truth_pair(s, FAHRENHEIT, iteration=1, score=unit_score, same_calls=True) is not None
    assert ground_truth_pair(s, PREFIX + " unit=", iteration=1, score=unit_score, same_calls=True) is not None
    cfg = PairsConfig(ground_truth_same_calls=True)
    pairs, stats = build_pairs([], {"w0": s}, cfg, iteration=1, deficient=[(s, extra)], score=unit_score)
    assert pairs == [] and stats.gt_call_count == 1


def test_value_errors_only_keeps_pairs_that_differ_in_argument_values_alone():
    s = sample()
    extra_arg = PREFIX + ' unit="fahrenheit", days=3)]'  # an argument the truth does not have
    broken = PREFIX + " unit="  # does not parse
    cfg = PairsConfig(value_errors_only=True)
    args = dict(iteration=1, score=unit_score)
    for answer, kept in ((FAHRENHEIT, True), (extra_arg, False), (broken, False)):
        pairs, stats = build_pairs([], {"w0": s}, cfg, deficient=[(s, answer)], **args)
        assert (len(pairs), stats.not_value_error) == ((1, 0) if kept else (0, 1)), answer
    # step pairs too: the fork tree's two answers differ in the unit's value only
    pairs, stats = build_pairs([fork_tree()], {"w0": s}, cfg, **args)
    assert len(pairs) == 1 and stats.not_value_error == 0
    tree = fork_tree(c_step=C_STEP, f_step=' unit="celsius", days=2)]', f_rewards=(0.5,))
    pairs, stats = build_pairs([tree], {"w0": s}, cfg, **args)
    assert pairs == [] and stats.not_value_error == 1
    assert len(build_pairs([tree], {"w0": s}, PairsConfig(), **args)[0]) == 1  # off by default


def test_abstain_pairs_teach_not_to_call_alongside_value_errors():
    """An irrelevant request: the truth calls nothing; the policy called the tool anyway. Under
    value_errors_only that pair differs in calls, so it is dropped unless keep_abstain_pairs."""
    s = sample("irr")
    irrelevant = Sample(id="irr", tools=s.tools, messages=s.messages, answer=[])

    def abstain_score(text: str, smp: Sample) -> float:
        return 1.0 if text.strip() == "[]" else 0.0

    spurious = '[get_weather(city="Paris")]'
    args = dict(iteration=1, score=abstain_score, deficient=[(irrelevant, spurious)])
    strict = PairsConfig(value_errors_only=True)
    pairs, stats = build_pairs([], {"irr": irrelevant}, strict, **args)
    assert pairs == [] and stats.not_value_error == 1
    keep = PairsConfig(value_errors_only=True, keep_abstain_pairs=True)
    pairs, stats = build_pairs([], {"irr": irrelevant}, keep, **args)
    assert [(p["chosen"][0]["content"], p["rejected"][0]["content"]) for p in pairs] == [("[]", spurious)]
    assert (stats.abstain, stats.not_value_error) == (1, 0)
    # The reverse (a call chosen over no call) is not an abstain pair: still dropped as not a value error.
    s2 = sample()
    pairs, stats = build_pairs([], {"w0": s2}, keep, iteration=1, score=unit_score, deficient=[(s2, "[]")])
    assert pairs == [] and (stats.abstain, stats.not_value_error) == (0, 1)
    # Answers that do not parse are never abstain pairs.
    pairs, stats = build_pairs(
        [], {"irr": irrelevant}, keep, iteration=1, score=abstain_score, deficient=[(irrelevant, "[get_w")]
    )
    assert pairs == [] and stats.abstain == 0


def test_abstain_share_caps_no_call_pairs_at_their_share_of_the_iteration_keeping_the_largest_gaps():
    """Three irrelevant requests answered with a call (abstain pairs, gaps 1.0, 1.0, 0.5) and three value
    errors: a share of 1/4 keeps one abstain pair (1 of 4), the largest gap first in sample order."""

    def score(text: str, smp: Sample) -> float:
        if not smp.answer:
            return 1.0 if text.strip() == "[]" else 0.5 if "Rome" in text else 0.0
        return unit_score(text, smp)

    tools = sample().tools
    irr = [Sample(id=f"i{k}", tools=tools, messages=sample(f"i{k}").messages, answer=[]) for k in range(3)]
    calls = ['[get_weather(city="Paris")]', '[get_weather(city="Oslo")]', '[get_weather(city="Rome")]']
    values = [sample(f"v{k}") for k in range(3)]
    deficient = list(zip(irr, calls, strict=True)) + [(v, FAHRENHEIT) for v in values]
    samples = {x.id: x for x in irr + values}
    args = dict(iteration=1, score=score, deficient=deficient)

    def build(share: float):
        cfg = PairsConfig(value_errors_only=True, keep_abstain_pairs=True, max_abstain_share=share)
        pairs, stats = build_pairs([], samples, cfg, **args)
        return [p["meta"]["sample_id"] for p in pairs], stats

    ids, stats = build(1.0)  # the default: no cap
    assert ids == ["i0", "i1", "i2", "v0", "v1", "v2"] and (stats.abstain, stats.over_abstain_cap) == (3, 0)
    ids, stats = build(0.25)
    assert ids == ["i0", "v0", "v1", "v2"] and stats.over_abstain_cap == 2
    ids, stats = build(0.5)  # 3 of 6 is exactly half: nothing dropped
    assert len(ids) == 6 and stats.over_abstain_cap == 0
    ids, stats = build(0.0)
    assert ids == ["v0", "v1", "v2"] and stats.over_abstain_cap == 3
    # Value-error pairs are never capped by it: with no abstain pair, every pair stays.
    cfg = PairsConfig(value_errors_only=True, keep_abstain_pairs=True, max_abstain_share=0.0)
    pairs, stats = build_pairs([], samples, cfg, iteration=1, score=score, deficient=deficient[3:])
    assert len(pairs) == 3 and stats.over_abstain_cap == 0


def test_response_level_pairs_take_the_best_and_worst_whole_answers_of_the_same_search():
    s = sample()
    step = build_pairs([fork_tree()], {"w0": s}, PairsConfig(), iteration=1)[0]
    pairs, stats = build_pairs([fork_tree()], {"w0": s}, PairsConfig(level="response"), iteration=1)
    assert [
        (p["prompt"][-1]["content"], p["chosen"][0]["content"], p["rejected"][0]["content"]) for p in pairs
    ] == [("", CELSIUS, FAHRENHEIT)]
    assert pairs[0]["meta"]["origin"] == "mcts_response" and pairs[0]["meta"]["depth"] == 0
    assert step[0]["meta"]["prefix"] == PREFIX and stats.mcts_pairs == 1
    # the same rules: a gap below q_gap, or a best answer below the floor, makes no pair
    assert (
        build_pairs([fork_tree(f_rewards=(0.95,))], {"w0": s}, PairsConfig(level="response"), iteration=1)[0]
        == []
    )
    low = fork_tree(c_rewards=(0.4,), f_rewards=(0.1,))
    assert build_pairs([low], {"w0": s}, PairsConfig(level="response", q_floor=0.5), iteration=1)[0] == []


# -- how a trainer renders a pair --------------------------------------------------------------------------
class ChatMLTokenizer:
    name_or_path = "fake-chatml"
    eos_token = "<|im_end|>"
    all_special_tokens = ["<|im_start|>", "<|im_end|>"]

    def apply_chat_template(self, chat, tokenize=False, add_generation_prompt=False):
        text = "".join(f"<|im_start|>{m['role']}\n{m['content']}<|im_end|>\n" for m in chat)
        return text + ("<|im_start|>assistant\n" if add_generation_prompt else "")


def test_pair_texts_continue_the_partial_answer_instead_of_closing_it():
    pair = only(step_pairs(fork_tree(), sample(), PairsConfig(), iteration=1))
    texts = pair_texts(pair, ChatMLTokenizer())
    assert texts["prompt"].endswith(
        "Weather in Paris, in celsius?<|im_end|>\n<|im_start|>assistant\n" + PREFIX
    )
    assert texts["chosen"] == C_STEP + "<|im_end|>" and texts["rejected"] == F_STEP + "<|im_end|>"
