"""Training order: epochs, padding to whole global batches, and length grouping."""

from __future__ import annotations

import random
from collections import Counter

from itool_ray.train.common import LENGTH_WINDOW_BATCHES, schedule_rows


def rows(n: int, seed: int = 0) -> list[dict]:
    rng = random.Random(seed)
    return [{"id": i, "input_ids": [0] * rng.randint(20, 300)} for i in range(n)]


def length(row: dict) -> int:
    return len(row["input_ids"])


def padded_tokens(order: list[dict], batch: int) -> int:
    return sum(batch * max(map(length, order[i : i + batch])) for i in range(0, len(order), batch))


def test_epochs_and_padding_to_whole_batches():
    data = rows(21)
    order = schedule_rows(data, epochs=2, seed=1, multiple=8)
    assert len(order) == 48
    counts = Counter(r["id"] for r in order)
    assert all(counts[r["id"]] >= 2 for r in data)


def test_length_grouping_keeps_the_rows_and_cuts_padding():
    data = rows(400)
    plain = schedule_rows(data, epochs=1, seed=3, multiple=8)
    grouped = schedule_rows(data, epochs=1, seed=3, multiple=8, length=length)
    assert sorted(r["id"] for r in grouped) == sorted(r["id"] for r in plain)
    assert padded_tokens(grouped, 8) < 0.8 * padded_tokens(plain, 8)
    # Still random at the scale of a window: the batches of a window are not in length order.
    window = 8 * LENGTH_WINDOW_BATCHES
    firsts = [max(map(length, grouped[i : i + 8])) for i in range(0, window, 8)]
    assert firsts != sorted(firsts)
    # Rows only move within their window of the shuffled order.
    for start in range(0, len(plain), window):
        assert {r["id"] for r in grouped[start : start + window]} == {
            r["id"] for r in plain[start : start + window]
        }


def test_length_grouping_is_deterministic_by_seed():
    data = rows(100)
    a = schedule_rows(data, epochs=1.5, seed=5, multiple=4, length=length)
    b = schedule_rows(data, epochs=1.5, seed=5, multiple=4, length=length)
    c = schedule_rows(data, epochs=1.5, seed=6, multiple=4, length=length)
    assert [r["id"] for r in a] == [r["id"] for r in b] != [r["id"] for r in c]
