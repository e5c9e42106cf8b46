"""Hostile model output: parse, segment, first_step and reward.match fail only in documented ways, run none
of the code they are given, and stay within time and memory bounds.

Property tests over generated and mutated answers (deep nesting, huge numbers and strings, code, unicode
tricks). The round trip ``parse(format_calls(x)) == x`` is in test_toolcall.py; the long-running fuzzer
is bench/fuzz_parser.py.
"""

from __future__ import annotations

import builtins
import contextlib
import math
import sys
import time
import tracemalloc
import unicodedata
import warnings
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from itool_ray.reward import MatchResult, match
from itool_ray.toolcall import (
    MAX_CHARS,
    MAX_INT_BITS,
    FunctionCall,
    ToolCallParseError,
    first_step,
    parse,
    segment,
)

ODD_NAMES = ["Get Weather Forecast", "get-time"]
SMALL_BUDGET_S = 0.05  # CPU per parse of an answer of a few KiB
LARGE_BUDGET_S = 0.5  # CPU per parse of a 64 KiB answer (ast.parse alone takes up to ~0.1 s on these)
MEMORY_BASE, MEMORY_PER_CHAR = 2 << 20, 1024  # tracemalloc peak allowed: 2 MiB + 1 KiB per character

CANARY = "untouched"  # hostile inputs try to overwrite this global

# -- the tripwire: nothing may be imported, opened or executed while parsing ---------------------------


class _Tripwire(BaseException):
    """Raised by the guarded builtins; a BaseException so no ``except Exception`` in the code swallows it."""


# CPython's parser imports unicodedata itself to NFKC-normalise non-ASCII identifiers.
_ALLOWED_IMPORTS = frozenset({"unicodedata"})
_ALLOWED_EVENTS = frozenset({"compile", "builtins.id"})  # ast.parse; reward's sample cache
_audit: dict[str, Any] = {"on": False, "events": []}


def _audit_hook(event: str, args: tuple) -> None:
    if _audit["on"] and event not in _ALLOWED_EVENTS:
        if not (event == "import" and args[0] in _ALLOWED_IMPORTS):
            _audit["events"].append((event, str(args)[:200]))


sys.addaudithook(_audit_hook)  # cannot be removed; a flag check when off


@contextlib.contextmanager
def _nothing_runs() -> Iterator[None]:
    """Builtins that run or reach out (``__import__``, ``open``, ``exec``, ``eval`` ...) raise, and audit
    events (import, open, exec, subprocess, socket ...) are recorded; both must stay unused."""
    called: list[str] = []
    real_import = builtins.__import__

    def guarded_import(name: str, *args: Any, **kwargs: Any) -> Any:
        if name in _ALLOWED_IMPORTS:
            return real_import(name, *args, **kwargs)
        called.append(f"__import__({name!r})")
        raise _Tripwire(name)

    def tripwire(what: str) -> Any:
        def trip(*args: Any, **kwargs: Any) -> Any:
            called.append(what)
            raise _Tripwire(what)

        return trip

    names = ("open", "exec", "eval", "breakpoint", "input", "print")
    saved = {n: getattr(builtins, n) for n in names}
    builtins.__import__ = guarded_import
    for n in names:
        setattr(builtins, n, tripwire(n))
    _audit["events"].clear()
    _audit["on"] = True
    try:
        yield
    finally:
        _audit["on"] = False
        builtins.__import__ = real_import
        for n, f in saved.items():
            setattr(builtins, n, f)
    assert not called, f"called while parsing: {called}"
    assert not _audit["events"], f"audit events while parsing: {_audit['events']}"


# -- strategies ------------------------------------------------------------------------------------------

