"""toolcall: safe parsing, formatting round trip, step segmentation of (unfinished) answers."""

from __future__ import annotations

import keyword
import time
import warnings

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from itool_ray.toolcall import (
    FunctionCall,
    Segmentation,
    ToolCallParseError,
    first_step,
    format_calls,
    parse,
    segment,
)

# -- parse: valid input ---------------------------------------------------------------------------------


def test_parses_a_call_list():
    assert parse('[get_weather(city="Paris", unit="celsius"), get_time(tz="CET")]') == [
        FunctionCall("get_weather", {"city": "Paris", "unit": "celsius"}),
        FunctionCall("get_time", {"tz": "CET"}),
    ]


def test_empty_list_and_empty_text_are_no_calls():
    assert parse("[]") == []
    assert parse("  []\n") == []
    assert parse("") == []


def test_dotted_names_are_kept_whole():
    assert parse("[math.factorial(number=5)]") == [FunctionCall("math.factorial", {"number": 5})]
    assert parse("[a.b.c(x=1)]")[0].name == "a.b.c"


def test_accepts_what_bfcl_decoding_accepts():
    # BFCL strips backticks / newlines / spaces and adds missing brackets.
    assert parse("f(a=1)") == [FunctionCall("f", {"a": 1})]
    assert parse("`[f(a=1)]`") == [FunctionCall("f", {"a": 1})]
    assert parse("\n[f(a=1)]\n") == [FunctionCall("f", {"a": 1})]
    assert parse("[f(a=1), g(b=2)") == [FunctionCall("f", {"a": 1}), FunctionCall("g", {"b": 2})]
    assert parse("[f(a=1),]") == [FunctionCall("f", {"a": 1})]


def test_literal_values():
    (call,) = parse(
        "[f(s='single', d=\"dou\\\"ble\", i=-3, x=2.5e-3, t=True, n=None, l=[1, [2, 'x']], "
        "tp=(1, 2), dd={'k': {'n': [1]}, 2: -1.5}, u=\"caf\u00e9 \u2603\")]"
    )
    assert call.arguments == {
        "s": "single",
        "d": 'dou"ble',
        "i": -3,
        "x": 2.5e-3,
        "t": True,
        "n": None,
        "l": [1, [2, "x"]],
        "tp": (1, 2),
        "dd": {"k": {"n": [1]}, 2: -1.5},
        "u": "caf\u00e9 \u2603",
    }
    assert type(call.arguments["tp"]) is tuple  # kept as a tuple, as BFCL does


def test_names_with_spaces_need_tool_names():
    text = '[Get Weather(city="Get Weather(x)"), get-time(tz="CET")]'
    with pytest.raises(ToolCallParseError):
        parse(text)
    calls = parse(text, tool_names=["Get Weather", "get-time", "unused name"])
    assert calls == [
        FunctionCall("Get Weather", {"city": "Get Weather(x)"}),  # the string is left alone
        FunctionCall("get-time", {"tz": "CET"}),
    ]


def test_tool_names_only_replace_call_positions():
    # "my tool" inside a string, and after something other than "[" or ",", stays as written
    calls = parse('[my tool(a="my tool(b=1)")]', tool_names=["my tool"])
    assert calls == [FunctionCall("my tool", {"a": "my tool(b=1)"})]


def test_placeholder_collision_is_avoided():
    text = '[odd name(a="_itool_fn0_"), _itool_fn0_(b=1)]'
    assert parse(text, tool_names=["odd name"]) == [
        FunctionCall("odd name", {"a": "_itool_fn0_"}),
        FunctionCall("_itool_fn0_", {"b": 1}),
    ]


# -- parse: invalid and hostile input ------------------------------------------------------------------

