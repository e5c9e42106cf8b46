"""The MCTS tree and the batched search loop, against a scripted fake policy (tests/fakes.py)."""

from __future__ import annotations

import json
import math

import pytest
from fakes import FakeClock, FakePolicy, prompt_for
from tools import weather_tool

from itool_ray.config import MCTSConfig, PairsConfig
from itool_ray.data.schema import Sample
from itool_ray.mcts import SearchFailedError, SearchTask, Tree, build_pairs, run_search
from itool_ray.toolcall import parse

CELSIUS = '[get_weather(city="Paris", unit="celsius")]'
FAHRENHEIT = '[get_weather(city="Paris", unit="fahrenheit")]'
WEATHER_TOOL = weather_tool(required=("city", "unit"), description="Current weather")


def weather_sample(sid: str = "w0") -> Sample:
    return Sample(
        id=sid,
        tools=[WEATHER_TOOL],
        messages=[{"role": "user", "content": "Weather in Paris, in celsius?"}],
        answer=[{"name": "get_weather", "arguments": {"city": "Paris", "unit": "celsius"}}],
    )


def table_score(table: dict[str, float]):
    return lambda text, sample: table.get(text, 0.0)


WEATHER_SCORES = table_score({CELSIUS: 1.0, FAHRENHEIT: 0.5})


def cfg(**kw) -> MCTSConfig:
    base = dict(num_children=3, simulations=8, max_depth=4, max_tokens=96, concurrent_trees=32)
    return MCTSConfig(**{**base, **kw})


def weather_tasks(n: int) -> tuple[list[SearchTask], FakePolicy]:
    tasks = [SearchTask(weather_sample(f"w{i}"), prompt_for(f"conv{i}")) for i in range(n)]
    policy = FakePolicy({f"conv{i}": [(CELSIUS, 0.5), (FAHRENHEIT, 0.5)] for i in range(n)})
    return tasks, policy


def check_consistent(tree: Tree) -> None:
    for node in tree.nodes:
        assert len(tree.prefix(node)) == node.prefix_len
        if node.children:
            assert node.visits >= sum(c.visits for c in tree.children(node))


# -- selection, virtual loss, backup (tree.py) ---------------------------------------------------------
def two_child_tree() -> Tree:
    tree = Tree("t")
    a = tree.add_child(tree.root, "[a(", prior=0.6)
    b = tree.add_child(tree.root, "[b(", prior=0.4)
    for r in (1.0, 0.5, 0.0):
        tree.backup(a, r)
    tree.backup(b, 1.0)
    return tree


def test_puct_matches_hand_computation():
    tree = two_child_tree()
    root, (a, b) = tree.root, tree.children(tree.root)
    # root N = 4: Q_a = 1.5/3, U_a = 0.6·√4/(1+3); Q_b = 1/1, U_b = 0.4·√4/(1+1)
    assert tree.puct(root, a, 1.0, 1.0) == pytest.approx(0.5 + 0.6 * 2 / 4)
    assert tree.puct(root, b, 1.0, 1.0) == pytest.approx(1.0 + 0.4 * 2 / 2)
    assert tree.puct(root, a, 3.0, 1.0) == pytest.approx(0.5 + 3 * 0.6 * 2 / 4)
    assert tree.select(1.0, 1.0) is b


def test_exploration_term_wins_with_large_c_puct():
    tree = Tree("t")
    a = tree.add_child(tree.root, "x", prior=0.9)
    b = tree.add_child(tree.root, "y", prior=0.1)
    for _ in range(4):
        tree.backup(a, 0.2)
    tree.backup(b, 0.6)
    # c = 10: a = 0.2 + 10·0.9·√5/5 = 4.22; b = 0.6 + 10·0.1·√5/2 = 1.72
    assert tree.select(10.0, 1.0) is a
    tree.release(a)
    # c = 0: pure Q
    assert tree.select(0.0, 1.0) is b


