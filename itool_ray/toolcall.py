"""Tool-call text <-> FunctionCall.

Answer text looks like ``[get_weather(city="Paris", unit="celsius"), get_time(tz="CET")]``.
Model output is attacker-controlled: it is only ever parsed with ``ast`` and literal evaluation.

Parsing (``parse``)
-------------------
The text is prepared exactly as BFCL's ``default_decode_ast_prompting`` does (strip backticks, newlines
and spaces at both ends; add a missing ``[`` / ``]``), so ``f(a=1)`` is read as ``[f(a=1)]`` and the
empty text as ``[]``. The size (``max_chars``) and bracket nesting outside strings (``max_depth``) are
checked before ``ast.parse`` sees the text. Then the tree is walked by hand, accepting only:

- a list of calls whose callee is a name or a dotted name (``math.factorial`` -> ``"math.factorial"``);
- keyword arguments only (a positional argument or a repeated keyword is an error);
- values built from str, int (at most ``MAX_INT_BITS`` bits), finite float, bool, None, lists, tuples
  (kept as tuples, as BFCL does) and dicts with scalar keys, and a unary minus on a number.

Everything else is a ``ToolCallParseError``: bare names (BFCL would read ``unit=celsius`` as a string),
calls or expressions as values (BFCL evaluates ``BinOp``s!), sets, bytes, f-strings, ``...``, ``+x``
(BFCL reads it as ``-x``), attribute access on anything but a name. ``ToolCallParseError.looks_like_call``
tells whether the text was nonetheless a Python list of calls: BFCL would decode it and count it as a
call, which matters for "no call" (irrelevance) samples.

Tool names that are not dotted identifiers (ToolACE has ``Get Weather``) are read when passed in
``tool_names``: outside string literals, where a call name is expected, they are swapped for
placeholders before ``ast.parse`` and restored after. Argument names that are Python keywords
(``from="NYC"``, common in ToolACE; BFCL cannot decode them) are handled the same way, on a retry after a
syntax error. Argument names go through Python's identifier rules, so they are NFKC-normalised.

Formatting (``format_calls``) writes ``[name(k=v, k2=v2), other(x=1)]``: strings in double quotes
(quotes, backslashes, newlines and control characters escaped; other non-ASCII written as is),
``True``/``False``/``None``, ``repr`` for numbers (floats round-trip exactly), tuples as tuples. NaN and infinities have no literal and are rejected (``ValueError``), as ``parse`` rejects
``1e999``. ``parse(format_calls(calls)) == calls`` for calls built from JSON-like values.

Step segmentation (``segment``, ``first_step``), for the MCTS, on possibly unfinished text
-------------------------------------------------------------------------------------------
Steps tile the text from offset 0, without gaps; leading whitespace belongs to the first step.

- If the text does not begin (after whitespace) with ``[`` it is a *text* answer (prose, no call): one
  step of kind ``"text"``, complete only when the answer is complete. (``parse`` still reads a bare
  ``f(a=1)``; the MCTS just does not split it.)
- ``open``: ``[`` + call name + ``(`` -- complete when ``(`` is seen. ``[]`` (no call, in call syntax)
  is a single ``close`` step instead.
- ``arg``: one ``key=value`` per step, starting right after the previous step (so the space after a
  comma belongs to it). It is complete only when the delimiter after its value is seen, since ``12`` may
  still become ``123``: after ``,`` the step ends right after the comma; after ``)`` the step ends at
  the end of the value (trailing whitespace excluded) and the ``)`` starts the close step.
- ``close``: ``)`` then either ``]`` (the step ends the answer) or ``,`` + next call name + ``(``
  (closing a call and opening the next is ONE step). A trailing comma before ``]`` is allowed.
- Values are scanned by a small lexer: strings (single, double, triple quoted, with escapes), nested
  ``[]``/``()``/``{}`` -- commas, parentheses, ``=`` inside them do not end the argument.
- Text that leaves this grammar (a quote in a call name, ``a=,``, unbalanced brackets, ``=`` in a bare
  value ...) stops the segmentation: the rest is one tail that becomes a final ``text`` step only when
  the answer is complete.
- ``complete=True`` (the generation finished): the unfinished tail becomes a final step (of the kind in
  progress, or ``text``), and any text after the closing ``]`` becomes a final ``text`` step.

So the steps of any prefix of a text are a prefix of the steps of the text (only complete steps are
reported, and a step's extent is decided by text already seen). A boundary after a *last* argument is
provisional: ``[f(a=1`` followed by ``, b=2)`` or ``2)`` extends that argument's step; ``first_step``
then returns the remainder (``,`` or ``2``) as the next step, so MCTS prefixes stay consistent.
"""