INVALID = {
    "positional": "[f(1)]",
    "starred": "[f(*a)]",
    "kwargs": "[f(**a)]",
    "repeated": "[f(a=1, a=2)]",
    "bare_name": "[f(unit=celsius)]",
    "call_value": "[f(a=g(b=1))]",
    "import": "[f(a=__import__('os'))]",
    "import_system": "[f(a=__import__('os').system('echo pwned'))]",
    "attribute_on_call": "[f(a=1).g(b=2)]",
    "attribute_on_literal": "[(1).real(a=1)]",
    "subscript_callee": "[x[0](a=1)]",
    "lambda": "[f(a=lambda: 1)]",
    "fstring": '[f(a=f"{x}")]',
    "binop": "[f(a=1+2)]",
    "compare": "[f(a=1<2)]",
    "walrus": "[f(a=(b:=1))]",
    "comprehension": "[f(a=[i for i in range(3)])]",
    "set": "[f(a={1, 2})]",
    "bytes": "[f(a=b'x')]",
    "complex": "[f(a=1j)]",
    "ellipsis": "[f(a=...)]",
    "unary_plus": "[f(a=+1)]",
    "double_minus": "[f(a=--1)]",
    "not": "[f(a=not 1)]",
    "inf_literal": "[f(a=1e999)]",
    "wide_int": "[f(a=" + "9" * 60 + ")]",
    "list_key": "[f(a={[1]: 2})]",
    "dict_unpack": "[f(a={**x})]",
    "prose": "I cannot help with that.",
    "prose_brackets": "[Note: no call needed]",
    "not_calls": "[1, 2]",
    "two_lists": "[f(a=1)], [g()]",
    "dict_body": "{'a': 1}",
    "unbalanced": "[f(a=(1]",
    "null_byte": "[f(a='\x00')]",
    "keyword_as_value": "[f(a=from)]",
    "keyword_comparison": "[f(from==1)]",
}


@pytest.mark.parametrize("text", list(INVALID.values()), ids=list(INVALID))
def test_invalid_text_raises_only_parse_error(text):
    with pytest.raises(ToolCallParseError) as info:
        parse(text)
    assert str(info.value)
    assert isinstance(info.value, ValueError)


def test_looks_like_call_marks_python_call_lists():
    for text in ("[f(1)]", "[f(unit=celsius)]", "[f(a=g())]"):
        with pytest.raises(ToolCallParseError) as info:
            parse(text)
        assert info.value.looks_like_call, text
    for text in ("no call here", "[1, 2]", "[f(a=1), 3]"):
        with pytest.raises(ToolCallParseError) as info:
            parse(text)
        assert not info.value.looks_like_call, text


HOSTILE = {
    "deep_brackets": "[f(a=" + "[" * 10_000 + "]" * 10_000 + ")]",
    "deep_dicts": "[f(a=" + "{1:" * 5_000 + "1" + "}" * 5_000 + ")]",
    "deep_parens_unclosed": "(" * 60_000,
    "deep_unary": "[f(a=" + "-" * 50_000 + "1)]",
    "deep_not": "[f(a=" + "not " * 12_000 + "1)]",
    "huge_decimal_int": "[f(a=" + "9" * 5_000 + ")]",
    "huge_hex_int": "[f(a=0x" + "f" * 60_000 + ")]",
    "one_megabyte_string": '[f(a="' + "x" * (1 << 20) + '")]',
    "many_unterminated_quotes": "'''" + '"""' * 20_000,
    "backslashes": '[f(a="' + "\\" * 60_000 + ")]",
    "deep_brackets_in_names": "[" + "(" * 40 + "f(a=1)" + ")" * 40 + "]",
}


@pytest.mark.parametrize("text", list(HOSTILE.values()), ids=list(HOSTILE))
def test_hostile_input_fails_fast_and_cleanly(text):
    start = time.perf_counter()
    with pytest.raises(ToolCallParseError):
        parse(text, tool_names=["odd name"])
    assert time.perf_counter() - start < 0.5


def test_brackets_inside_strings_do_not_count_toward_depth():
    deep_looking = "(" * 100
    assert parse(f'[f(a="{deep_looking}")]') == [FunctionCall("f", {"a": deep_looking})]


def test_invalid_escapes_do_not_depend_on_warning_filters():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert parse(r'[f(path="C:\path")]') == [FunctionCall("f", {"path": "C:\\path"})]


