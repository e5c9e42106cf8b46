"""Preference pairs from searched trees (step level) and from mined deficiencies (ground truth).

Every pair is TRL's conversational preference format plus metadata (DESIGN §3)::

    {"prompt":   [*sample.messages, {"role": "assistant", "content": PREFIX}],
     "chosen":   [{"role": "assistant", "content": CHOSEN}],
     "rejected": [{"role": "assistant", "content": REJECTED}],
     "tools":    sample.tools,
     "meta":     {sample_id, iteration, depth, q_chosen, q_rejected, origin, prefix, reward_chosen, reward_rejected}}

The last prompt message is ALWAYS a partial assistant answer (PREFIX, "" for ground-truth pairs and for
pairs that diverge at the first step). A chat template would close that turn, so the trainer must not
render it as a message; it renders (``pair_texts`` does exactly this)::

    prompt text   = render_prompt(tokenizer, tools, prompt[:-1]) + meta["prefix"]
    chosen text   = CHOSEN + end_of_turn(tokenizer)        (same for rejected)

so PREFIX + CHOSEN is a complete answer and the losses see only the diverging continuations.

Step-level pairs: at every node with two or more children, the best child by Q against the worst, kept
when the Q gap >= ``q_gap``, the two steps differ (ignoring whitespace), and the chosen Q >= ``q_floor``.
Each side is its child's step continued by the best complete rollout under that child. A pair is also
dropped when the rejected side's rollout scored at least as well as the chosen side's: the text pair
would then teach the model to avoid an answer that is not worse, and when the chosen side's answer scores
below ``min_chosen_reward`` (1.0 = only exact answers are ever chosen: with an SFT term on the chosen side,
a partly right answer would be taught as it is). ``depth`` = steps in the shared prefix.

Ground-truth pairs: the ground-truth answer against the policy's answer found deficient by mining, with
an empty prefix (depth 0); skipped when the policy answer is in fact right (reward 1.0) or identical, and
with ``ground_truth_same_calls`` when it has another number of calls than the ground truth.

With ``value_errors_only``, a pair is kept only when its two complete answers call the same functions with
the same argument names (they differ in values alone); a rejected answer that does not parse is dropped too.
``keep_abstain_pairs`` keeps, besides those, the pairs whose chosen answer calls nothing and whose rejected
answer calls a tool: what an irrelevant request teaches (not to call), which no value-error pair can.

Caps: at most ``max_per_sample`` pairs per sample and ``max_per_iteration`` in all, preferring the
largest Q gaps (ground-truth pairs rank by 1 - reward of the deficient answer); exact duplicates (same
prompt, chosen, rejected and tools) are kept once. Then at most ``max_abstain_share`` of the pairs left
are "no call against a call", again the largest gaps kept.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass
from typing import Any

from itool_ray.config import PairsConfig
from itool_ray.data.schema import Sample
from itool_ray.mcts.search import ScoreFn, default_score
from itool_ray.mcts.tree import DONE, Node, Tree

MCTS, MCTS_RESPONSE, GROUND_TRUTH = "mcts", "mcts_response", "ground_truth"
_EPS = 1e-9  # Q values are means of floats: a gap of exactly q_gap must not fall short by rounding


@dataclass
class PairStats:
    trees: int = 0
    trees_skipped: int = 0  # failed trees yield no pairs
    sibling_sets: int = 0  # nodes with >= 2 children
    no_rollout: int = 0  # fewer than two children with a complete rollout
    small_gap: int = 0
    same_step: int = 0
    below_floor: int = 0
    rollout_not_worse: int = 0
    chosen_not_good: int = 0  # the chosen side's answer scored below min_chosen_reward
    gt_candidates: int = 0
    gt_not_deficient: int = 0  # the policy answer was right (or the ground truth itself)
    gt_call_count: int = 0  # dropped by ground_truth_same_calls: another number of calls than the truth
    not_value_error: int = 0  # dropped by value_errors_only: the answers differ in calls or argument names
    abstain: int = 0  # kept by keep_abstain_pairs: no call (chosen) against a spurious call (rejected)
    duplicates: int = 0
    over_sample_cap: int = 0
    over_iteration_cap: int = 0
    over_abstain_cap: int = 0  # abstain pairs beyond max_abstain_share of the iteration's pairs
    mcts_pairs: int = 0
    ground_truth_pairs: int = 0

    def to_dict(self) -> dict[str, int]:
        return asdict(self)


def _pair(
    sample: Sample,
    prefix: str,
    chosen: str,
    rejected: str,
    *,
    iteration: int,
    depth: int,
    q_chosen: float,
    q_rejected: float,
    reward_chosen: float,
    reward_rejected: float,
    origin: str,
) -> dict[str, Any]:
    return {
        "prompt": [*(dict(m) for m in sample.messages), {"role": "assistant", "content": prefix}],
        "chosen": [{"role": "assistant", "content": chosen}],
        "rejected": [{"role": "assistant", "content": rejected}],
        "tools": sample.tools,
        "meta": {
            "sample_id": sample.id,
            "iteration": iteration,
            "depth": depth,
            "q_chosen": q_chosen,
            "q_rejected": q_rejected,
            "origin": origin,
            "prefix": prefix,
            "reward_chosen": reward_chosen,
            "reward_rejected": reward_rejected,
        },
    }


def _same_step(a: str, b: str) -> bool:
    return a.split() == b.split()


def step_pairs(
    tree: Tree, sample: Sample, cfg: PairsConfig, *, iteration: int, stats: PairStats | None = None
) -> list[dict[str, Any]]:
    """All step-level pairs of one tree that pass the gap, step and floor rules (no caps, no dedup)."""
    stats = stats if stats is not None else PairStats()
    if tree.sample_id != sample.id:
        raise ValueError(f"tree of sample {tree.sample_id!r} paired with sample {sample.id!r}")
    out = []
    for node in tree.nodes:
        kids = tree.children(node)
        if len(kids) < 2:
            continue
        stats.sibling_sets += 1
        kids = [c for c in kids if c.best_rollout is not None and c.visits > 0]
        if len(kids) < 2:
            stats.no_rollout += 1
            continue
        best: Node = max(kids, key=lambda c: c.value)  # ties: the earlier child
        worst: Node = min(reversed(kids), key=lambda c: c.value)  # ties: the later child
        if best is worst or best.value - worst.value < cfg.q_gap - _EPS:
            stats.small_gap += 1
            continue
        if _same_step(best.step, worst.step):
            stats.same_step += 1
            continue
        if best.value < cfg.q_floor - _EPS:
            stats.below_floor += 1
            continue
        if worst.best_reward >= best.best_reward:
            stats.rollout_not_worse += 1
            continue
        if best.best_reward < cfg.min_chosen_reward - _EPS:
            stats.chosen_not_good += 1
            continue
        prefix = tree.prefix(node)
        out.append(
            _pair(
                sample,
                prefix,
                best.best_rollout[len(prefix) :],
                worst.best_rollout[len(prefix) :],
                iteration=iteration,
                depth=node.depth,
                q_chosen=best.value,
                q_rejected=worst.value,
                reward_chosen=best.best_reward,
                reward_rejected=worst.best_reward,
                origin=MCTS,
            )
        )
    return out


def response_pairs(
    tree: Tree, sample: Sample, cfg: PairsConfig, *, iteration: int, stats: PairStats | None = None
) -> list[dict[str, Any]]:
    """The response-level pair of one tree (``pairs.level: response``): the best complete answer the search
    found against the worst of those the tree kept (every node keeps the best answer through it), whole
    answers with no shared prefix (depth 0), under the same gap, floor and chosen-reward rules as step
    pairs; the Q of each side is its reward. At most one pair per tree."""
    stats = stats if stats is not None else PairStats()
    if tree.sample_id != sample.id:
        raise ValueError(f"tree of sample {tree.sample_id!r} paired with sample {sample.id!r}")
    answers: dict[str, float] = {}
    for node in tree.nodes:
        if node.best_rollout is not None:
            answers.setdefault(node.best_rollout, node.best_reward)
    if len(answers) < 2:
        stats.no_rollout += 1
        return []
    ranked = sorted(answers.items(), key=lambda kv: -kv[1])  # stable: first-seen order breaks ties
    (chosen, r_chosen), (rejected, r_rejected) = ranked[0], ranked[-1]
    if r_chosen - r_rejected < max(cfg.q_gap, _EPS) - _EPS:
        stats.small_gap += 1
        return []
    if _same_step(chosen, rejected):
        stats.same_step += 1
        return []
    if r_chosen < max(cfg.q_floor, cfg.min_chosen_reward) - _EPS:
        stats.chosen_not_good += 1
        return []
    return [_whole_answer_pair(sample, chosen, rejected, r_chosen, r_rejected, iteration, MCTS_RESPONSE)]


def _whole_answer_pair(
    sample: Sample,
    chosen: str,
    rejected: str,
    r_chosen: float,
    r_rejected: float,
    iteration: int,
    origin: str,
) -> dict[str, Any]:
    """Two complete answers, no shared prefix (depth 0); each side's Q is its reward."""
    return _pair(
        sample,
        "",
        chosen,
        rejected,
        iteration=iteration,
        depth=0,
        q_chosen=r_chosen,
        q_rejected=r_rejected,
        reward_chosen=r_chosen,
        reward_rejected=r_rejected,
        origin=origin,
    )