HOSTILE_VALUES = [
    "__import__('os')",
    "__import__('os').system('echo pwned')",
    "open('/tmp/itool-fuzz-canary', 'w')",
    "exec('import os')",
    "eval('1')",
    "globals().__setitem__('CANARY', 'touched')",
    "(CANARY := 'touched')",
    "().__class__.__bases__[0].__subclasses__()",
    "lambda: 1",
    "(lambda: open('/tmp/itool-fuzz-canary', 'w'))()",
    "[x for x in __import__('sys').modules]",
    "f\"{__import__('os')}\"",
    "f'{1!r:>{2}}'",
    "breakpoint()",
    "x.y.z",
    "a[0]",
    "*a",
    "**a",
    "...",
    "b'\\x00'",
    "1j",
    "9" * 39,  # 127 bits: accepted
    "9" * 40,  # 130 bits: rejected
    "9" * 5000,  # past int_max_str_digits
    "0x" + "f" * 33,
    "1e308",
    "1e309",
    "-1e999",
    "--1",
    "not 1",
    "1 if 1 else 2",
    "1if 1 else 2",
    "0x1for",
    "await x",
    "(yield)",
    "'\\N{BLACK SNOWMAN}'",
    "'\\ud800'",
    "'C:\\path'",
    "'''multi\nline'''",
    "r'\\'",
    "{1, 2}",
    "{**a}",
    "{[1]: 2}",
    "{(1, 2): 3}",
    "'a' 'b'",
]

TRICKY_CHARS = [
    "\x00",  # NUL
    "\ud800",  # lone surrogates
    "\udfff",
    "\u202e",  # bidi overrides and isolates
    "\u202d",
    "\u2066",
    "\u2069",
    "\u200b",  # zero-width space, joiner, BOM
    "\u200d",
    "\ufeff",
    "\uff3b",  # fullwidth [ ( ) ] = a f 1
    "\uff08",
    "\uff09",
    "\uff3d",
    "\uff1d",
    "\uff41",
    "\uff46",
    "\uff11",
    "\u0661",  # Arabic-Indic digit one
    "\u0966",  # Devanagari zero
    "\u212b",  # Angstrom sign (NFC: Å)
    "\u1e9b\u0323",  # NFKC changes it
    "e\u0301",  # combining accent
    "\u2028",  # line separator
    "\u00a0",
    "\u3000",
    "\x0c",
    "\r",
    "\t",
    "\\",
    "#",
    "`",
]

_value = st.one_of(
    st.sampled_from(HOSTILE_VALUES),
    st.integers(-(2**140), 2**140).map(repr),
    st.floats(allow_nan=False).map(repr),
    st.text(max_size=20).map(repr),
    st.recursive(
        st.sampled_from(["1", "'x'", "None", "-2.5"]),
        lambda inner: st.one_of(
            st.lists(inner, max_size=3).map(lambda xs: "[" + ", ".join(xs) + "]"),
            st.lists(inner, max_size=3).map(lambda xs: "(" + ", ".join(xs) + ",)"),
            st.lists(inner, max_size=3).map(
                lambda xs: "{" + ", ".join(f"{i}: {x}" for i, x in enumerate(xs)) + "}"
            ),
        ),
        max_leaves=12,
    ),
    st.integers(28, 40).map(lambda d: "[" * d + "1" + "]" * d),  # around MAX_DEPTH
)
_name = st.one_of(
    st.sampled_from(["f", "get_weather", "math.factorial", "a.b.c", "\uff46", "caf\u00e9", "_itool_fn0_"]),
    st.sampled_from(ODD_NAMES),
    st.sampled_from(HOSTILE_VALUES),
    st.from_regex(r"[A-Za-z_][A-Za-z0-9_]{0,8}", fullmatch=True),
)
_key = st.one_of(
    st.from_regex(r"[a-z_][a-z0-9_]{0,6}", fullmatch=True),
    st.sampled_from(["from", "class", "lambda", "\uff41", "_itool_kw0_", "**k", "1", ""]),
)


@st.composite
def _answers(draw: st.DrawFn) -> str:
    """A call list built from names, keys and values above, then mutated with tricky characters."""
    calls = []
    for _ in range(draw(st.integers(0, 3))):
        args = draw(st.lists(st.tuples(_key, _value), max_size=4))
        calls.append(draw(_name) + "(" + ", ".join(f"{k}={v}" for k, v in args) + ")")
    text = draw(st.sampled_from(["[", "", "```[", " ["])) + ", ".join(calls)
    text += draw(st.sampled_from(["]", "", ",]", "]```", "] and more", ")]"]))
    for _ in range(draw(st.integers(0, 4))):
        i = draw(st.integers(0, len(text)))
        j = draw(st.integers(i, min(len(text), i + 3)))
        text = text[:i] + draw(st.sampled_from(TRICKY_CHARS) | st.characters(codec=None)) + text[j:]
    return text


_soup = st.lists(
    st.one_of(st.sampled_from(list("[](){}\"'=,.:-_ \nfa1") + TRICKY_CHARS), st.characters(codec=None)),
    max_size=60,
).map("".join)
hostile_text = st.one_of(_answers(), _soup)


