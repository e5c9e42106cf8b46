"""The procedural tool catalogue: many domains, split by domain, deterministic, and samples that check."""

from __future__ import annotations

import re

import pytest

from itool_ray.data.loaders import load_samples
from itool_ray.data.synth import catalogue_tools, generate
from itool_ray.data.synth_procedural import PROCEDURAL_DOMAINS, PROCEDURAL_TOOLS, procedural_templates
from itool_ray.data.synth_tools import DOMAINS
from itool_ray.reward import match
from itool_ray.toolcall import format_calls, parse


def test_the_catalogue_is_wide_and_split_by_domain():
    assert len(PROCEDURAL_DOMAINS) >= 40 and len(PROCEDURAL_TOOLS) >= 200
    assert not set(PROCEDURAL_DOMAINS) & set(DOMAINS)  # none of the hand-written domains
    by_split = {s: {t.domain for t in PROCEDURAL_TOOLS if t.split == s} for s in ("train", "dev", "heldout")}
    assert len(by_split["dev"]) >= 8 and len(by_split["heldout"]) >= 8
    assert not by_split["train"] & by_split["dev"] and not by_split["train"] & by_split["heldout"]
    assert not by_split["dev"] & by_split["heldout"]
    # both naming styles, and every JSON type the calls need
    names = [t.name for t in PROCEDURAL_TOOLS]
    assert any("_" in n for n in names) and any(re.search(r"[a-z][A-Z]", n) for n in names)
    types = {p.type + ("+enum" if p.enum else "") for t in PROCEDURAL_TOOLS for p in t.params}
    assert {"string", "string+enum", "integer", "number", "boolean"} <= types


def test_each_split_has_its_own_phrasings():
    train, dev, held = (set(procedural_templates(s)) for s in ("train", "dev", "heldout"))
    frames = {
        s: {re.sub(r"\{\w+\}", "", t).split()[0] for t in procedural_templates(s)} for s in ("train", "dev")
    }
    assert train and dev and held and not train & dev and not train & held
    assert not frames["train"] & frames["dev"]  # not even the opening verb is shared


@pytest.mark.parametrize("split", ["train", "dev", "heldout"])
def test_samples_are_deterministic_parse_back_and_score_exact_on_their_own_answers(split):
    a = generate(120, seed=5, split=split, tools="procedural")
    assert [s.to_json() for s in a] == [
        s.to_json() for s in generate(120, seed=5, split=split, tools="procedural")
    ]
    names = {t.name for t in catalogue_tools(split, "procedural")}
    for s in a:
        assert {t["name"] for t in s.tools} <= names
        calls = s.calls
        text = format_calls(calls)
        assert parse(text) == calls, s.id
        assert match(text, s).exact, (s.id, text)
    assert {s.category for s in a} == {
        "simple",
        "multiple",
        "parallel",
        "parallel_multiple",
        "irrelevance",
        "reasoning",
    }


def test_mixed_holds_both_catalogues_and_fixed_is_unchanged():
    fixed = {t.name for t in catalogue_tools("train", "fixed")}
    mixed = {t.name for t in catalogue_tools("train", "mixed")}
    assert fixed < mixed and len(mixed) - len(fixed) == len(catalogue_tools("train", "procedural"))
    assert generate(30, seed=1)[0].to_json() == generate(30, seed=1, tools="fixed")[0].to_json()


def test_the_dev_split_is_procedural_and_named_by_the_loader():
    with pytest.raises(ValueError, match="dev split is procedural"):
        generate(5, split="dev")
    samples, report = load_samples("synthetic:dev:procedural", limit=20)
    assert len(samples) == 20 and report.n_skipped == 0
    from itool_ray.data.io import DatasetError

    with pytest.raises(DatasetError, match="synthetic:dev"):
        load_samples("synthetic:dev", limit=5)
