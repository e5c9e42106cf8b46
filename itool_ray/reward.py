"""AST match reward with partial credit: ``match(text, sample) -> MatchResult(score, exact, calls, error)``.

Exactness follows BFCL's AST checker (``bfcl_eval/eval_checker/ast_eval/ast_checker.py``) rule for rule:

- a call matches an expected call when the names are equal; every schema-``required`` argument is given;
  every given argument is in the schema's properties and in the accepted arguments; its value passes
  BFCL's type check (schema type names ``string integer float boolean array tuple dict any``; Python
  ``int`` is accepted where ``float`` is expected, not the reverse; ``bool`` is not ``int``; tuples count
  as lists for ``tuple``; array items are type-checked one level deep; a value of the accepted values'
  own type is accepted as a "variable") and its value check: strings compared after BFCL's
  standardisation (case, spaces and ``,./-_*^`` ignored, ``'`` = ``"``), lists element-wise the same,
  dicts and lists of dicts key by key against nested accepted values, anything else by ``==``; and
  every accepted argument whose list lacks ``""`` is given;
- the answer is exact when it has as many calls as expected and BFCL's greedy order-free assignment
  (expected calls in order, each taking the first unused call that matches) pairs them all. For BFCL's
  simple and multiple categories (one expected call) this is the same as their checkers;
- a sample whose answer is ``[]`` (irrelevance) is exact when the text holds no call: ``[]``, or text
  that is not a Python list of calls (prose). A Python list of calls that our strict parser rejects
  (``[f(x)]``) still counts as a call, as BFCL decodes it as one.

Extensions for non-BFCL schemas: JSON Schema names ``number`` (like ``float``) and ``object`` (like
``dict``), ``str/int/bool/list``; an unknown or missing type skips the type check and compares values as
above. When ``sample.accepted`` is None the accepted values are derived from ``sample.answer`` and the
tool schemas: each answered argument accepts its value (and may be omitted when it equals the schema
default); an optional schema parameter that the answer leaves out may be omitted or given its default;
dict values (``dict``/``object`` parameters, also as array items) are compared key by key.

Partial credit (``score``), with ``score == 1.0`` exactly when ``exact``:

- unparseable text (or ``[]``) when calls are expected: 0.0;
- per (output call, expected call) pair: 0 if the names differ, else ``0.2 + 0.8 * args`` where
  ``args = credit / slots``; slots are the given arguments plus the mandatory ones missing; a given
  argument earns 1 if it passes, 0.5 if the key is accepted but the value (or type) is wrong, 0 if it is
  unexpected; a missing mandatory argument earns 0;
- calls are paired order-free to maximise the summed pair score (exhaustive up to 6 calls, then greedy),
  and ``score = 0.1 + 0.9 * sum / max(n_output, n_expected)``: missing and extra calls dilute it, and a
  parseable call list with only wrong functions keeps 0.1 over unparseable text;
- a non-exact answer is capped at 0.99; a no-call sample scores 1.0 or 0.0.

Hot path: ``prepare(sample)`` builds the per-sample structures once (cached by object for
``match(text, sample)``); samples are treated as immutable.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from itool_ray.toolcall import FunctionCall, ToolCallParseError, is_dotted_name, parse

__all__ = ["Expected", "MatchResult", "match", "prepare", "standardize"]

NAME_CREDIT = 0.2
FORMAT_CREDIT = 0.1
WRONG_VALUE_CREDIT = 0.5
NON_EXACT_CAP = 0.99
_EXHAUSTIVE_UP_TO = 6


@dataclass(frozen=True, slots=True)
class MatchResult:
    score: float  # partial credit in [0, 1]; 1.0 iff exact
    exact: bool  # BFCL's AST checker would accept the answer
    calls: list[FunctionCall] | None  # the parsed calls; None when the text did not parse
    error: str | None  # the parse error or the first mismatch; None when exact


_STD_TABLE = str.maketrans("", "", " ,./-_*^")


def standardize(s: str) -> str:
    """BFCL's string standardisation: drop spaces and ``,./-_*^``, lowercase, ``'`` -> ``"``."""
    return s.translate(_STD_TABLE).lower().replace("'", '"')


def _std_item(x: Any) -> Any:
    return standardize(x) if type(x) is str else x


_TYPES: dict[str, type] = {
    # BFCL's PYTHON_TYPE_MAPPING
    "string": str,
    "integer": int,
    "float": float,
    "boolean": bool,
    "array": list,
    "tuple": list,
    "dict": dict,
    "any": str,
    # JSON Schema and loose spellings
    "number": float,
    "object": dict,
    "str": str,
    "int": int,
    "bool": bool,
    "list": list,
}
_FLOAT_LIKE = frozenset({"float", "number"})
_SEQUENCE_TYPES = frozenset({"array", "tuple", "list"})


