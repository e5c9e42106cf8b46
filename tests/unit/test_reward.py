"""reward.match: BFCL-exact matching with partial credit."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from itool_ray.data.schema import Sample
from itool_ray.reward import MatchResult, match, prepare, standardize
from itool_ray.toolcall import FunctionCall, format_calls

WEATHER = {
    "name": "get_weather",
    "description": "Weather for a city.",
    "parameters": {
        "type": "object",
        "properties": {
            "city": {"type": "string"},
            "days": {"type": "integer"},
            "unit": {"type": "string", "enum": ["celsius", "fahrenheit"], "default": "celsius"},
            "lat": {"type": "number"},
        },
        "required": ["city", "days"],
    },
}
TIME = {
    "name": "get_time",
    "parameters": {"type": "object", "properties": {"tz": {"type": "string"}}, "required": ["tz"]},
}
AREA = {
    "name": "area",
    "parameters": {
        "type": "dict",
        "properties": {
            "radius": {"type": "float"},
            "sides": {"type": "array", "items": {"type": "integer"}},
            "point": {"type": "tuple", "items": {"type": "float"}},
            "opts": {"type": "dict", "properties": {"a": {"type": "string"}}},
            "flag": {"type": "boolean"},
        },
        "required": ["radius"],
    },
}
TOOLS = [{"type": "function", "function": WEATHER}, {"type": "function", "function": TIME}, AREA]
MSGS = [{"role": "user", "content": "?"}]


def sample(answer, accepted=None, tools=TOOLS, sid="s") -> Sample:
    return Sample(id=sid, tools=tools, messages=MSGS, answer=answer, accepted=accepted)


def call(name, **args) -> dict:
    return {"name": name, "arguments": args}


def text(*calls: FunctionCall) -> str:
    return format_calls(list(calls))


ONE = sample([call("get_weather", city="Paris", days=3)])
TWO = sample([call("get_weather", city="Paris", days=3), call("get_time", tz="CET")])
NONE = sample([])


def test_exact_answer_scores_one():
    r = match('[get_weather(city="Paris", days=3)]', ONE)
    assert isinstance(r, MatchResult)
    assert r.exact and r.score == 1.0 and r.error is None
    assert r.calls == [FunctionCall("get_weather", {"city": "Paris", "days": 3})]


def test_partial_credit_ordering():
    exact = match('[get_weather(city="Paris", days=3)]', ONE)
    wrong_value = match('[get_weather(city="Paris", days=4)]', ONE)
    wrong_type = match('[get_weather(city="Paris", days="3")]', ONE)
    extra_arg = match('[get_weather(city="Paris", days=3, zz=1)]', ONE)
    missing_arg = match('[get_weather(city="Paris")]', ONE)
    wrong_function = match('[get_time(city="Paris", days=3)]', ONE)
    no_call = match("[]", ONE)
    unparseable = match("The weather in Paris is nice.", ONE)
    assert exact.score == 1.0
    assert 1.0 > wrong_value.score > missing_arg.score > wrong_function.score > unparseable.score == 0.0
    assert wrong_type.score == wrong_value.score
    assert 1.0 > extra_arg.score > missing_arg.score
    assert no_call.score == 0.0
    for r in (wrong_value, wrong_type, extra_arg, missing_arg, wrong_function, no_call, unparseable):
        assert not r.exact and r.error
    assert unparseable.calls is None and "unparseable" in unparseable.error
    assert "days" in wrong_value.error and "missing" in missing_arg.error and "zz" in extra_arg.error


def test_documented_formula():
    # one call, 2 slots: city right (1), days wrong (0.5) -> args 0.75 -> pair 0.2 + 0.8 * 0.75 = 0.8
    assert match('[get_weather(city="Paris", days=4)]', ONE).score == pytest.approx(0.1 + 0.9 * 0.8)
    # missing days: 1 of 2 -> 0.6
    assert match('[get_weather(city="Paris")]', ONE).score == pytest.approx(0.1 + 0.9 * 0.6)
    # wrong function: the format credit only
    assert match("[get_time(tz='x')]", ONE).score == pytest.approx(0.1)


def test_parallel_calls_match_in_any_order():
    a, b = FunctionCall("get_weather", {"city": "Paris", "days": 3}), FunctionCall("get_time", {"tz": "CET"})
    assert match(text(a, b), TWO).exact
    assert match(text(b, a), TWO).exact
    both_weather = sample(
        [call("get_weather", city="Paris", days=3), call("get_weather", city="Rome", days=1)]
    )
    assert match('[get_weather(city="Rome", days=1), get_weather(city="Paris", days=3)]', both_weather).exact


def test_missing_and_extra_calls_are_penalised():
    a, b = FunctionCall("get_weather", {"city": "Paris", "days": 3}), FunctionCall("get_time", {"tz": "CET"})
    missing = match(text(a), TWO)
    extra = match(text(a, b, b), TWO)
    assert not missing.exact and missing.score == pytest.approx(0.1 + 0.9 * 0.5)
    assert not extra.exact and extra.score == pytest.approx(0.1 + 0.9 * 2 / 3)
    assert "2 call(s), got 1" in missing.error


def test_partial_matching_is_order_free():
    wrong_tz = match('[get_time(tz="UTC"), get_weather(city="Paris", days=3)]', TWO)
    assert not wrong_tz.exact
    assert wrong_tz.score == pytest.approx(0.1 + 0.9 * (1.0 + 0.6) / 2)


def test_int_is_accepted_where_float_is_expected_not_the_reverse():
    s = sample([call("area", radius=2.0)])
    assert match("[area(radius=2.0)]", s).exact
    assert match("[area(radius=2)]", s).exact
    s_int = sample([call("get_weather", city="Paris", days=3)])
    assert not match('[get_weather(city="Paris", days=3.0)]', s_int).exact
    # JSON Schema "number" accepts ints too
    s_num = sample([call("get_weather", city="Paris", days=3, lat=48.0)])
    assert match('[get_weather(city="Paris", days=3, lat=48)]', s_num).exact


def test_bool_is_not_an_int():
    s = sample([call("get_weather", city="Paris", days=1)])
    assert not match('[get_weather(city="Paris", days=True)]', s).exact
    s = sample([call("area", radius=1.0, flag=True)])
    assert not match("[area(radius=1.0, flag=1)]", s).exact
    assert match("[area(radius=1.0, flag=True)]", s).exact


def test_strings_are_compared_after_bfcl_standardisation():
    assert standardize("New York, NY") == standardize("new york ny") == "newyorkny"
    assert match('[get_weather(city=" PARIS ", days=3)]', ONE).exact
    assert match("[get_weather(city='paris', days=3)]", ONE).exact
    assert not match('[get_weather(city="Pariss", days=3)]', ONE).exact


def test_optional_arguments():
    # unit is optional with a default: may be omitted or given its default, nothing else
    assert match('[get_weather(city="Paris", days=3)]', ONE).exact
    assert match('[get_weather(city="Paris", days=3, unit="celsius")]', ONE).exact
    assert not match('[get_weather(city="Paris", days=3, unit="fahrenheit")]', ONE).exact
    # lat is optional without default: may be omitted only
    assert not match('[get_weather(city="Paris", days=3, lat=1.0)]', ONE).exact
    # an answered optional argument equal to its default may be left out
    s = sample([call("get_weather", city="Paris", days=3, unit="celsius")])
    assert match('[get_weather(city="Paris", days=3)]', s).exact
    s = sample([call("get_weather", city="Paris", days=3, unit="fahrenheit")])
    assert not match('[get_weather(city="Paris", days=3)]', s).exact


def test_required_arguments_come_from_the_schema():
    # the answer omits a schema-required argument: no output can be exact (BFCL rejects it too)
    s = sample([call("get_weather", city="Paris")])
    assert not match('[get_weather(city="Paris")]', s).exact


def test_nested_values():
    s = sample([call("area", radius=1.0, sides=[1, 2, 3], point=[1.0, 2.0], opts={"a": "Big Room"})])
    good = '[area(radius=1.0, sides=[1, 2, 3], point=(1.0, 2.0), opts={"a": "big room"})]'
    assert match(good, s).exact
    assert match(good.replace("(1.0, 2.0)", "[1.0, 2.0]"), s).exact
    assert not match(good.replace("[1, 2, 3]", "[1, 2]"), s).exact
    assert not match(good.replace("[1, 2, 3]", "[1.0, 2.0, 3.0]"), s).exact
    assert not match(good.replace('{"a": "big room"}', '{"a": "big room", "b": 1}'), s).exact
    assert not match(good.replace('{"a": "big room"}', "{}"), s).exact
    assert not match(good.replace("[1, 2, 3]", "(1, 2, 3)"), s).exact  # tuples only pass for "tuple"


def test_bfcl_style_accepted_alternatives():
    s = sample(
        [call("get_weather", city="Paris", days=3)],
        accepted=[
            {"name": "get_weather", "arguments": {"city": ["Paris", "Paris, France"], "days": [3, ""]}}
        ],
    )
    assert match('[get_weather(city="Paris, France", days=3)]', s).exact
    assert match('[get_weather(city="Paris")]', s).exact is False  # "days" is schema-required
    s2 = sample(
        [call("area", radius=1.0)],
        accepted=[{"name": "area", "arguments": {"radius": [1.0], "flag": ["", False]}}],
    )
    assert match("[area(radius=1)]", s2).exact
    assert match("[area(radius=1, flag=False)]", s2).exact
    assert not match("[area(radius=1, flag=True)]", s2).exact
    assert not match("[area(radius=1, sides=[1])]", s2).exact  # not in the accepted arguments


def test_no_call_samples():
    assert match("[]", NONE).exact
    assert match("", NONE).exact
    assert match("None of the tools can do that.", NONE).score == 1.0
    r = match('[get_time(tz="CET")]', NONE)
    assert not r.exact and r.score == 0.0 and "no call" in r.error
    # a Python call list our parser refuses is still a call (BFCL decodes it)
    assert not match("[get_time(CET)]", NONE).exact


def test_names_with_spaces_use_the_tools():
    tool = {
        "name": "Get Weather",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
    }
    s = sample([call("Get Weather", city="Paris")], tools=[tool])
    assert match('[Get Weather(city="Paris")]', s).exact
    assert not match('[Get Weather(city="Rome")]', s).exact


def test_unknown_schema_types_compare_values_only():
    tool = {
        "name": "f",
        "parameters": {"type": "object", "properties": {"x": {"type": ["string", "null"]}, "y": {}}},
    }
    s = sample([call("f", x="A b", y=[1, "Q"])], tools=[tool])
    assert match('[f(x="a B", y=[1, "q"])]', s).exact
    assert not match('[f(x="a B", y=[1])]', s).exact


def test_accepts_sample_dicts_and_prepared_samples():
    d = ONE.to_dict()
    assert match('[get_weather(city="Paris", days=3)]', d).exact
    prepared = prepare(ONE)
    assert match('[get_weather(city="Paris", days=3)]', prepared).exact
    assert not match('[get_weather(city="Paris", days=2)]', prepared).exact


def test_cache_does_not_mix_samples_with_the_same_id():
    for days in range(5):
        s = sample([call("get_weather", city="Paris", days=days)], sid="same")
        assert match(f'[get_weather(city="Paris", days={days})]', s).exact


@settings(max_examples=60, deadline=None)
@given(
    st.fixed_dictionaries({"city": st.text(max_size=6), "days": st.integers(-3, 3)}),
    st.fixed_dictionaries({"city": st.text(max_size=6), "days": st.integers(-3, 3)}),
)
def test_score_is_one_exactly_when_exact(truth, guess):
    s = sample([call("get_weather", **truth)])
    r = match(text(FunctionCall("get_weather", guess)), s)
    assert 0.0 <= r.score <= 1.0
    assert (r.score == 1.0) == r.exact
    if standardize(guess["city"]) == standardize(truth["city"]) and guess["days"] == truth["days"]:
        assert r.exact
