"""Step-level MCTS over partial answers with the policy, and preference pairs from the trees.

from itool_ray.mcts import SearchTask, run_search, build_pairs
result = run_search(tasks, engine, cfg.mcts)              # tree.py: nodes, PUCT; search.py: the loop
pairs, stats = build_pairs(result.trees, samples_by_id, cfg.pairs, iteration=k, deficient=...)
"""

from itool_ray.mcts.pairs import PairStats, build_pairs, ground_truth_pair, pair_texts, step_pairs
from itool_ray.mcts.search import (
    GenerateFn,
    SearchFailedError,
    SearchResult,
    SearchStats,
    SearchTask,
    as_generate_fn,
    run_search,
)
from itool_ray.mcts.tree import Node, Tree

__all__ = [
    "GenerateFn",
    "Node",
    "PairStats",
    "SearchFailedError",
    "SearchResult",
    "SearchStats",
    "SearchTask",
    "Tree",
    "as_generate_fn",
    "build_pairs",
    "ground_truth_pair",
    "pair_texts",
    "run_search",
    "step_pairs",
]