def ground_truth_pair(
    sample: Sample,
    policy_answer: str,
    *,
    iteration: int,
    score: ScoreFn | None = None,
    stats: PairStats | None = None,
    same_calls: bool = False,
) -> dict[str, Any] | None:
    """Ground truth (chosen) vs the policy's deficient answer (rejected), empty prefix; None when the
    policy answer is right after all, or (``same_calls``) when it parses to another number of calls than
    the ground truth has (an answer that does not parse is kept: its fault is the syntax)."""
    from itool_ray.prompts import render_answer

    stats = stats if stats is not None else PairStats()
    score = score or default_score
    stats.gt_candidates += 1
    truth = render_answer(sample.answer)
    q_truth, q_policy = float(score(truth, sample)), float(score(policy_answer, sample))
    if q_policy >= 1.0 or _same_step(truth, policy_answer):
        stats.gt_not_deficient += 1
        return None
    if same_calls:
        shape = _shape(policy_answer, [t["name"] for t in sample.tools])
        if shape is not None and len(shape) != len(sample.answer):
            stats.gt_call_count += 1
            return None
    return _whole_answer_pair(sample, truth, policy_answer, q_truth, q_policy, iteration, GROUND_TRUTH)


def _shape(text: str, tool_names: list[str]) -> list[tuple[str, tuple[str, ...]]] | None:
    """(function, sorted argument names) per call, or None when ``text`` is not a call list."""
    from itool_ray.toolcall import ToolCallParseError, parse

    try:
        calls = parse(text, tool_names=tool_names)
    except ToolCallParseError:
        return None
    return [(c.name, tuple(sorted(c.arguments))) for c in calls]