from __future__ import annotations

import ast
import bisect
import keyword
import math
import re
import unicodedata
import warnings
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, Literal

__all__ = [
    "MAX_CHARS",
    "MAX_DEPTH",
    "MAX_INT_BITS",
    "FunctionCall",
    "Segmentation",
    "Step",
    "ToolCallParseError",
    "first_step",
    "format_calls",
    "is_dotted_name",
    "parse",
    "segment",
]

MAX_CHARS = 64 * 1024
MAX_DEPTH = 32
MAX_INT_BITS = 128


@dataclass(frozen=True)
class FunctionCall:
    name: str
    arguments: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "arguments": dict(self.arguments)}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> FunctionCall:
        return cls(name=d["name"], arguments=dict(d.get("arguments") or {}))


class ToolCallParseError(ValueError):
    """Text that is not a call list. ``looks_like_call``: it was a Python list of calls all the same
    (e.g. with a positional argument or a bare name as a value), which BFCL would decode as a call."""

    def __init__(self, reason: str, *, looks_like_call: bool = False):
        super().__init__(reason)
        self.reason = reason
        self.looks_like_call = looks_like_call


def is_dotted_name(name: str) -> bool:
    """``get_weather`` or ``math.factorial``: a name Python parses as a callee without help."""
    return bool(name) and all(p.isidentifier() and not keyword.iskeyword(p) for p in name.split("."))


# ---------------------------------------------------------------------------------------------------
# Lexing helpers shared by parse and segment
# ---------------------------------------------------------------------------------------------------

# Bodies of string literals, "unrolled" so matching is linear on any input.
_STRING_BODY = {
    '"': re.compile(r'[^"\\]*(?:\\.[^"\\]*)*', re.S),
    "'": re.compile(r"[^'\\]*(?:\\.[^'\\]*)*", re.S),
    '"""': re.compile(r'[^"\\]*(?:(?:\\.|"(?!""))[^"\\]*)*', re.S),
    "'''": re.compile(r"[^'\\]*(?:(?:\\.|'(?!''))[^'\\]*)*", re.S),
}


def _string_end(text: str, start: int) -> int | None:
    """``text[start]`` is a quote: the index just past the literal's closing quote, None if unterminated."""
    q = text[start]
    if text.startswith(q * 3, start):
        q = q * 3
    end = _STRING_BODY[q].match(text, start + len(q)).end()
    return end + len(q) if text.startswith(q, end) else None


_SCAN = re.compile(r"[\[\](){}#\"']")


def _scan(text: str) -> tuple[int, list[tuple[int, int]]]:
    """Maximum bracket depth outside strings and comments, and the spans of string literals."""
    depth = max_depth = pos = 0
    spans: list[tuple[int, int]] = []
    search = _SCAN.search
    while (m := search(text, pos)) is not None:
        c, s = m.group(), m.start()
        pos = s + 1
        if c in "([{":
            depth += 1
            max_depth = max(max_depth, depth)
        elif c in ")]}":
            depth -= 1
        elif c == "#":
            nl = text.find("\n", s)
            pos = len(text) if nl < 0 else nl
        else:
            end = _string_end(text, s)
            spans.append((s, len(text) if end is None else end))
            if end is None:
                break
            pos = end
    return max_depth, spans


# ---------------------------------------------------------------------------------------------------
# Parsing
# ---------------------------------------------------------------------------------------------------