def test_size_limit_is_configurable():
    text = '[f(a="' + "x" * 100 + '")]'
    with pytest.raises(ToolCallParseError, match="longer than"):
        parse(text, max_chars=50)
    with pytest.raises(ToolCallParseError, match="deeper"):
        parse("[f(a=[[[1]]])]", max_depth=3)
    assert parse("[f(a=[[[1]]])]", max_depth=5)


def test_non_string_input():
    with pytest.raises(ToolCallParseError):
        parse(None)  # type: ignore[arg-type]


# -- format_calls and the round trip --------------------------------------------------------------------


def test_format_calls_style():
    calls = [
        FunctionCall("get_weather", {"city": "Paris", "days": 3, "metric": True, "x": None}),
        FunctionCall("math.hypot", {"v": [1.5, -2], "d": {"k": "v"}, "t": (1,)}),
    ]
    assert format_calls(calls) == (
        '[get_weather(city="Paris", days=3, metric=True, x=None), '
        'math.hypot(v=[1.5, -2], d={"k": "v"}, t=(1,))]'
    )
    assert format_calls([]) == "[]"
    assert format_calls([FunctionCall("f")]) == "[f()]"


def test_format_escapes_strings():
    s = 'quote " backslash \\ newline \n tab \t nul \x00 bell \x07 del \x7f snow \u2603 ls \u2028'
    text = format_calls([FunctionCall("f", {"s": s})])
    assert "\n" not in text
    assert parse(text) == [FunctionCall("f", {"s": s})]


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf"), {1, 2}, b"x", object()])
def test_format_rejects_values_without_a_literal(bad):
    with pytest.raises(ValueError):
        format_calls([FunctionCall("f", {"a": bad})])


@pytest.mark.parametrize("name", ["", "a(b", 'a"b', "a,b", "a=b", "a]"])
def test_format_rejects_unwritable_names(name):
    with pytest.raises(ValueError):
        format_calls([FunctionCall(name, {})])


@pytest.mark.parametrize("key", ["a-b", "1a", "", "a b"])
def test_format_rejects_unwritable_argument_names(key):
    with pytest.raises(ValueError):
        format_calls([FunctionCall("f", {key: 1})])


def test_python_keywords_as_argument_names():
    # ToolACE tools have parameters such as "from"; Python cannot parse them, so they get placeholders
    text = '[Get Flights(from="NYC", to="LA", in=1), g(note="from=1", lambda=[1])]'
    calls = [
        FunctionCall("Get Flights", {"from": "NYC", "to": "LA", "in": 1}),
        FunctionCall("g", {"note": "from=1", "lambda": [1]}),
    ]
    assert parse(text, tool_names=["Get Flights"]) == calls
    assert parse(format_calls(calls), tool_names=["Get Flights"]) == calls


def test_names_with_spaces_round_trip_with_tool_names():
    calls = [FunctionCall("Get Weather", {"city": "x"}), FunctionCall("get-time", {})]
    assert parse(format_calls(calls), tool_names=["Get Weather", "get-time"]) == calls


_ident = st.from_regex(r"[A-Za-z_][A-Za-z0-9_]{0,8}", fullmatch=True).filter(
    lambda s: not keyword.iskeyword(s)
)
_names = st.lists(_ident, min_size=1, max_size=3).map(".".join)
_keys = _ident | st.sampled_from(["from", "in", "class", "lambda", "año"])
_scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**100), max_value=2**100)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20)
)
_json = st.recursive(
    _scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12,
)
_calls = st.lists(
    st.builds(FunctionCall, _names, st.dictionaries(_keys, _json, max_size=4)),
    max_size=4,
)


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_calls)
def test_format_then_parse_round_trips(calls):
    text = format_calls(calls)
    parsed = parse(text)
    assert parsed == calls
    # exact types too: 1 == 1.0 == True would hide a lossy round trip
    assert repr(parsed) == repr(calls)


# -- segmentation -------------------------------------------------------------------------------------------


def kinds_and_texts(seg: Segmentation) -> list[tuple[str, str]]:
    return [(s.kind, s.text) for s in seg.steps]