def differs_in_values_only(pair: dict[str, Any]) -> bool:
    """Both complete answers (prefix + side) parse to the same functions with the same argument names."""
    names = [t["name"] for t in pair["tools"]]
    prefix = pair["meta"]["prefix"]
    chosen = _shape(prefix + pair["chosen"][0]["content"], names)
    return chosen is not None and chosen == _shape(prefix + pair["rejected"][0]["content"], names)


def abstains_against_a_call(pair: dict[str, Any]) -> bool:
    """The chosen complete answer calls nothing; the rejected one calls at least one tool."""
    names = [t["name"] for t in pair["tools"]]
    prefix = pair["meta"]["prefix"]
    rejected = _shape(prefix + pair["rejected"][0]["content"], names)
    return _shape(prefix + pair["chosen"][0]["content"], names) == [] and bool(rejected)


def _key(pair: dict[str, Any]) -> str:
    parts = [pair["prompt"], pair["chosen"], pair["rejected"], pair["tools"]]
    return json.dumps(parts, sort_keys=True, ensure_ascii=False)


def _gap(pair: dict[str, Any]) -> float:
    return pair["meta"]["q_chosen"] - pair["meta"]["q_rejected"]


def _cap_abstain(
    ranked: list[tuple[int, int, dict[str, Any]]], share: float
) -> tuple[list[tuple[int, int, dict[str, Any]]], int]:
    """Keep abstain pairs (no call against a call) to at most ``share`` of all pairs: the largest gaps."""
    abstain = [t for t in ranked if abstains_against_a_call(t[2])]
    others = len(ranked) - len(abstain)
    keep = len(abstain) if share >= 1 else min(len(abstain), int(share * others / (1 - share) + _EPS))
    if keep == len(abstain):
        return ranked, 0
    kept = {id(t[2]) for t in sorted(abstain, key=lambda t: (-_gap(t[2]), t[0], t[1]))[:keep]}
    dropped = {id(t[2]) for t in abstain} - kept
    return [t for t in ranked if id(t[2]) not in dropped], len(dropped)