def test_virtual_loss_spreads_concurrent_selections():
    tree = Tree("t")
    a = tree.add_child(tree.root, "x", prior=0.5)
    b = tree.add_child(tree.root, "y", prior=0.5)
    tree.backup(a, 1.0)
    tree.backup(b, 0.9)
    first = tree.select(1.0, 1.0)
    assert first is a
    # a now counts one extra visit of reward 0: Q_a = 1/2, U_a = 0.5·√3/3 -> b wins
    n_root = 2 + 1
    assert tree.puct(tree.root, a, 1.0, 1.0) == pytest.approx(0.5 + 0.5 * math.sqrt(n_root) / 3)
    assert tree.select(1.0, 1.0) is b
    assert a.pending == b.pending == 1 and tree.root.pending == 2
    tree.release(a)
    tree.release(b)
    assert tree.root.pending == 0


def test_without_virtual_loss_selections_collapse_on_one_leaf():
    tree = Tree("t")
    a = tree.add_child(tree.root, "x", prior=0.5)
    b = tree.add_child(tree.root, "y", prior=0.5)
    tree.backup(a, 1.0)
    tree.backup(b, 0.9)
    assert tree.select(1.0, 0.0) is a
    assert tree.select(1.0, 0.0) is a


def test_leaves_in_flight_are_not_selected_again():
    tree = two_child_tree()
    a, b = tree.children(tree.root)
    b.busy = True
    assert tree.select(1.0, 1.0) is a
    a.busy = True
    assert tree.select(1.0, 1.0) is None


def test_backup_adds_reward_along_the_path_and_keeps_best_complete_rollout():
    tree = Tree("t")
    a = tree.add_child(tree.root, "[f(")
    leaf = tree.add_child(a, "x=1)]")
    tree.backup(leaf, 0.5, "[f(x=1)]")
    tree.backup(leaf, 1.0, None)  # cut by the token budget: counts, but is no best rollout
    tree.backup(a, 0.0, "[f(x=2)]")
    assert (leaf.visits, leaf.value) == (2, 0.75)
    assert (a.visits, a.value) == (3, 0.5)
    assert (tree.root.visits, tree.root.value) == (3, 0.5)
    assert (a.best_rollout, a.best_reward) == ("[f(x=1)]", 0.5)
    assert leaf.best_rollout == "[f(x=1)]"


# -- the search loop (search.py) -------------------------------------------------------------------------
@pytest.mark.parametrize("config", [cfg(), MCTSConfig()], ids=["depth4", "defaults"])
def test_search_finds_the_right_argument_value_and_a_pair_prefers_it(config):
    """Only unit="celsius" is right; the fake policy says celsius/fahrenheit 50/50. Real reward.

    Steps: '[get_weather(' | 'city="Paris",' | ' unit="celsius"' | ')]'; with the default depth cap of 3
    the unit steps are depth-cap leaves, scored by rollouts."""
    sample = weather_sample()
    policy = FakePolicy({"conv": [(CELSIUS, 0.5), (FAHRENHEIT, 0.5)]})
    result = run_search([SearchTask(sample, prompt_for("conv"))], policy.route, config)
    (tree,) = result.trees
    assert tree.status == "done" and result.stats.trees_done == 1
    check_consistent(tree)
    assert tree.root.best_rollout == CELSIUS and tree.root.best_reward == 1.0
    # the node where the two units diverge: celsius child has the higher Q
    fork = next(n for n in tree.nodes if len(n.children) >= 2)
    by_q = sorted(tree.children(fork), key=lambda c: c.value)
    assert "celsius" in by_q[-1].step and "fahrenheit" in by_q[0].step
    assert by_q[-1].value == 1.0 > by_q[0].value

    pairs, stats = build_pairs(result.trees, {sample.id: sample}, PairsConfig(), iteration=1)
    mcts = [p for p in pairs if p["meta"]["origin"] == "mcts"]
    assert len(mcts) == 1, stats
    (pair,) = mcts
    prefix, chosen, rejected = (
        pair["meta"]["prefix"],
        pair["chosen"][0]["content"],
        pair["rejected"][0]["content"],
    )
    assert pair["prompt"][-1] == {"role": "assistant", "content": prefix}
    assert prefix == tree.prefix(fork) and "unit" not in prefix
    assert prefix + chosen == CELSIUS and prefix + rejected == FAHRENHEIT
    assert parse(prefix + chosen)[0].arguments == {"city": "Paris", "unit": "celsius"}
    assert pair["meta"]["q_chosen"] - pair["meta"]["q_rejected"] >= 0.1