class _Param:
    __slots__ = (
        "accepted",
        "optional",
        "desc",
        "expected",
        "nested",
        "float_like",
        "pa_type",
        "is_var",
        "std_strs",
        "std_lists",
        "nested_items",
    )

    def __init__(self, accepted: list[Any], spec: Mapping[str, Any] | None):
        self.accepted = accepted
        self.optional = "" in accepted
        self.desc = _type_name(spec)
        self.expected = _TYPES.get(self.desc) if self.desc else None
        item_type = _type_name(spec.get("items")) if self.desc in _SEQUENCE_TYPES else None
        self.nested = _TYPES.get(item_type) if item_type else None
        self.float_like = self.desc in _FLOAT_LIKE
        self.pa_type = _first_type(accepted)
        self.is_var = self.pa_type is not None and self.pa_type is not self.expected
        self.std_strs = {standardize(a) for a in accepted if type(a) is str}
        self.std_lists = [[_std_item(y) for y in a] for a in accepted if isinstance(a, (list, tuple, str))]
        self.nested_items = [(type(a) is list, _first_type(a) if type(a) is list else None) for a in accepted]


def _first_type(values: Iterable[Any]) -> type | None:
    for v in values:
        if v != "":
            return type(v)
    return None


class _ExpCall:
    __slots__ = ("name", "params", "required", "props")

    def __init__(self, name: str, accepted: Mapping[str, list[Any]], fn: Mapping[str, Any] | None):
        self.name = name
        params = fn.get("parameters") if isinstance(fn, Mapping) else None
        props = params.get("properties") if isinstance(params, Mapping) else None
        self.props = props if isinstance(props, Mapping) else None
        required = params.get("required") if isinstance(params, Mapping) else None
        self.required = tuple(r for r in required if isinstance(r, str)) if isinstance(required, list) else ()
        self.params = {
            k: _Param(list(v) if isinstance(v, (list, tuple)) else [v], (self.props or {}).get(k))
            for k, v in accepted.items()
        }


@dataclass(frozen=True, slots=True)
class Expected:
    """What ``match`` compares against, built once per sample by ``prepare``."""

    calls: tuple[_ExpCall, ...]  # empty: the right answer is no call
    tool_names: tuple[str, ...]  # names that need placeholder parsing (not dotted identifiers)


# ---------------------------------------------------------------------------------------------------
# Building the expected structures
# ---------------------------------------------------------------------------------------------------


