"""Paired bootstrap intervals: exact on the degenerate cases, calibrated on simulated evaluations."""

from __future__ import annotations

import numpy as np
import pytest

from itool_ray.eval.stats import StatsError, compare_records, paired_interval


def test_identical_evaluations_differ_by_exactly_zero():
    a = [1, 0, 1, 1, 0] * 20
    iv = paired_interval(a, a)
    assert (iv.diff, iv.lo, iv.hi, iv.n) == (0.0, 0.0, 0.0, 100)
    assert not iv.significant


def test_all_wrong_to_all_right_is_plus_one_hundred_points():
    iv = paired_interval([0] * 30, [1] * 30)
    assert (iv.diff, iv.lo, iv.hi) == (1.0, 1.0, 1.0)
    assert iv.significant
    assert str(iv) == "+100.0 [+100.0, +100.0]"


def test_ten_gained_two_lost_of_150_is_told_from_noise():
    a = np.zeros(150)
    b = np.zeros(150)
    b[:10] = 1  # gained
    a[10:12] = 1  # lost
    iv = paired_interval(a, b)
    assert iv.diff == pytest.approx(8 / 150)
    assert iv.lo > 0, iv
    d = b - a
    half = 1.96 * d.std(ddof=1) / np.sqrt(150)
    assert (iv.hi - iv.lo) / 2 == pytest.approx(half, rel=0.2)
    assert iv.detectable == pytest.approx(2.8 * d.std(ddof=1) / np.sqrt(150), rel=0.01)


def test_pairing_is_what_makes_the_interval_narrow():
    """Two stages that agree on most samples: the paired interval is far tighter than the unpaired one."""
    rng = np.random.default_rng(1)
    a = (rng.random(400) < 0.4).astype(float)
    b = a.copy()
    flip = rng.choice(400, size=20, replace=False)
    b[flip[:15]] = 1
    b[flip[15:]] = 0
    iv = paired_interval(a, b)
    unpaired_half = 1.96 * np.sqrt(a.var() / 400 + b.var() / 400)
    assert (iv.hi - iv.lo) / 2 < unpaired_half / 2


def test_intervals_cover_the_true_difference_about_95_percent_of_the_time():
    """Simulated paired evaluations with a true gain of 5 points: the 95% interval covers it in 90–99% of
    200 repetitions (a broken interval, e.g. unpaired or of the wrong width, falls outside)."""
    rng = np.random.default_rng(7)
    n, covered = 300, 0
    for rep in range(200):
        a = (rng.random(n) < 0.40).astype(float)
        # b keeps a's answer except: it gains 7 points' worth of a's wrong answers and loses 2 points' worth
        # of its right ones, so the true difference is +5 points.
        gain = (a == 0) & (rng.random(n) < 0.07 / 0.6)
        lose = (a == 1) & (rng.random(n) < 0.02 / 0.4)
        b = np.where(gain, 1.0, np.where(lose, 0.0, a))
        iv = paired_interval(a, b, n_boot=1000, seed=rep)
        covered += iv.lo <= 0.05 <= iv.hi
    assert 0.90 <= covered / 200 <= 0.99, covered


def test_same_seed_same_interval():
    rng = np.random.default_rng(3)
    a, b = rng.integers(0, 2, 120), rng.integers(0, 2, 120)
    assert paired_interval(a, b, seed=5) == paired_interval(a, b, seed=5)


def _records(correct: dict[str, int], category: dict[str, str]) -> list[dict]:
    return [{"id": i, "category": category[i], "exact": bool(c)} for i, c in correct.items()]


def test_records_pair_by_sample_id_whatever_their_order_and_split_by_category():
    cat = {"s1": "simple", "s2": "simple", "p1": "parallel", "p2": "parallel"}
    a = _records({"s1": 0, "s2": 0, "p1": 1, "p2": 1}, cat)
    b = list(reversed(_records({"s1": 1, "s2": 1, "p1": 1, "p2": 1}, cat)))
    out = compare_records(a, b)
    assert set(out) == {"overall", "simple", "parallel"}
    assert out["overall"].diff == 0.5 and out["overall"].n == 4
    assert (out["simple"].diff, out["simple"].lo) == (1.0, 1.0)
    assert (out["parallel"].diff, out["parallel"].hi) == (0.0, 0.0)


def test_evaluations_of_different_samples_are_refused():
    cat = {"a": "simple", "b": "simple", "c": "simple"}
    with pytest.raises(StatsError, match="different samples .*1 only in the first.*'c'"):
        compare_records(_records({"a": 1, "b": 0, "c": 1}, cat), _records({"a": 1, "b": 1}, cat))
    with pytest.raises(StatsError, match="appears twice"):
        compare_records(_records({"a": 1}, cat) * 2, _records({"a": 1}, cat))
    with pytest.raises(StatsError, match="no paired samples"):
        paired_interval([], [])