def build_pairs(
    trees: Iterable[Tree],
    samples: Mapping[str, Sample],
    cfg: PairsConfig,
    *,
    iteration: int,
    deficient: Iterable[tuple[Sample, str]] = (),
    score: ScoreFn | None = None,
) -> tuple[list[dict[str, Any]], PairStats]:
    """Step pairs from every done tree, plus ground-truth pairs from ``deficient`` (sample, policy answer)
    when ``cfg.ground_truth_pairs``; dedup, then the per-sample and per-iteration caps.

    Output order: samples in first-seen order, each sample's pairs by decreasing gap.
    """
    stats = PairStats()
    by_sample: dict[str, list[dict[str, Any]]] = {}
    for tree in trees:
        stats.trees += 1
        if tree.status != DONE:
            stats.trees_skipped += 1
            continue
        if tree.sample_id not in samples:
            raise KeyError(
                f"tree for sample {tree.sample_id!r} has no sample in the given samples (wrong split?)"
            )
        tree_pairs = step_pairs if cfg.level == "step" else response_pairs
        by_sample.setdefault(tree.sample_id, []).extend(
            tree_pairs(tree, samples[tree.sample_id], cfg, iteration=iteration, stats=stats)
        )
    if cfg.ground_truth_pairs:
        for sample, answer in deficient:
            pair = ground_truth_pair(
                sample,
                answer,
                iteration=iteration,
                score=score,
                stats=stats,
                same_calls=cfg.ground_truth_same_calls,
            )
            if pair is not None:
                by_sample.setdefault(sample.id, []).append(pair)

    seen: set[str] = set()
    ranked: list[tuple[int, int, dict[str, Any]]] = []  # (sample order, rank in sample, pair)
    for s_order, pairs in enumerate(by_sample.values()):
        unique = []
        for p in pairs:
            if cfg.value_errors_only and not differs_in_values_only(p):
                if cfg.keep_abstain_pairs and abstains_against_a_call(p):
                    stats.abstain += 1
                else:
                    stats.not_value_error += 1
                    continue
            k = _key(p)
            if k in seen:
                stats.duplicates += 1
                continue
            seen.add(k)
            unique.append(p)
        unique.sort(key=lambda p: (-_gap(p), p["meta"]["depth"]))  # stable: tree order breaks ties
        stats.over_sample_cap += max(0, len(unique) - cfg.max_per_sample)
        ranked.extend((s_order, r, p) for r, p in enumerate(unique[: cfg.max_per_sample]))
    if len(ranked) > cfg.max_per_iteration:
        stats.over_iteration_cap = len(ranked) - cfg.max_per_iteration
        ranked = sorted(ranked, key=lambda t: (-_gap(t[2]), t[0], t[1]))[: cfg.max_per_iteration]
    ranked, stats.over_abstain_cap = _cap_abstain(ranked, cfg.max_abstain_share)
    ranked.sort(key=lambda t: (t[0], t[1]))
    out = [p for _, _, p in ranked]
    stats.mcts_pairs = sum(p["meta"]["origin"] in (MCTS, MCTS_RESPONSE) for p in out)
    stats.ground_truth_pairs = len(out) - stats.mcts_pairs
    return out, stats


def pair_texts(pair: dict[str, Any], tokenizer: Any, *, style: str = "compact") -> dict[str, str]:
    """The plain-text prompt/chosen/rejected a trainer feeds to a preference loss (see module docstring)."""
    from itool_ray.prompts import end_of_turn, render_prompt

    *messages, partial = pair["prompt"]
    if partial.get("role") != "assistant":
        raise ValueError("a pair's prompt must end with the partial assistant answer (role 'assistant')")
    eot = end_of_turn(tokenizer)
    return {
        "prompt": render_prompt(tokenizer, pair["tools"], messages, style=style) + partial["content"],
        "chosen": pair["chosen"][0]["content"] + eot,
        "rejected": pair["rejected"][0]["content"] + eot,
    }