def test_segments_a_complete_answer():
    text = '[get_weather(city="Paris", unit="celsius"), get_time(tz="CET")]'
    seg = segment(text, complete=True)
    assert kinds_and_texts(seg) == [
        ("open", "[get_weather("),
        ("arg", 'city="Paris",'),
        ("arg", ' unit="celsius"'),
        ("close", "), get_time("),
        ("arg", 'tz="CET"'),
        ("close", ")]"),
    ]
    assert [s.ends_answer for s in seg.steps] == [False] * 5 + [True]
    assert seg.rest == "" and seg.ended and not seg.malformed


def test_the_last_argument_waits_for_its_delimiter():
    assert kinds_and_texts(segment("[f(a=12")) == [("open", "[f(")]
    assert segment("[f(a=12").rest == "a=12"
    assert kinds_and_texts(segment("[f(a=12 )")) == [("open", "[f("), ("arg", "a=12")]
    assert segment("[f(a=12 )").rest == " )"
    assert kinds_and_texts(segment("[f(a=12 ,")) == [("open", "[f("), ("arg", "a=12 ,")]


def test_strings_and_nesting_do_not_confuse_steps():
    text = (
        '  [f(s="a, b) (c= [d] \\" \')", t=\'it\\\'s, ok\', l=[1, (2, 3), {"k": ")"}], '
        'd={"a": [1, 2], "b": "],"}, q="""x, "y")"""), g()]'
    )
    seg = segment(text, complete=True)
    assert kinds_and_texts(seg) == [
        ("open", "  [f("),
        ("arg", 's="a, b) (c= [d] \\" \')",'),
        ("arg", " t='it\\'s, ok',"),
        ("arg", ' l=[1, (2, 3), {"k": ")"}],'),
        ("arg", ' d={"a": [1, 2], "b": "],"},'),
        ("arg", ' q="""x, "y")"""'),
        ("close", "), g("),
        ("close", ")]"),
    ]
    assert "".join(s.text for s in seg.steps) == text


def test_no_call_and_trailing_comma_forms():
    assert kinds_and_texts(segment("[]", complete=True)) == [("close", "[]")]
    assert segment("[ ]").steps[0].ends_answer
    assert kinds_and_texts(segment("[f(a=1,)]")) == [("open", "[f("), ("arg", "a=1,"), ("close", ")]")]
    assert kinds_and_texts(segment("[f(a=1),]")) == [("open", "[f("), ("arg", "a=1"), ("close", "),]")]


def test_text_answers_are_one_step_when_complete():
    assert segment("I can't do that.").steps == []
    assert segment("I can't do that.").rest == "I can't do that."
    seg = segment(" I can't do that.", complete=True)
    assert kinds_and_texts(seg) == [("text", " I can't do that.")]
    assert seg.steps[0].ends_answer
    assert segment("", complete=False).steps == []
    assert segment("", complete=True).steps == []
    assert segment("   ").steps == []


def test_complete_turns_the_unfinished_tail_into_a_final_step():
    seg = segment("[f(a=1, b=", complete=True)
    assert kinds_and_texts(seg) == [("open", "[f("), ("arg", "a=1,"), ("arg", " b=")]
    assert seg.steps[-1].ends_answer
    seg = segment("[f(a=1)]\n", complete=True)
    assert kinds_and_texts(seg)[-2:] == [("close", ")]"), ("text", "\n")]


def test_malformed_text_stops_segmentation():
    for text in ('[f(a=1, "b"=2)]', "[f(a=,b=1)]", "[f(a=1] ", "[f(a==1)]", "[f(a=1) g()]", "[Note: (x)]"):
        seg = segment(text)
        assert seg.malformed, text
        seg = segment(text, complete=True)
        assert seg.steps[-1].kind == "text" and "".join(s.text for s in seg.steps) == text


