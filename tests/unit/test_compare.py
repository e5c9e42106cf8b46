"""`itool compare`: variants that may share the base run's prefix, their configs, the table."""

from __future__ import annotations

import pytest

from itool_ray.config import load_config
from itool_ray.driver.compare import (
    CompareError,
    comparison_table,
    load_variants,
    shared_prefix,
    variant_config,
)
from itool_ray.driver.stages import plan


@pytest.fixture()
def cfg(tmp_path):
    return load_config("tiny", ["--run.root", str(tmp_path), "--run.name", "base"])


def test_a_variant_runs_in_the_base_runs_compare_directory_without_controls(cfg, tmp_path):
    v = variant_config(cfg, "no_mcts", {"mcts": {"search": False}, "run": {"iterations": 2}})
    assert v.run.dir == f"{tmp_path}/base/compare/no_mcts"
    assert v.run.controls == [] and v.run.iterations == 2 and v.mcts.search is False
    assert v.data == cfg.data and v.warmup == cfg.warmup and v.eval == cfg.eval and v.run.seed == cfg.run.seed


@pytest.mark.parametrize(
    "over",
    [
        {"mining": {"temperature": 0.5}},
        {"data": {"n_train": 10}},
        {"warmup": {"lr": 1e-3}},
        {"run": {"seed": 3}},
    ],
)
def test_a_variant_that_changes_the_shared_prefix_is_refused_naming_it(cfg, over):
    section = next(iter(over))
    with pytest.raises(CompareError, match=f"changes {section}, which the shared prefix"):
        variant_config(cfg, "bad", over)


@pytest.mark.parametrize(
    ("over", "last_shared"),
    [
        ({"pairs": {"level": "response"}}, "iter_1/search"),
        ({"train": {"lr": 1e-6}, "run": {"iterations": 2}}, "iter_1/search"),
        ({"mcts": {"search": False}}, "iter_1/mine"),
        ({"replicas": {"num_replicas": 2}, "pairs": {"q_gap": 0.2}}, "iter_1/mine"),
    ],
)
def test_a_variant_shares_the_first_search_only_when_it_leaves_the_search_alone(cfg, over, last_shared):
    names = [e.name for e in plan(cfg)]
    shared = shared_prefix(names, over)
    assert shared == names[: names.index(last_shared) + 1]
    assert shared[:4] == ["data", "model", "eval_base", "warmup"]
    assert shared_prefix(["data", "model", "eval_base"], over) == [
        "data",
        "model",
        "eval_base",
    ]  # no iteration


def test_bad_variant_values_and_names_are_one_line(cfg):
    with pytest.raises(CompareError, match="variant 'x'.*pairs.level"):
        variant_config(cfg, "x", {"pairs": {"level": "sentence"}})
    with pytest.raises(CompareError, match="variant name 'a/b'"):
        variant_config(cfg, "a/b", {})


def test_variants_come_from_a_file_or_are_the_default_ablations(tmp_path):
    assert set(load_variants(None)) == {"no_mcts", "response_level"}
    f = tmp_path / "v.yaml"
    f.write_text("beta_high:\n  train: {beta: 0.5}\n")
    assert load_variants(str(f)) == {"beta_high": {"train": {"beta": 0.5}}}
    f.write_text("- not a mapping\n")
    with pytest.raises(CompareError, match="expected a mapping"):
        load_variants(str(f))
    with pytest.raises(CompareError, match="variants file .*missing.yaml"):
        load_variants(str(tmp_path / "missing.yaml"))


def test_the_table_shows_accuracy_and_both_paired_differences():
    iv = {"diff": 0.05, "lo": 0.01, "hi": 0.09, "n": 150, "detectable": 0.04}
    out = {
        "rows": {
            "warmup": {
                "heldout": {"accuracy": 0.3, "vs full": {**iv, "diff": -0.05, "lo": -0.09, "hi": -0.01}}
            },
            "full": {"heldout": {"accuracy": 0.35, "vs warmup": iv}},
            "no_mcts": {
                "heldout": {"accuracy": 0.33, "vs full": {**iv, "diff": -0.02, "lo": -0.06, "hi": 0.02}}
            },
        }
    }
    table = comparison_table(out)
    assert "| full | 35.0% | – | +5.0 [+1.0, +9.0]* |" in table
    assert "| no_mcts | 33.0% | -2.0 [-6.0, +2.0] | – |" in table