def test_a_no_call_answer_is_found_for_an_irrelevant_request():
    sample = Sample(
        id="irr",
        tools=[WEATHER_TOOL],
        messages=[{"role": "user", "content": "Tell me a joke."}],
        answer=[],
    )
    policy = FakePolicy({"conv": [("[]", 0.5), ('[get_weather(city="Paris")]', 0.5)]})
    result = run_search([SearchTask(sample, prompt_for("conv"))], policy.route, cfg())
    tree = result.trees[0]
    kids = {c.step: c for c in tree.children(tree.root)}
    assert kids["[]"].terminal and kids["[]"].reward == 1.0 and kids["[]"].value == 1.0
    assert kids["[get_weather("].value == 0.0
    pair = build_pairs(result.trees, {"irr": sample}, PairsConfig(), iteration=1)[0][0]
    assert pair["meta"]["prefix"] == "" and pair["chosen"][0]["content"] == "[]"
    assert pair["rejected"][0]["content"] == '[get_weather(city="Paris")]'


def test_identical_steps_merge_and_priors_are_normalised_geometric_means():
    sample = weather_sample()
    answers = [('[get_time(tz="CET")]', 0.2), (CELSIUS, 0.8)]
    policy = FakePolicy({"conv": answers})
    result = run_search(
        [SearchTask(sample, prompt_for("conv"))],
        policy.route,
        cfg(num_children=4, simulations=1),
        score=WEATHER_SCORES,
    )
    tree = result.trees[0]
    kids = {c.step: c for c in tree.children(tree.root)}
    assert set(kids) == {"[get_time(", "[get_weather("}
    # stratified quantiles 1/8, 3/8, 5/8, 7/8 -> one get_time, three get_weather
    assert kids["[get_time("].count == 1 and kids["[get_weather("].count == 3
    # char-level step probability: only the character after "[g" is uncertain (0.2 vs 0.8 mass)
    p_time = math.exp(math.log(0.2) / len("[get_time("))
    p_weather = math.exp(math.log(0.8) / len("[get_weather("))
    assert kids["[get_time("].prior == pytest.approx(p_time / (p_time + p_weather))
    assert kids["[get_weather("].prior == pytest.approx(p_weather / (p_time + p_weather))
    # rollout reuse: every sampled continuation is one rollout of the child it created
    assert kids["[get_weather("].visits == 3 and kids["[get_time("].visits == 1
    assert kids["[get_weather("].value == 1.0 and kids["[get_weather("].best_rollout == CELSIUS
    assert tree.root.visits == 4 and result.stats.requests == 1


def test_terminal_nodes_are_scored_directly_without_the_engine():
    sample = weather_sample()
    policy = FakePolicy({"conv": [(CELSIUS, 1.0)]})
    result = run_search(
        [SearchTask(sample, prompt_for("conv"))], policy, cfg(simulations=12), score=WEATHER_SCORES
    )
    tree = result.trees[0]
    check_consistent(tree)
    terminals = [n for n in tree.nodes if n.terminal]
    assert len(terminals) == 1 and terminals[0].reward == 1.0 and not terminals[0].children
    assert tree.prefix(terminals[0]) == CELSIUS
    # one request per expanded node; the other simulations re-scored the terminal leaf
    assert result.stats.requests == sum(n.expanded for n in tree.nodes) < 12
    assert result.stats.simulations == tree.simulations == 12
    assert terminals[0].visits > terminals[0].count


def test_simulation_budget_limits_selected_leaves():
    tasks, policy = weather_tasks(1)
    result = run_search(tasks, policy.route, cfg(simulations=2), score=WEATHER_SCORES)
    tree = result.trees[0]
    assert tree.simulations == 2 and result.stats.requests == 2
    assert sum(n.expanded for n in tree.nodes) == 2


def test_depth_cap_leaves_are_rolled_out_not_expanded():
    tasks, policy = weather_tasks(1)
    result = run_search(tasks, policy.route, cfg(max_depth=1, simulations=4), score=WEATHER_SCORES)
    tree = result.trees[0]
    assert max(n.depth for n in tree.nodes) == 1
    requests = [r for call in policy.calls for r in call]
    assert requests[0].n == 3 and requests[0].logprobs
    assert [r.n for r in requests[1:]] == [1, 1, 1]  # rollouts of the depth-1 leaf
    assert tree.root.visits == 3 + 3


