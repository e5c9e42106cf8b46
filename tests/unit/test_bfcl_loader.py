"""data.bfcl: BFCL question + possible answer -> Sample."""

from __future__ import annotations

import json

import pytest

from itool_ray.data.bfcl import BFCL_CATEGORIES, bfcl_category, from_bfcl
from itool_ray.data.schema import SampleError
from itool_ray.reward import match
from itool_ray.toolcall import format_calls

ENTRY = {
    "id": "simple_python_0",
    "question": [[{"role": "user", "content": "Area of a triangle with base 10 and height 5?"}]],
    "function": [
        {
            "name": "calculate_triangle_area",
            "description": "Area of a triangle.",
            "parameters": {
                "type": "dict",
                "properties": {
                    "base": {"type": "integer"},
                    "height": {"type": "integer"},
                    "unit": {"type": "string"},
                    "extra": {"type": "float"},
                },
                "required": ["base", "height"],
            },
        }
    ],
}
TRUTH = [
    {"calculate_triangle_area": {"base": [10], "height": [5], "unit": ["units", ""], "extra": ["", 1.5]}}
]


def test_from_bfcl_fills_the_sample():
    s = from_bfcl(ENTRY, TRUTH)
    assert s.id == "simple_python_0" and s.category == "simple" and s.source == "bfcl"
    assert s.tools == ENTRY["function"]  # BFCL's type names kept as they are
    assert s.messages == ENTRY["question"][0]
    # first accepted value of each argument; "" first = left out
    assert s.answer == [
        {"name": "calculate_triangle_area", "arguments": {"base": 10, "height": 5, "unit": "units"}}
    ]
    assert s.accepted is not None and s.accepted[0].arguments == TRUTH[0]["calculate_triangle_area"]
    assert match(format_calls(s.calls), s).exact
    assert match("[calculate_triangle_area(base=10, height=5)]", s).exact
    assert match("[calculate_triangle_area(base=10, height=5, extra=1.5)]", s).exact


def test_irrelevance_has_no_answer():
    entry = {**ENTRY, "id": "irrelevance_7"}
    s = from_bfcl(entry, None)
    assert s.category == "irrelevance" and s.answer == [] and s.accepted is None
    assert match("[]", s).exact and not match("[calculate_triangle_area(base=1, height=2)]", s).exact


def test_nested_dict_answers_become_concrete_values():
    entry = {
        "id": "live_multiple_0-0-0",
        "question": [
            [{"role": "system", "content": "be brief"}, {"role": "user", "content": "latte, large"}]
        ],
        "function": [
            {
                "name": "ChaDri.change_drink",
                "parameters": {
                    "type": "dict",
                    "required": ["drink_id"],
                    "properties": {
                        "drink_id": {"type": "string"},
                        "new_preferences": {"type": "dict", "properties": {"size": {"type": "string"}}},
                    },
                },
            }
        ],
    }
    truth = [
        {
            "ChaDri.change_drink": {
                "drink_id": ["latte"],
                "new_preferences": [
                    {"size": ["large"], "milk_type": ["", "coconut"], "temp": ["hot", "warm"]}
                ],
            }
        }
    ]
    s = from_bfcl(entry, truth)
    assert s.category == "live_multiple" and [m["role"] for m in s.messages] == ["system", "user"]
    assert s.answer[0]["arguments"] == {
        "drink_id": "latte",
        "new_preferences": {"size": "large", "temp": "hot"},
    }
    assert match(format_calls(s.calls), s).exact
    assert match(
        '[ChaDri.change_drink(drink_id="latte", new_preferences={"size": "large", "temp": "warm"})]', s
    ).exact


def test_category_from_id():
    assert bfcl_category("simple_python_12") == "simple"
    assert bfcl_category("parallel_multiple_3") == "parallel_multiple"
    assert bfcl_category("live_irrelevance_9-0-1") == "live_irrelevance"
    with pytest.raises(SampleError, match="unsupported BFCL category"):
        bfcl_category("simple_java_1")
    with pytest.raises(SampleError, match="multi-turn"):
        from_bfcl(
            {**ENTRY, "question": [[{"role": "user", "content": "a"}], [{"role": "user", "content": "b"}]]},
            TRUTH,
        )


# -- against the installed bfcl-eval data ------------------------------------------------------------------


@pytest.fixture(scope="module")
def bfcl_dir():
    pytest.importorskip("bfcl_eval")
    from itool_ray.data.bfcl import bfcl_data_dir

    return bfcl_data_dir()


def _first_entries(bfcl_dir, stem: str) -> tuple[dict, list | None]:
    with (bfcl_dir / f"BFCL_v4_{stem}.json").open() as f:
        entry = json.loads(f.readline())
    answers = bfcl_dir / "possible_answer" / f"BFCL_v4_{stem}.json"
    if not answers.exists():
        return entry, None
    with answers.open() as f:
        truth = json.loads(f.readline())
    assert truth["id"] == entry["id"]
    return entry, truth["ground_truth"]


@pytest.mark.bfcl
@pytest.mark.parametrize("category", list(BFCL_CATEGORIES))
def test_real_entries_of_each_category(bfcl_dir, category):
    entry, truth = _first_entries(bfcl_dir, BFCL_CATEGORIES[category])
    s = from_bfcl(entry, truth)
    assert s.category == category
    assert s.tools == entry["function"]
    if "irrelevance" in category:
        assert truth is None and s.answer == []
    else:
        assert len(s.answer) == len(truth) and [c["name"] for c in s.answer] == [next(iter(t)) for t in truth]
        assert match(format_calls(s.calls), s).exact


@pytest.mark.bfcl
def test_load_bfcl_reads_whole_categories(bfcl_dir):
    from itool_ray.data.bfcl import load_bfcl

    samples = load_bfcl(["simple", "irrelevance"])
    assert len(samples) == 400 + 240
    assert {s.category for s in samples} == {"simple", "irrelevance"}
    assert len({s.id for s in samples}) == len(samples)
    assert len(load_bfcl(["simple_python"])) == 400  # BFCL file stems work too
    with pytest.raises(ValueError, match="unknown BFCL category"):
        load_bfcl(["multi_turn_base"])


def test_missing_package_is_a_clear_error(monkeypatch):
    import importlib.util

    from itool_ray.data import bfcl

    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)
    with pytest.raises(ModuleNotFoundError, match="pip install --no-deps bfcl-eval"):
        bfcl.bfcl_data_dir()