def _substitute(text: str, pattern: re.Pattern[str], after: str, prefix: str) -> tuple[str, dict[str, str]]:
    """Swap matches of ``pattern`` outside string literals, preceded (past whitespace) by a character of
    ``after`` or the text start, for identifier placeholders; return the new text and placeholder -> match."""
    _, spans = _scan(text)
    span_starts = [a for a, _ in spans]
    # Python reads identifiers NFKC-normalised ("_\uff49tool_fn0_" is "_itool_fn0_"), so placeholders must
    # avoid that form of the text too.
    norm = unicodedata.normalize("NFKC", text)
    out, last, mapping, by_match = [], 0, {}, {}
    for m in pattern.finditer(text):
        s = m.start()
        k = bisect.bisect_right(span_starts, s) - 1
        if k >= 0 and s < spans[k][1]:
            continue  # inside a string literal
        k = s - 1
        while k >= 0 and text[k].isspace():
            k -= 1
        if k >= 0 and text[k] not in after:
            continue
        found = m.group()
        if found not in by_match:
            ph = f"{prefix}{len(by_match)}_"
            if ph in norm:  # a longer run of "_" than any in the text cannot occur in it
                ph += "_" * max(map(len, re.findall("_+", norm)))
            by_match[found] = ph
            mapping[ph] = found
        out.append(text[last:s])
        out.append(by_match[found])
        last = m.end()
    out.append(text[last:])
    return "".join(out), mapping


def _substitute_names(text: str, names: Iterable[str]) -> tuple[str, dict[str, str]]:
    """Non-identifier tool names in call position (after ``[`` or ``,``, before ``(``) -> placeholders."""
    odd = sorted({n for n in names if n and not is_dotted_name(n) and n in text}, key=len, reverse=True)
    if not odd:
        return text, {}
    pattern = re.compile("|".join(re.escape(n) for n in odd) + r"(?=\s*\()")
    return _substitute(text, pattern, "[,", "_itool_fn")


# A Python keyword used as an argument name (``from="NYC"``): after "(" or ",", before "=" (not "==").
_KEYWORD_ARG = re.compile(r"(?<![\w.])(?:" + "|".join(keyword.kwlist) + r")(?=\s*=(?!=))")


_NODE_WORDS = {
    ast.Name: "a bare name (quote strings)",
    ast.Call: "a call used as a value",
    ast.Attribute: "attribute access",
    ast.BinOp: "an expression",
    ast.BoolOp: "an expression",
    ast.Compare: "a comparison",
    ast.Lambda: "a lambda",
    ast.JoinedStr: "an f-string",
    ast.Set: "a set",
    ast.Subscript: "a subscript",
    ast.Starred: "unpacking",
    ast.IfExp: "an expression",
    ast.NamedExpr: "an assignment expression",
    ast.ListComp: "a comprehension",
    ast.DictComp: "a comprehension",
    ast.SetComp: "a comprehension",
    ast.GeneratorExp: "a comprehension",
}


def _describe(node: ast.AST) -> str:
    return _NODE_WORDS.get(type(node), type(node).__name__)


def _literal(node: ast.AST, depth: int, max_depth: int) -> Any:
    if depth > max_depth:
        raise ToolCallParseError(f"values nested deeper than {max_depth}")
    t = type(node)
    if t is ast.Constant:
        v = node.value
        tv = type(v)
        if tv is str or tv is bool or v is None:
            return v
        if tv is int:
            if v.bit_length() > MAX_INT_BITS:
                raise ToolCallParseError(f"integer literal wider than {MAX_INT_BITS} bits")
            return v
        if tv is float:
            if not math.isfinite(v):
                raise ToolCallParseError("non-finite float literal")
            return v
        raise ToolCallParseError(f"unsupported literal of type {tv.__name__}")
    if t is ast.List:
        return [_literal(e, depth + 1, max_depth) for e in node.elts]
    if t is ast.Tuple:
        return tuple(_literal(e, depth + 1, max_depth) for e in node.elts)
    if t is ast.Dict:
        out = {}
        for k, v in zip(node.keys, node.values, strict=True):
            if k is None:
                raise ToolCallParseError("dict unpacking (**) in a value")
            key = _literal(k, depth + 1, max_depth)
            if isinstance(key, (list, tuple, dict)):
                raise ToolCallParseError("dict key must be a scalar")
            out[key] = _literal(v, depth + 1, max_depth)
        return out
    if t is ast.UnaryOp and type(node.op) is ast.USub:
        operand = node.operand
        if type(operand) is ast.Constant and type(operand.value) in (int, float):
            return -_literal(operand, depth + 1, max_depth)
        raise ToolCallParseError("unary minus on something other than a number")
    raise ToolCallParseError(f"unsupported value: {_describe(node)}")