# -- parse -----------------------------------------------------------------------------------------------


def _json_like(v: Any) -> bool:
    t = type(v)
    if t is str or t is bool or v is None:
        return True
    if t is int:
        return v.bit_length() <= MAX_INT_BITS
    if t is float:
        return math.isfinite(v)
    if t is list or t is tuple:
        return all(_json_like(x) for x in v)
    if t is dict:
        return all(type(k) in (str, int, float, bool) or k is None for k in v) and all(
            _json_like(x) for x in v.values()
        )
    return False


def _outcome(text: str, **kwargs: Any) -> Any:
    """The calls, or ("error", looks_like_call); raises anything else."""
    try:
        return parse(text, **kwargs)
    except ToolCallParseError as e:
        assert isinstance(e.reason, str) and e.reason
        return ("error", e.looks_like_call)


def _cpu(budget: float, fn: Any, *args: Any, **kwargs: Any) -> float:
    """CPU seconds of this thread for one call; over budget, the least of two tries (a GC pause or a
    descheduled thread is not what these tests look for)."""
    best = math.inf
    for _ in range(2):
        t0 = time.thread_time()
        fn(*args, **kwargs)
        best = min(best, time.thread_time() - t0)
        if best < budget:
            break
    return best


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(hostile_text, st.booleans())
def test_parse_raises_only_parse_errors_and_runs_nothing(text, with_names):
    names = ODD_NAMES if with_names else None
    with _nothing_runs():
        got = _outcome(text, tool_names=names)
    assert CANARY == "untouched"
    if type(got) is list:
        for c in got:
            assert type(c) is FunctionCall and type(c.name) is str and c.name
            assert all(type(k) is str for k in c.arguments) and _json_like(c.arguments)
            if c.name not in ODD_NAMES:  # Python's identifier rules: NFKC-normalised dotted names
                assert unicodedata.normalize("NFKC", c.name) == c.name
    assert _cpu(SMALL_BUDGET_S, _outcome, text, tool_names=names) < SMALL_BUDGET_S, len(text)


@settings(max_examples=150, deadline=None)
@given(hostile_text)
def test_parse_outcome_does_not_depend_on_warning_filters(text):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        quiet = _outcome(text)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        strict = _outcome(text)
    assert strict == quiet


@pytest.mark.parametrize("text", ["[f(a=1if 1 else 2)]", "[f(a=1or 2)]", "[f(a=0x1for x in y)]"])
def test_number_followed_by_keyword_reads_the_same_when_warnings_are_errors(text):
    # CPython 3.11 warns "invalid decimal literal" for "1if": with warnings as errors that warning
    # became a SyntaxError, and the text stopped looking like a call (that flips an irrelevance score).
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        strict = _outcome(text)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        default = _outcome(text)
    assert strict == default == ("error", True)
    assert not caught, "parse lets SyntaxWarnings reach the caller's log"


@pytest.mark.parametrize(
    "text",
    [
        "[f(a=__import__('itool_fuzz_canary_module'))]",
        "[__import__('itool_fuzz_canary_module').system(cmd='echo pwned')]",
        "[f(a=open('{tmp}/canary', 'w').write('x'))]",
        "[f(a=(lambda: open('{tmp}/canary', 'w'))())]",
        "[f(a=f\"{{open('{tmp}/canary', 'w')}}\")]",
        "[f(a=[open('{tmp}/canary', 'w') for _ in 'x'])]",
        "[f(a=exec(\"open('{tmp}/canary', 'w')\"))]",
        "[f(a=eval(\"open('{tmp}/canary', 'w')\"))]",
        "[f(a=globals().__setitem__('CANARY', 'touched'))]",
        "[f(a=(CANARY := 'touched'))]",
        "[f(from=__import__('itool_fuzz_canary_module'))]",  # the keyword-argument retry path
        "[Get Weather Forecast(city=open('{tmp}/canary', 'w'))]",  # the tool-name placeholder path
        "[os.system(command='touch {tmp}/canary')]",  # a dotted call name is data, never looked up
        "[f(a=1)]; open('{tmp}/canary', 'w')",
        "[f(a=1)]\nimport itool_fuzz_canary_module",
    ],
)
def test_code_in_an_answer_is_never_run(text, tmp_path):
    text = text.format(tmp=tmp_path)
    with _nothing_runs():
        _outcome(text, tool_names=ODD_NAMES)
        _outcome(text)
        segment(text, complete=True)
        match(text, SAMPLES[1])
    assert CANARY == "untouched"
    assert not (tmp_path / "canary").exists()
    assert "itool_fuzz_canary_module" not in sys.modules