def _functions(tools: Iterable[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    return [t["function"] if t.get("type") == "function" and "function" in t else t for t in tools]


def _type_name(spec: Any) -> str | None:
    t = spec.get("type") if isinstance(spec, Mapping) else None
    return t if isinstance(t, str) else None


def _is_dict_type(spec: Any) -> bool:
    return _type_name(spec) in ("dict", "object")


def _wrap(value: Any, spec: Mapping[str, Any] | None) -> Any:
    """An answer value as one accepted entry: dicts become BFCL nested accepted dicts ({key: [value]})."""
    if _is_dict_type(spec) and isinstance(value, dict):
        return {k: [v] for k, v in value.items()}
    if (
        _type_name(spec) in _SEQUENCE_TYPES
        and _is_dict_type(spec.get("items"))
        and isinstance(value, list)
        and all(isinstance(v, dict) for v in value)
    ):
        return [{k: [x] for k, x in v.items()} for v in value]
    return value


def _derive_accepted(args: Mapping[str, Any], fn: Mapping[str, Any] | None) -> dict[str, list[Any]]:
    params = fn.get("parameters") if isinstance(fn, Mapping) else None
    props = params.get("properties") if isinstance(params, Mapping) else None
    props = props if isinstance(props, Mapping) else {}
    required = params.get("required") if isinstance(params, Mapping) else None
    required = set(required) if isinstance(required, list) else set()
    out: dict[str, list[Any]] = {}
    for k, v in args.items():
        spec = props.get(k)
        acc = [_wrap(v, spec)]
        if isinstance(spec, Mapping) and "default" in spec and k not in required and spec["default"] == v:
            acc.append("")
        out[k] = acc
    for k, spec in props.items():
        if k not in out and k not in required:
            has_default = isinstance(spec, Mapping) and "default" in spec
            out[k] = ["", _wrap(spec["default"], spec)] if has_default else [""]
    return out


def prepare(sample: Any) -> Expected:
    """Expected calls for a Sample (or a sample dict with ``tools``, ``answer``, optional ``accepted``)."""
    if isinstance(sample, Expected):
        return sample
    if isinstance(sample, Mapping):
        tools, answer, accepted = (
            sample.get("tools") or [],
            sample.get("answer") or [],
            sample.get("accepted"),
        )
    else:
        tools, answer, accepted = sample.tools, sample.answer, sample.accepted
    fns = _functions(tools)
    by_name: dict[str, Mapping[str, Any]] = {}
    for fn in fns:
        by_name.setdefault(fn.get("name"), fn)
    calls: list[_ExpCall] = []
    if not answer:
        pass  # the right answer is no call
    elif accepted:
        for a in accepted:
            name, args = (
                (a["name"], a.get("arguments") or {}) if isinstance(a, Mapping) else (a.name, a.arguments)
            )
            calls.append(_ExpCall(name, args, by_name.get(name)))
    else:
        for c in answer:
            name, args = (
                (c["name"], c.get("arguments") or {}) if isinstance(c, Mapping) else (c.name, c.arguments)
            )
            calls.append(_ExpCall(name, _derive_accepted(args, by_name.get(name)), by_name.get(name)))
    names = tuple(n for n in by_name if isinstance(n, str) and not is_dotted_name(n))
    return Expected(tuple(calls), names)


_CACHE: dict[int, tuple[Any, Expected]] = {}
_CACHE_SIZE = 4096


def _expected(sample: Any) -> Expected:
    if isinstance(sample, Expected):
        return sample
    hit = _CACHE.get(id(sample))
    if hit is not None and hit[0] is sample:
        return hit[1]
    exp = prepare(sample)
    if len(_CACHE) >= _CACHE_SIZE:
        del _CACHE[next(iter(_CACHE))]
    _CACHE[id(sample)] = (sample, exp)  # holding the sample keeps its id from being reused
    return exp


# ---------------------------------------------------------------------------------------------------
# BFCL's value checks
# ---------------------------------------------------------------------------------------------------


def _dict_ok(value: dict, accepted: list[Any]) -> bool:
    for pa in accepted:
        if pa == "" or not isinstance(pa, dict):
            continue
        ok = True
        for k, v in value.items():
            if k not in pa:
                ok = False
                break
            options = pa[k] if isinstance(pa[k], (list, tuple)) else [pa[k]]
            if _std_item(v) not in [_std_item(o) for o in options]:
                ok = False
                break
        if ok:
            for k, options in pa.items():
                if k not in value and "" not in options:
                    ok = False
                    break
        if ok:
            return True
    return False


def _list_dict_ok(value: list, accepted: list[Any]) -> bool:
    for pa in accepted:
        if not isinstance(pa, (list, str)) or len(value) != len(pa):
            continue
        if all(isinstance(v, dict) and _dict_ok(v, [d]) for v, d in zip(value, pa, strict=True)):
            return True
    return False


def _check_value(key: str, value: Any, p: _Param) -> str | None:
    """None when the value passes BFCL's type and value checks, else the reason."""
    exp = p.expected
    if exp is None:  # no usable schema type: compare values only
        tv = type(value)
        if tv is str:
            ok = standardize(value) in p.std_strs
        elif tv is list or tv is tuple:
            ok = [_std_item(x) for x in value] in p.std_lists
        else:
            ok = value in p.accepted
        return None if ok else f"wrong value for '{key}': {value!r}"
    if type(value) is tuple and p.desc == "tuple":
        value = list(value)
    if p.float_like and type(value) is int:
        value = float(value)
    tv = type(value)
    is_var = p.is_var
    if tv is exp:
        if p.nested is not None:
            for is_list, inner_type in p.nested_items:
                if not is_list or all(type(x) is p.nested or type(x) is inner_type for x in value):
                    break
            else:
                return f"wrong item type for '{key}': expected {p.desc} of {p.nested.__name__}"
    elif p.pa_type is not None and tv is p.pa_type:
        is_var = True
    else:
        return f"wrong type for '{key}': expected {p.desc}, got {tv.__name__}"
    if not is_var:
        if exp is dict:
            return None if _dict_ok(value, p.accepted) else f"wrong value for '{key}': {value!r}"
        if exp is list and p.nested is dict:
            return None if _list_dict_ok(value, p.accepted) else f"wrong value for '{key}': {value!r}"
        if exp is str:
            return None if standardize(value) in p.std_strs else f"wrong value for '{key}': {value!r}"
        if exp is list:
            ok = [_std_item(x) for x in value] in p.std_lists
            return None if ok else f"wrong value for '{key}': {value!r}"
    return None if value in p.accepted else f"wrong value for '{key}': {value!r}"


def _score_call(call: FunctionCall, exp: _ExpCall) -> tuple[float, str | None]:
    """Pair score in [0, 1] and the first mismatch (None: BFCL's simple_function_checker accepts)."""
    if call.name != exp.name:
        return 0.0, f"expected a call to {exp.name}, got {call.name}"
    args = call.arguments
    error = None
    missing = 0
    for r in exp.required:
        if r not in args:
            missing += 1
            if error is None:
                error = f"{exp.name}: missing required argument '{r}'"
    credit = 0.0
    props, params = exp.props, exp.params
    for k, v in args.items():
        p = params.get(k)
        if p is None or (props is not None and k not in props):
            if error is None:
                error = f"{exp.name}: unexpected argument '{k}'"
            continue
        why = _check_value(k, v, p)
        if why is None:
            credit += 1.0
        else:
            credit += WRONG_VALUE_CREDIT
            if error is None:
                error = f"{exp.name}: {why}"
    for k, p in params.items():
        if not p.optional and k not in args:
            if k not in exp.required:
                missing += 1
            if error is None:
                error = f"{exp.name}: missing argument '{k}'"
    slots = len(args) + missing
    if error is None:
        return 1.0, None
    return NAME_CREDIT + (1.0 - NAME_CREDIT) * (credit / slots if slots else 1.0), error


def _best_assignment(scores: list[list[float]]) -> float:
    """Largest sum of scores over one-to-one pairings of rows (expected) and columns (output)."""
    m, n = len(scores), len(scores[0])
    if m == 1:
        return max(scores[0])
    if n == 1:
        return max(row[0] for row in scores)
    if max(m, n) <= _EXHAUSTIVE_UP_TO:
        if m <= n:
            return max(
                sum(scores[i][j] for i, j in enumerate(p)) for p in itertools.permutations(range(n), m)
            )
        return max(sum(scores[i][j] for j, i in enumerate(p)) for p in itertools.permutations(range(m), n))
    cells = sorted(((s, i, j) for i, row in enumerate(scores) for j, s in enumerate(row)), reverse=True)
    used_i, used_j, total = set(), set(), 0.0
    for s, i, j in cells:
        if i not in used_i and j not in used_j:
            used_i.add(i)
            used_j.add(j)
            total += s
    return total


def match(text: str, sample: Any) -> MatchResult:
    """Compare an answer text with a sample's expected calls (a Sample, sample dict or ``prepare`` result)."""
    exp = _expected(sample)
    try:
        calls = parse(text, tool_names=exp.tool_names or None)
    except ToolCallParseError as e:
        if not exp.calls and not e.looks_like_call:
            return MatchResult(1.0, True, None, None)
        return MatchResult(0.0, False, None, f"unparseable: {e.reason}")
    expected = exp.calls
    if not expected:
        if not calls:
            return MatchResult(1.0, True, calls, None)
        return MatchResult(0.0, False, calls, f"expected no call, got {len(calls)}")
    if not calls:
        return MatchResult(0.0, False, calls, f"expected {len(expected)} call(s), got none")

    n, m = len(calls), len(expected)
    table: dict[tuple[int, int], tuple[float, str | None]] = {}

    def pair(i: int, j: int) -> tuple[float, str | None]:
        if (i, j) not in table:
            table[i, j] = _score_call(calls[j], expected[i])
        return table[i, j]

    error = None
    if n != m:
        error = f"expected {m} call(s), got {n}"
    else:  # BFCL's greedy order-free assignment: each expected call takes the first unused match
        used: set[int] = set()
        for i, e in enumerate(expected):
            j = next(
                (
                    j
                    for j, c in enumerate(calls)
                    if j not in used and c.name == e.name and pair(i, j)[1] is None
                ),
                None,
            )
            if j is None:
                free = [pair(i, j) for j in range(n) if j not in used]
                error = max(free, key=lambda t: t[0])[1] if free else "no call left to match"
                break
            used.add(j)
        else:
            return MatchResult(1.0, True, calls, None)
    total = _best_assignment([[pair(i, j)[0] for j in range(n)] for i in range(m)])
    score = FORMAT_CREDIT + (1.0 - FORMAT_CREDIT) * total / max(n, m)
    return MatchResult(min(score, NON_EXACT_CAP), False, calls, error)