def _callee(func: ast.AST) -> str | None:
    parts = []
    while type(func) is ast.Attribute:
        parts.append(func.attr)
        func = func.value
    if type(func) is not ast.Name:
        return None
    parts.append(func.id)
    return ".".join(reversed(parts))


def _ast_parse(src: str) -> ast.Expression:
    # "C:\path" (invalid escape) and "1if" (invalid decimal literal) warn; a warnings filter set to "error"
    # would turn that into a SyntaxError, so the outcome must not depend on the caller's filters.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return ast.parse(src, mode="eval")


def parse(
    text: str,
    *,
    tool_names: Iterable[str] | None = None,
    max_chars: int = MAX_CHARS,
    max_depth: int = MAX_DEPTH,
) -> list[FunctionCall]:
    """Read a call list; raise ToolCallParseError (only) when ``text`` is not one. See the module doc."""
    if not isinstance(text, str):
        raise ToolCallParseError(f"expected a string, got {type(text).__name__}")
    if len(text) > max_chars:
        raise ToolCallParseError(f"text longer than {max_chars} characters")
    src = text.strip("`\n ")
    if not src.startswith("["):
        src = "[" + src
    if not src.endswith("]"):
        src = src + "]"
    mapping: dict[str, str] = {}
    if tool_names is not None:
        src, mapping = _substitute_names(src, tool_names)
    if src.count("(") + src.count("[") + src.count("{") > max_depth and _scan(src)[0] > max_depth:
        raise ToolCallParseError(f"brackets nested deeper than {max_depth}")
    try:
        tree = _ast_parse(src)
    except (SyntaxError, ValueError, MemoryError, RecursionError) as e:
        # Argument names that are Python keywords (ToolACE has ``from=``) are a syntax error: retry once
        # with placeholders for them.
        src, kw_mapping = (
            _substitute(src, _KEYWORD_ARG, "(,", "_itool_kw") if type(e) is SyntaxError else (src, {})
        )
        tree = None
        if kw_mapping:
            try:
                tree = _ast_parse(src)
                mapping.update(kw_mapping)
            except (SyntaxError, ValueError, MemoryError, RecursionError):
                pass
        if tree is None:
            msg = getattr(e, "msg", None) or str(e) or type(e).__name__
            raise ToolCallParseError(f"not Python call syntax: {msg}") from None
    body = tree.body
    if type(body) is not ast.List:
        raise ToolCallParseError("not a list of calls")
    looks_like_call = bool(body.elts) and all(type(e) is ast.Call for e in body.elts)
    calls = []
    try:
        for i, node in enumerate(body.elts):
            if type(node) is not ast.Call:
                raise ToolCallParseError(f"item {i} is not a call but {_describe(node)}")
            name = _callee(node.func)
            if name is None:
                raise ToolCallParseError(f"call {i}: the callee is not a (dotted) name")
            name = mapping.get(name, name)
            if node.args:
                raise ToolCallParseError(f"call {i} ({name}): positional argument; use key=value")
            args = {}
            for kw in node.keywords:
                if kw.arg is None:
                    raise ToolCallParseError(f"call {i} ({name}): **unpacking")
                key = mapping.get(kw.arg, kw.arg)
                if key in args:
                    raise ToolCallParseError(f"call {i} ({name}): argument '{key}' repeated")
                args[key] = _literal(kw.value, 1, max_depth)
            calls.append(FunctionCall(name, args))
    except ToolCallParseError as e:
        raise ToolCallParseError(e.reason, looks_like_call=looks_like_call) from None
    return calls