# -- size: time and memory per answer --------------------------------------------------------------------

_UNITS = [
    "f(),", "1,", "'x',", "{},", "[", "(", "{1:", "-", "~", "not ", "lambda:", "a.", "()", "1<", "1+", "'a' ",
    "f'{1}' ", "\\", "'''", '"', "_", "9", "from=1,", "a=1,", "\u202e", "\uff41", "\u0661", "1 if 1 else ",
    "Get Weather Forecast(", "x" * 64,
]  # fmt: skip
_PREFIXES = ["[f(a=", "[", "", "[f(from=1, x='_itool_kw0", "[Get Weather Forecast(x='_itool_fn0", "[f(a='"]
_SUFFIXES = [")]", "]", "')]", "", "1)]"]


@st.composite
def _large(draw: st.DrawFn) -> str:
    """Up to 64 KiB: a prefix, one unit repeated, a suffix -- many calls, deep chains, long strings."""
    prefix, suffix = draw(st.sampled_from(_PREFIXES)), draw(st.sampled_from(_SUFFIXES))
    unit = draw(st.sampled_from(_UNITS) | st.text(min_size=1, max_size=8))
    room = MAX_CHARS - len(prefix) - len(suffix)
    return prefix + unit * draw(st.integers(1, room // len(unit))) + suffix


@settings(max_examples=15, deadline=None, suppress_health_check=list(HealthCheck))
@given(_large())
def test_parse_of_64_kib_is_bounded_in_time_and_memory(text):
    assert len(text) <= MAX_CHARS
    for names in (None, ODD_NAMES):
        assert _cpu(LARGE_BUDGET_S, _outcome, text, tool_names=names) < LARGE_BUDGET_S, (text[:60], len(text))
        tracemalloc.start()
        try:
            _outcome(text, tool_names=names)
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
        assert peak < MEMORY_BASE + MEMORY_PER_CHAR * len(text), (text[:60], peak)


@pytest.mark.parametrize(
    "text, names",
    [
        ('[f(from=1, x="_itool_kw0' + "_" * 60_000 + '")]', None),
        ('[Get Weather Forecast(x="_itool_fn0' + "_" * 60_000 + '")]', ODD_NAMES),
    ],
    ids=["keyword_placeholder", "tool_name_placeholder"],
)
def test_placeholder_choice_is_linear_in_the_text(text, names):
    # A placeholder is grown by "_" while it occurs in the text: 60k underscores made that 60k searches
    # of the text (seconds).
    assert _cpu(LARGE_BUDGET_S, _outcome, text, tool_names=names) < LARGE_BUDGET_S


def test_placeholders_avoid_names_that_python_normalises_into_them():
    # "_\uff49tool_fn0_" (fullwidth i) is not the placeholder as written, but Python reads it as one (NFKC),
    # so a second call (or argument) took the name the placeholder stands for.
    fullwidth_i = "_\uff49tool"
    assert parse(f"[odd name(a=1), {fullwidth_i}_fn0_(b=1)]", tool_names=["odd name"]) == [
        FunctionCall("odd name", {"a": 1}),
        FunctionCall("_itool_fn0_", {"b": 1}),
    ]
    assert parse(f"[f(from=1, {fullwidth_i}_kw0_=2)]") == [FunctionCall("f", {"from": 1, "_itool_kw0_": 2})]


# -- segment and first_step ------------------------------------------------------------------------------


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(hostile_text, st.data())
def test_segment_and_first_step_never_raise_and_tile_the_text(text, data):
    with _nothing_runs():
        done = segment(text, complete=True)
        part = segment(text)
    assert "".join(s.text for s in done.steps) == text and done.rest == ""
    assert "".join(s.text for s in part.steps) + part.rest == text
    assert all(s.end > s.start and s.text == text[s.start : s.end] for s in done.steps)
    assert part.steps == done.steps[: len(part.steps)]

    k = data.draw(st.integers(0, len(part.steps)))
    prefix = "".join(s.text for s in part.steps[:k])
    rest = text[len(prefix) :]
    for complete in (False, True):
        with _nothing_runs():
            r = first_step(prefix, rest, complete=complete)
        if r is None:
            assert not complete
        else:
            step, ends = r
            assert type(step) is str and type(ends) is bool and rest.startswith(step)
            assert step or ends


# -- reward.match ----------------------------------------------------------------------------------------

_STRING, _INT = {"type": "string"}, {"type": "integer"}
SAMPLES = [
    {
        "tools": [
            {
                "name": "get_weather",
                "parameters": {
                    "type": "dict",
                    "properties": {
                        "city": _STRING,
                        "unit": {"type": "string", "default": "celsius"},
                        "days": _INT,
                    },
                    "required": ["city"],
                },
            },
            {
                "name": "get_time",
                "parameters": {"type": "dict", "properties": {"tz": _STRING}, "required": ["tz"]},
            },
        ],
        "answer": [
            {"name": "get_weather", "arguments": {"city": "Paris", "days": 3}},
            {"name": "get_time", "arguments": {"tz": "CET"}},
        ],
    },
    {  # ToolACE names with spaces: parse goes through the placeholder path
        "tools": [
            {"name": n, "parameters": {"type": "dict", "properties": {"city": _STRING}, "required": ["city"]}}
            for n in ODD_NAMES
        ],
        "answer": [{"name": "Get Weather Forecast", "arguments": {"city": "Paris"}}],
    },
    {  # BFCL possible answers with dicts, lists of dicts, floats, tuples and optional arguments
        "tools": [
            {
                "name": "geo.area",
                "parameters": {
                    "type": "dict",
                    "properties": {
                        "shape": {"type": "dict"},
                        "points": {"type": "array", "items": {"type": "dict"}},
                        "scale": {"type": "float"},
                        "pair": {"type": "tuple", "items": _INT},
                    },
                    "required": ["shape", "scale"],
                },
            }
        ],
        "answer": [{"name": "geo.area", "arguments": {"shape": {"kind": "circle"}, "scale": 2.0}}],
        "accepted": [
            {
                "name": "geo.area",
                "arguments": {
                    "shape": [{"kind": ["circle", "disc"], "r": ["", 1]}],
                    "points": [[{"x": [0], "y": [0]}], ""],
                    "scale": [2.0, 2],
                    "pair": [[1, 2], ""],
                },
            }
        ],
    },
    {"tools": [{"name": "get_time", "parameters": {"type": "dict", "properties": {}}}], "answer": []},
]
_near_answers = st.sampled_from(
    [
        '[get_weather(city="Paris", days=3), get_time(tz="CET")]',
        '[Get Weather Forecast(city="paris")]',
        "[geo.area(shape={'kind': 'disc', 'r': 1}, scale=2, points=[{'x': 0, 'y': 0}], pair=(1, 2))]",
        "[]",
    ]
)


@st.composite
def _mutated_answer(draw: st.DrawFn) -> str:
    text = draw(_near_answers)
    for _ in range(draw(st.integers(0, 3))):
        i = draw(st.integers(0, len(text)))
        j = draw(st.integers(i, min(len(text), i + 4)))
        text = (
            text[:i] + draw(st.sampled_from(TRICKY_CHARS + HOSTILE_VALUES) | st.text(max_size=3)) + text[j:]
        )
    return text


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.one_of(_mutated_answer(), hostile_text), st.sampled_from(range(len(SAMPLES))))
def test_match_never_raises_and_scores_in_the_unit_interval(text, i):
    with _nothing_runs():
        r = match(text, SAMPLES[i])
    assert type(r) is MatchResult
    assert type(r.score) is float and 0.0 <= r.score <= 1.0
    assert (r.score == 1.0) == r.exact == (r.error is None)
    assert r.calls is None or all(type(c) is FunctionCall for c in r.calls)


def test_the_near_answers_score_as_intended():
    # guards the samples above: each answer family reaches the exact branch of match
    texts = [
        '[get_weather(city="Paris", days=3), get_time(tz="CET")]',
        '[Get Weather Forecast(city="paris")]',
        "[geo.area(shape={'kind': 'disc', 'r': 1}, scale=2, points=[{'x': 0, 'y': 0}], pair=(1, 2))]",
        "I cannot help with that.",
    ]
    assert [match(t, s).exact for t, s in zip(texts, SAMPLES, strict=True)] == [True] * 4