def test_token_budget_caps_every_request_and_truncated_answers_are_no_best_rollout():
    tasks, policy = weather_tasks(1)
    # "[get_weather(" is 13 characters = 13 fake tokens; 20 leaves 7 for the rest, too few for a step
    result = run_search(tasks, policy.route, cfg(max_tokens=20, simulations=4), score=WEATHER_SCORES)
    tree = result.trees[0]
    requests = [r for call in policy.calls for r in call]
    assert requests[0].max_tokens == 20 and requests[1].max_tokens == 7
    assert all(len(n.step) <= 20 for n in tree.nodes)
    assert tree.root.best_rollout is None  # nothing finished within 20 tokens
    assert all(n.prefix_tokens <= 20 for n in tree.nodes)
    assert tree.status == "done"


def test_timeout_fails_the_tree_after_one_retry():
    clock = FakeClock()
    tasks, _ = weather_tasks(1)
    policy = FakePolicy({"conv0": [(CELSIUS, 1.0)]}, clock=clock, seconds_per_call=100)
    result = run_search(
        tasks,
        policy.route,
        cfg(tree_timeout_s=50, max_failed_fraction=1.0),
        score=WEATHER_SCORES,
        clock=clock,
    )
    (tree,) = result.trees
    assert tree.status == "failed" and tree.attempts == 2
    assert "attempt 1: timed out" in tree.error and "attempt 2: timed out" in tree.error
    assert (result.stats.trees_failed, result.stats.trees_retried, result.stats.trees_done) == (1, 1, 0)


def test_engine_error_is_retried_once_then_succeeds():
    tasks, policy = weather_tasks(2)
    policy.raise_on_calls = lambda i: i == 0
    result = run_search(tasks, policy.route, cfg(simulations=3), score=WEATHER_SCORES)
    assert [t.status for t in result.trees] == ["done", "done"]
    assert [t.attempts for t in result.trees] == [2, 2]
    assert all("attempt 1: engine error" in t.error for t in result.trees)
    assert (result.stats.trees_retried, result.stats.trees_failed) == (2, 0)
    assert policy.keys[1] == ["w0/2", "w1/2"]  # a retry gets a new routing key (another replica)


def test_a_tree_whose_replica_keeps_failing_is_counted_failed_not_dropped():
    tasks, policy = weather_tasks(3)
    policy.fail_key = lambda key: key.startswith("w1/")
    seen = []
    result = run_search(
        tasks, policy.route, cfg(max_failed_fraction=0.5), score=WEATHER_SCORES, progress=seen.append
    )
    assert [t.sample_id for t in result.trees] == ["w0", "w1", "w2"]
    assert [t.status for t in result.trees] == ["done", "failed", "done"]
    assert result.trees[1].error.count("engine error") == 2
    assert (result.stats.trees_done, result.stats.trees_failed, result.stats.trees_retried) == (2, 1, 1)
    assert sorted(t.sample_id for t in seen) == ["w0", "w1", "w2"]  # progress once per final tree


def test_failures_above_the_threshold_raise():
    tasks, policy = weather_tasks(4)
    policy.raise_on_calls = lambda i: True
    with pytest.raises(
        SearchFailedError, match=r"trees failed after a retry.*max_failed_fraction=0.1"
    ) as info:
        run_search(tasks, policy.route, cfg(max_failed_fraction=0.1), score=WEATHER_SCORES)
    assert info.value.stats.trees_failed == 1 and info.value.trees[0].status == "failed"


def test_errors_that_are_not_engine_errors_propagate():
    tasks, policy = weather_tasks(1)
    policy.raise_on_calls = lambda i: True
    policy.error = ValueError("a bug")
    with pytest.raises(ValueError, match="a bug"):
        run_search(tasks, policy.route, cfg(), score=WEATHER_SCORES)


def test_one_engine_call_per_wave_whatever_the_number_of_trees():
    for n_trees in (1, 7):
        tasks, policy = weather_tasks(n_trees)
        result = run_search(tasks, policy.route, cfg(), score=WEATHER_SCORES)
        assert all(t.status == "done" for t in result.trees)
        assert result.stats.engine_calls == len(policy.calls) <= result.stats.waves
        assert len(policy.calls[0]) == n_trees  # every tree's root expansion in the first call
        assert all(r.n == 3 for r in policy.calls[0])
        assert result.stats.requests == sum(len(c) for c in policy.calls)
        assert result.stats.generated_tokens == policy.tokens > 0