# ---------------------------------------------------------------------------------------------------
# Formatting
# ---------------------------------------------------------------------------------------------------

_BAD_NAME_CHARS = frozenset("\"'()[]{},=\n\r")


def _quote(s: str) -> str:
    out = []
    for ch in s:
        if ch == '"':
            out.append('\\"')
        elif ch == "\\":
            out.append("\\\\")
        elif ch == "\n":
            out.append("\\n")
        elif ch < " " or ch == "\x7f" or "\ud800" <= ch <= "\udfff":
            out.append(f"\\x{ord(ch):02x}" if ord(ch) < 0x100 else f"\\u{ord(ch):04x}")
        else:
            out.append(ch)
    return '"' + "".join(out) + '"'


def _format_value(v: Any) -> str:
    t = type(v)
    if t is str:
        if v.isprintable() and '"' not in v and "\\" not in v:
            return '"' + v + '"'
        return _quote(v)
    if v is None or t is bool or t is int:
        return repr(v)
    if t is float:
        if not math.isfinite(v):
            raise ValueError(f"{v!r} has no literal form; tool-call arguments must be finite numbers")
        return repr(v)
    if t is list:
        return "[" + ", ".join(_format_value(x) for x in v) + "]"
    if t is tuple:
        if len(v) == 1:
            return "(" + _format_value(v[0]) + ",)"
        return "(" + ", ".join(_format_value(x) for x in v) + ")"
    if t is dict:
        return "{" + ", ".join(f"{_format_value(k)}: {_format_value(x)}" for k, x in v.items()) + "}"
    raise ValueError(f"cannot write a {t.__name__} as a tool-call argument")


def format_calls(calls: Iterable[FunctionCall]) -> str:
    """``[name(k=v, k2=v2), other(x=1)]``; ``[]`` for no calls. ValueError for what parse could not read back."""
    parts = []
    for c in calls:
        if not c.name or any(ch in _BAD_NAME_CHARS for ch in c.name):
            raise ValueError(f"function name {c.name!r} cannot be written in call syntax")
        args = []
        for k, v in c.arguments.items():
            if not isinstance(k, str) or not k.isidentifier():
                raise ValueError(f"argument name {k!r} of {c.name} is not a Python identifier")
            args.append(f"{k}={_format_value(v)}")
        parts.append(f"{c.name}({', '.join(args)})")
    return "[" + ", ".join(parts) + "]"


# ---------------------------------------------------------------------------------------------------
# Step segmentation
# ---------------------------------------------------------------------------------------------------

StepKind = Literal["open", "arg", "close", "text"]


@dataclass(frozen=True)
class Step:
    start: int
    end: int
    kind: StepKind
    text: str
    ends_answer: bool = False


@dataclass(frozen=True)
class Segmentation:
    steps: list[Step]
    rest: str  # the unfinished tail (text after the last complete step)
    ended: bool  # the answer is over: the call list was closed, or the text is complete
    malformed: bool  # the text left the call grammar (the tail is not segmented further)


_WS = re.compile(r"\s*")
_NAME = re.compile(r"[^\"'\[\]{}()=,\n]*")
_KEY = re.compile(r"[^\W\d]\w*")
_VALUE_SCAN = re.compile(r"[\[\](){}\"',=]")
_CLOSER = {"(": ")", "[": "]", "{": "}"}

_INCOMPLETE, _MALFORMED = -1, -2


def _scan_name(text: str, i: int) -> int:
    """From ``i`` (after ``[`` or ``,`` and whitespace): index past the ``(`` ending a call name."""
    e = _NAME.match(text, i).end()
    if e == len(text):
        return _INCOMPLETE
    if text[e] != "(" or not text[i:e].strip():
        return _MALFORMED
    return e + 1