ANSWERS = [
    '[get_weather(city="Paris", unit="celsius"), get_time(tz="CET")]',
    "[math.factorial(number=5)]",
    "[f()]",
    "[]",
    '  [f(s="a, b) (c= [d] \\" \')", l=[1, (2, 3), {"k": ")"}], x=-1.5e3 ), g(a={"q": [1, 2]},)]',
    '[Get Weather(city="x", days=3)]',
    "[f(a='''x,\n)'''), g(b=\"\")]",
    "Sorry, I can't help with that (no tool fits).",
    "[f(a=1, b=2)] trailing",
    '[f(a="unterminated, b=2)]',
]


@pytest.mark.parametrize("text", ANSWERS)
def test_steps_of_every_prefix_are_a_prefix_of_the_steps(text):
    full = segment(text, complete=True)
    assert "".join(s.text for s in full.steps) == text
    assert all(s.text == text[s.start : s.end] for s in full.steps)
    assert all(a.end == b.start for a, b in zip(full.steps, full.steps[1:], strict=False))
    for cut in range(len(text) + 1):
        part = segment(text[:cut])
        assert part.steps == full.steps[: len(part.steps)], text[:cut]
        done = part.steps[-1].end if part.steps else 0
        assert part.rest == text[done:cut]


@pytest.mark.parametrize("text", ANSWERS)
def test_first_step_walks_the_answer_like_the_mcts(text):
    prefix, steps = "", []
    while True:
        cut = first_step(prefix, text[len(prefix) :], complete=True)
        assert cut is not None
        step, ends = cut
        if not step:
            break
        steps.append(step)
        prefix += step
        if ends:
            break
    expected = segment(text, complete=True).steps
    cut_at = next((i for i, s in enumerate(expected) if s.ends_answer), len(expected) - 1)
    assert steps == [s.text for s in expected[: cut_at + 1]]


def test_first_step_on_unfinished_continuations():
    assert first_step("", "[get_weather(ci", complete=False) == ("[get_weather(", False)
    assert first_step("[f(", 'a="x, y", b=1', complete=False) == ('a="x, y",', False)
    assert first_step("[f(", "a=12", complete=False) is None
    assert first_step("[f(", "a=12", complete=True) == ("a=12", True)
    assert first_step("[f(a=1", ")]", complete=False) == (")]", True)
    assert first_step("[f(a=1", "), g(", complete=False) == ("), g(", False)
    assert first_step("[f(", "", complete=True) == ("", True)
    assert first_step("", "Sorry, no.", complete=False) is None
    assert first_step("", "Sorry, no.", complete=True) == ("Sorry, no.", True)


def test_first_step_after_a_last_argument_may_extend_it():
    # the boundary after a last argument is provisional: the continuation may add arguments or digits
    assert first_step("[f(a=1", ", b=2)]", complete=False) == (",", False)
    assert first_step("[f(a=1", "2)]", complete=False) == ("2", False)


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_calls, st.data())
def test_segmentation_follows_the_call_structure(calls, data):
    text = format_calls(calls)
    seg = segment(text, complete=True)
    assert "".join(s.text for s in seg.steps) == text
    kinds = [s.kind for s in seg.steps]
    if not calls:
        assert kinds == ["close"]
        return
    assert kinds.count("arg") == sum(len(c.arguments) for c in calls)
    assert kinds.count("open") == 1 and kinds.count("close") == len(calls)
    args = [s.text.strip().rstrip(",") for s in seg.steps if s.kind == "arg"]
    assert args == [
        format_calls([FunctionCall("f", {k: v})])[3:-2] for c in calls for k, v in c.arguments.items()
    ]
    cut = data.draw(st.integers(0, len(text)))
    part = segment(text[:cut])
    assert part.steps == seg.steps[: len(part.steps)]


_grammar_soup = st.text(alphabet="[](){}\"'=,.:-+ \\\nabfx1_", max_size=40)


@settings(max_examples=300, deadline=None)
@given(_grammar_soup)
def test_random_text_never_breaks_parse_or_segment(text):
    try:
        calls = parse(text)
        assert all(isinstance(c, FunctionCall) for c in calls)
    except ToolCallParseError:
        pass
    full = segment(text, complete=True)
    assert "".join(s.text for s in full.steps) == text
    for cut in range(len(text) + 1):
        part = segment(text[:cut])
        assert part.steps == full.steps[: len(part.steps)]