def test_concurrent_trees_are_capped_and_refilled_from_the_queue():
    tasks, policy = weather_tasks(5)
    result = run_search(tasks, policy.route, cfg(concurrent_trees=2, simulations=3), score=WEATHER_SCORES)
    assert [t.sample_id for t in result.trees] == [f"w{i}" for i in range(5)]
    assert all(t.status == "done" for t in result.trees)
    assert max(len({k.split("/")[0] for k in keys}) for keys in policy.keys) == 2
    assert {k.split("/")[0] for keys in policy.keys for k in keys} == {f"w{i}" for i in range(5)}


def test_several_leaves_per_tree_go_in_one_wave():
    tasks, policy = weather_tasks(1)
    result = run_search(tasks, policy.route, cfg(leaves_per_tree=3, simulations=9), score=WEATHER_SCORES)
    assert max(len(keys) for keys in policy.keys) > 1
    assert result.stats.engine_calls < result.stats.simulations
    check_consistent(result.trees[0])


def test_an_engine_object_works_without_routing_keys():
    tasks, policy = weather_tasks(2)
    result = run_search(tasks, policy, cfg(simulations=2), score=WEATHER_SCORES)
    assert all(t.status == "done" for t in result.trees)
    assert policy.keys[0] == ["", ""]  # an Engine gets no routing keys

    class LocalEngine:
        def generate(self, requests):
            return policy.generate(requests)

    result = run_search(tasks, LocalEngine(), cfg(simulations=2), score=WEATHER_SCORES)
    assert all(t.status == "done" for t in result.trees)


def test_duplicate_sample_ids_are_rejected():
    tasks, policy = weather_tasks(1)
    with pytest.raises(ValueError, match="'w0' appears more than once"):
        run_search(tasks + tasks, policy.route, cfg(), score=WEATHER_SCORES)


# -- serialisation ---------------------------------------------------------------------------------------
def test_trees_round_trip_through_json_lines():
    tasks, policy = weather_tasks(1)
    result = run_search(tasks, policy.route, cfg(), score=WEATHER_SCORES)
    tree = result.trees[0]
    line = json.dumps(tree.to_dict())
    assert "\n" not in line
    loaded = Tree.from_dict(json.loads(line))
    assert loaded.to_dict() == json.loads(line)
    for a, b in zip(tree.nodes, loaded.nodes, strict=True):
        assert (a.children, tree.prefix(a)) == (b.children, loaded.prefix(b))
        assert a.value == pytest.approx(b.value)
    samples = {t.sample.id: t.sample for t in tasks}
    pcfg = PairsConfig(q_floor=0.0)
    assert (
        build_pairs([loaded], samples, pcfg, iteration=2)[0]
        == build_pairs([tree], samples, pcfg, iteration=2)[0]
    )


def test_malformed_tree_records_name_the_sample():
    with pytest.raises(ValueError, match="sample 'x'.*malformed"):
        Tree.from_dict({"sample_id": "x", "status": "done", "nodes": [{"id": 0}]})


def test_work_progress_moves_every_wave_and_ends_at_the_total():
    tasks, policy = weather_tasks(3)
    reports, finished = [], []
    run_search(
        tasks,
        policy.route,
        cfg(simulations=4),
        score=WEATHER_SCORES,
        progress=lambda tree: finished.append(len(reports)),
        on_work=lambda done, total: reports.append((done, total)),
    )
    assert {total for _, total in reports} == {3 * 4}
    done = [d for d, _ in reports]
    assert done == sorted(done) and done[-1] == 12
    assert 0 < done[0] < 12  # the first wave already shows progress, before any tree has finished
    assert finished[0] >= 1  # ... which the per-tree count alone would not


def test_work_progress_never_moves_back_when_a_failed_attempt_restarts():
    tasks, policy = weather_tasks(2)
    policy.raise_on_calls = lambda i: i == 1  # the second wave fails both trees' first attempt
    reports = []
    result = run_search(
        tasks, policy.route, cfg(simulations=3), score=WEATHER_SCORES, on_work=lambda d, t: reports.append(d)
    )
    assert result.stats.trees_retried == 2
    assert reports == sorted(reports) and reports[-1] == 6