def _scan_value(text: str, i: int) -> int:
    """From ``i`` (the value's first character): index of the ``,`` or ``)`` that ends the value."""
    stack: list[str] = []
    pos = i
    while (m := _VALUE_SCAN.search(text, pos)) is not None:
        c, s = m.group(), m.start()
        pos = s + 1
        if c == '"' or c == "'":
            end = _string_end(text, s)
            if end is None:
                return _INCOMPLETE
            pos = end
        elif c in "([{":
            stack.append(_CLOSER[c])
        elif stack:
            if c in ")]}":
                if stack.pop() != c:
                    return _MALFORMED
        elif c == "," or c == ")":
            return s
        else:  # "]", "}" or "=" at the top level of a value
            return _MALFORMED
    return _INCOMPLETE


def segment(text: str, *, complete: bool = False) -> Segmentation:
    """Split an (unfinished) answer into steps; see the module doc for the rules."""
    steps: list[Step] = []
    n = len(text)

    def add(start: int, end: int, kind: StepKind, ends: bool = False) -> None:
        steps.append(Step(start, end, kind, text[start:end], ends))

    def finish(start: int, kind: StepKind, malformed: bool = False) -> Segmentation:
        if complete and start < n:
            add(start, n, "text" if malformed else kind, True)
            return Segmentation(steps, "", True, malformed)
        return Segmentation(steps, text[start:], complete, malformed)

    i = _WS.match(text).end()
    if i == n or text[i] != "[":
        return finish(0, "text")

    start = 0
    j = _WS.match(text, i + 1).end()
    if j == n:
        return finish(start, "open")
    if text[j] == "]":
        add(start, j + 1, "close", True)
        return _after_end(text, j + 1, steps, complete)
    p = _scan_name(text, j)
    if p < 0:
        return finish(start, "open", p == _MALFORMED)
    add(start, p, "open")
    start = p
    while True:  # inside a call's parentheses; ``start`` begins the next step
        q = _WS.match(text, start).end()
        if q == n:
            return finish(start, "arg")
        if text[q] != ")":
            m = _KEY.match(text, q)
            if m is None:
                return finish(start, "arg", True)
            e = _WS.match(text, m.end()).end()
            if e == n:
                return finish(start, "arg")
            if text[e] != "=" or text.startswith("==", e):
                return finish(start, "arg", True)
            v = _WS.match(text, e + 1).end()
            d = _scan_value(text, v) if v < n else _INCOMPLETE
            if d < 0:
                return finish(start, "arg", d == _MALFORMED)
            value_end = v + len(text[v:d].rstrip())
            if value_end == v:
                return finish(start, "arg", True)
            if text[d] == ",":
                add(start, d + 1, "arg")
                start = d + 1
                continue
            add(start, value_end, "arg")
            start, q = value_end, d
        # close step: ")" then "]" or "," + next name + "("
        k = _WS.match(text, q + 1).end()
        if k == n:
            return finish(start, "close")
        if text[k] == "]":
            add(start, k + 1, "close", True)
            return _after_end(text, k + 1, steps, complete)
        if text[k] != ",":
            return finish(start, "close", True)
        k = _WS.match(text, k + 1).end()
        if k == n:
            return finish(start, "close")
        if text[k] == "]":
            add(start, k + 1, "close", True)
            return _after_end(text, k + 1, steps, complete)
        p = _scan_name(text, k)
        if p < 0:
            return finish(start, "close", p == _MALFORMED)
        add(start, p, "close")
        start = p


def _after_end(text: str, end: int, steps: list[Step], complete: bool) -> Segmentation:
    if complete and end < len(text):
        steps.append(Step(end, len(text), "text", text[end:], True))
        return Segmentation(steps, "", True, False)
    return Segmentation(steps, text[end:], True, False)


def first_step(prefix: str, continuation: str, *, complete: bool) -> tuple[str, bool] | None:
    """The first step ``continuation`` adds after ``prefix`` (which ends at a step boundary), and
    whether that step ends the answer. None when no step is complete yet (e.g. cut by a token budget);
    ``("", True)`` when the answer is complete and adds nothing.
    """
    cut = len(prefix)
    seg = segment(prefix + continuation, complete=complete)
    for st in seg.steps:
        if st.end > cut:
            return (prefix + continuation)[cut : st.end], st.ends_answer
    return ("", True) if complete else None
