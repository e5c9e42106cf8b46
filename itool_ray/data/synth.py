"""Synthetic ToolACE-style tool-use samples, so the whole system runs with no download.

``generate(n, seed=, split=)`` returns Samples in six categories:

- ``simple``: one tool shown, one call.
- ``multiple``: 2-4 tools shown (half the time from the same domain), one call.
- ``parallel``: one tool called 2-3 times, either from a listed slot ("weather in Paris and Rome")
  or from separate sentences joined by a connector.
- ``parallel_multiple``: 2-3 different tools (sometimes one of them twice), one sentence each.
- ``irrelevance``: the shown tools cannot serve the request (another domain's tool, or chit-chat);
  the answer is ``[]``. The tag ``unserved:<tool>`` names what the request asked for.
- ``reasoning``: one call whose argument needs a step, tagged ``reasoning:<kind>``:
  ``arithmetic`` (people: "me and two kids" -> 3, "two adults and one child" -> 3; items:
  "4 packs of 6" -> 24), ``unit`` (hours -> minutes, minutes -> seconds, km -> meters, liters -> ml,
  kg -> grams; the tool's parameter names its unit), ``date`` ("Today is 2026-03-14." then
  "tomorrow" / "the day after tomorrow" / "in N days" / "a week from today"), ``context``
  ("I'm choosing between Oslo, Rome and Lima." then "the second one" / "the last one").
  Each kind keeps a few fixed phrasings with varied numbers, so a small model can learn it.

Splits: ``train`` and ``heldout`` use disjoint tools (about a quarter of each domain is held out) and
disjoint request phrasings (tool templates, connectors, chit-chat). The reasoning expressions above are
shared: the held-out split asks whether a learnt argument skill carries over to unseen tools and requests.

Output is a function of ``(n, seed, split, categories, weights)`` only: one ``random.Random`` seeded
from a string, no set iteration, no ``hash()``. Categories follow a smooth weighted round-robin, so
every prefix of the output has the requested mix (within one sample per category) and
``generate(n)`` is a prefix of ``generate(m)`` for ``m > n``.
"""

from __future__ import annotations

import copy
import json
import random
from collections.abc import Callable, Iterator
from datetime import date, timedelta
from typing import Any

from itool_ray.data.difficulty import difficulty_level, structural_score
from itool_ray.data.schema import CATEGORIES, Sample
from itool_ray.data.synth_tools import (
    CHITCHAT,
    CITIES,
    CONNECTORS,
    ENTITY_POOLS,
    GROCERIES,
    LIST_POOLS,
    OVERLAPPING_DOMAINS,
    PEOPLE_NAMES,
    SPLITS,
    STREETS,
    Param,
    Template,
    Tool,
    tools_in,
)

SOURCE = "synthetic"
DEFAULT_WEIGHTS: dict[str, float] = {
    "simple": 0.2,
    "multiple": 0.2,
    "parallel": 0.15,
    "parallel_multiple": 0.15,
    "irrelevance": 0.1,
    "reasoning": 0.2,
}
REASONING_KINDS = ("arithmetic", "unit", "date", "context")
_REASONING_POOLS = {
    "arithmetic": ("people", "units"),
    "unit": ("minutes", "seconds", "meters", "ml", "grams"),
    "date": ("date",),
    "context": tuple(ENTITY_POOLS),
}

_MAIL_DOMAINS = ("example.com", "mail.test", "corp.example", "inbox.test")
_BASE_DATE = date(2026, 1, 5)
_WORDS = ("zero", "one", "two", "three", "four", "five", "six")
_ORDINALS = ("first", "second", "third", "fourth")
_CONTEXT_FRAMES = ("I'm choosing between {}.", "My options are {}.", "The candidates are {}.")


# --- values and how a slot words them ---------------------------------------------------------------------
def _money(x: float) -> str:
    return f"${x:.2f}" if x != int(x) else f"${int(x)}"


def _join(words: list[str]) -> str:
    return words[0] if len(words) == 1 else ", ".join(words[:-1]) + " and " + words[-1]


def _plural(x: float, unit: str) -> str:
    return f"{x:g} {unit}" if x == 1 else f"{x:g} {unit}s"


def _random_date(rng: random.Random) -> date:
    return _BASE_DATE + timedelta(days=rng.randrange(350))


_GEN: dict[str, Callable[[random.Random, Param], Any]] = {
    "date": lambda rng, p: _random_date(rng).isoformat(),
    "time": lambda rng, p: f"{rng.randint(7, 21):02d}:{rng.choice((0, 15, 30, 45)):02d}",
    "count": lambda rng, p: rng.randint(p.lo, p.hi),
    "people": lambda rng, p: rng.randint(2, 8),
    "units": lambda rng, p: rng.randint(2, 12),
    "minutes": lambda rng, p: rng.choice((15, 20, 25, 30, 40, 45, 50, 75, 90, 120)),
    "seconds": lambda rng, p: rng.choice((20, 30, 45, 75, 90, 100, 150, 200)),
    "meters": lambda rng, p: rng.choice((200, 300, 400, 600, 800, 1200, 2000, 3000, 5000)),
    "ml": lambda rng, p: rng.choice((150, 200, 250, 330, 400, 500, 750)),
    "grams": lambda rng, p: rng.choice((30, 50, 80, 100, 120, 150, 200, 300)),
    "price": lambda rng, p: rng.choice((10, 12.5, 15, 20, 25, 30, 37.5, 40, 50, 60, 75, 84.5, 100, 150, 250)),
    "amount": lambda rng, p: rng.choice((20, 50, 75, 99.5, 120, 250, 500, 1000, 1500, 2500)),
    "loan": lambda rng, p: rng.choice((5000, 10000, 15000, 25000, 40000, 150000, 250000, 320000)),
    "rate": lambda rng, p: rng.choice((2.5, 3, 3.75, 4.2, 4.9, 5.5, 6, 7.25)),
    "temperature": lambda rng, p: rng.choice((16, 17, 18, 19, 19.5, 20, 20.5, 21, 22, 23, 24)),
    "brightness": lambda rng, p: rng.randrange(10, 101, 10),
    "tip": lambda rng, p: rng.choice((10, 12, 15, 18, 20)),
    "steps": lambda rng, p: rng.randrange(5000, 15001, 500),
    "year": lambda rng, p: rng.randint(1990, 2025),
    "order_id": lambda rng, p: f"ORD-{rng.randint(10000, 99999)}",
    "ident": lambda rng, p: f"{p.noun}-{rng.randint(1000, 99999)}",  # p.noun: the id's prefix
    "email": lambda rng, p: f"{rng.choice(PEOPLE_NAMES).lower()}@{rng.choice(_MAIL_DOMAINS)}",
    "address": lambda rng, p: {
        "street": rng.choice(STREETS),
        "city": rng.choice(CITIES),
        "postal_code": str(rng.randint(10000, 99999)),
    },
    "street_address": lambda rng, p: f"{rng.choice(STREETS)}, {rng.choice(CITIES)}",
    "grocery_list": lambda rng, p: [
        {"name": g, "quantity": rng.randint(2, 6)} for g in rng.sample(GROCERIES, rng.choice((2, 2, 3)))
    ],
}

_SAY: dict[str, Callable[[Param, Any], str]] = {
    "date": lambda p, v: f"on {v}",
    "time": lambda p, v: f"at {v}",
    "count": lambda p, v: f"{v} {p.noun}".strip(),
    "people": lambda p, v: f"{v} people",
    "minutes": lambda p, v: f"{v} minutes",
    "seconds": lambda p, v: f"{v} seconds",
    "meters": lambda p, v: f"{v} meters",
    "ml": lambda p, v: f"{v} ml",
    "grams": lambda p, v: f"{v} grams",
    "price": lambda p, v: _money(v),
    "amount": lambda p, v: f"{v:g}",
    "loan": lambda p, v: f"${v}",
    "rate": lambda p, v: f"{v:g}%",
    "temperature": lambda p, v: f"{v:g} degrees",
    "brightness": lambda p, v: f"{v}%",
    "tip": lambda p, v: f"a {v}% tip",
    "steps": lambda p, v: f"{v} steps",
    "address": lambda p, v: f"{v['street']}, {v['city']} {v['postal_code']}",
    "grocery_list": lambda p, v: _join([f"{g['quantity']} {g['name']}" for g in v]),
}


def _value(rng: random.Random, p: Param, avoid: set[str]) -> Any:
    """A value for ``p``. Entity values (cities, people, ...) already in ``avoid`` are not drawn again, so
    one request never names the same city twice (origin and destination, or two listed options)."""
    if p.type == "boolean":
        return rng.random() < 0.5
    entity = p.pool in ENTITY_POOLS
    if p.type == "array" and (p.enum or p.pool in LIST_POOLS):
        choices = p.enum or LIST_POOLS[p.pool]
        k = rng.choice((2, 2, 3))
        fresh = [c for c in choices if not entity or c not in avoid]
        items = rng.sample(fresh if len(fresh) >= k else list(choices), k)
        if entity:
            avoid.update(items)
        return items
    if p.enum:
        return rng.choice(p.enum)
    if p.pool in LIST_POOLS:
        v = rng.choice(LIST_POOLS[p.pool])
        while entity and v in avoid:  # entity pools are much larger than one request's values
            v = rng.choice(LIST_POOLS[p.pool])
        if entity:
            avoid.add(v)
        return v
    return _GEN[p.pool](rng, p)


def _say(rng: random.Random, p: Param, v: Any) -> str:
    if p.say is not None:
        if p.type == "array":
            return _join([rng.choice(p.say[x]) for x in v])
        return rng.choice(p.say[v])
    if p.type == "array" and p.pool in LIST_POOLS:
        return _join(v)
    say = _SAY.get(p.pool or "")
    return say(p, v) if say else str(v)


# --- reasoning: (value, slot text, preamble) -------------------------------------------------------------
def _reason(rng: random.Random, kind: str, p: Param, avoid: set[str]) -> tuple[Any, str, str]:
    if kind == "arithmetic" and p.pool == "people":
        form = rng.randrange(3)
        if form == 0:
            k = rng.randint(1, 5)
            return k + 1, "me and a friend" if k == 1 else f"me and {_WORDS[k]} friends", ""
        if form == 1:
            k = rng.randint(2, 4)
            return k + 1, f"me and {_WORDS[k]} kids", ""
        a, b = rng.randint(1, 4), rng.randint(1, 3)
        adults = "one adult" if a == 1 else f"{_WORDS[a]} adults"
        children = "one child" if b == 1 else f"{_WORDS[b]} children"
        return a + b, f"{adults} and {children}", ""
    if kind == "arithmetic" and p.pool == "units":
        a, b = rng.randint(2, 6), rng.choice((2, 3, 4, 5, 6, 8, 10, 12))
        return a * b, f"{a} {rng.choice(('packs', 'boxes'))} of {b}", ""
    if kind == "unit":
        factor, unit, amounts = {
            "minutes": (60, "hour", (1, 1.5, 2, 2.5, 3, 4)),
            "seconds": (60, "minute", (1, 1.5, 2, 2.5, 3, 4, 5, 10)),
            "meters": (1000, "km", (0.5, 1, 1.5, 2, 2.5, 3, 5, 10)),
            "ml": (1000, "liter", (0.5, 1, 1.5, 2, 2.5)),
            "grams": (1000, "kg", (0.1, 0.2, 0.25, 0.5, 1, 1.5, 2)),
        }[p.pool]
        x = rng.choice(amounts)
        return round(x * factor), f"{x:g} {unit}" if unit in ("km", "kg") else _plural(x, unit), ""
    if kind == "date":
        today = _random_date(rng)
        days, text = rng.choice(
            ((1, "tomorrow"), (2, "the day after tomorrow"), (0, ""), (7, "a week from today"))
        )
        if not days:
            days = rng.randint(3, 9)
            text = f"in {days} days"
        return (today + timedelta(days=days)).isoformat(), text, f"Today is {today.isoformat()}."
    if kind == "context":
        k = rng.choice((2, 3, 3, 4))
        options = rng.sample([c for c in ENTITY_POOLS[p.pool] if c not in avoid], k)
        avoid.update(options)
        idx = rng.choice([*range(min(k - 1, 3)), k - 1])
        ordinal = "last" if idx == k - 1 and rng.random() < 0.5 or idx == 3 else _ORDINALS[idx]
        return options[idx], f"the {ordinal} one", rng.choice(_CONTEXT_FRAMES).format(_join(options))
    raise ValueError(f"no {kind!r} reasoning for parameter {p.name!r} (pool {p.pool!r})")


# --- one request ---------------------------------------------------------------------------------------
def _render(
    rng: random.Random,
    tool: Tool,
    tp: Template,
    avoid: set[str] | None = None,
    over: dict[str, tuple[Any, str]] | None = None,
) -> tuple[str, dict[str, Any]]:
    """Request text and call arguments (in schema order) for one template."""
    avoid = set() if avoid is None else avoid
    values: dict[str, Any] = dict(tp.fixed)
    texts: dict[str, str] = {}
    for name, (v, text) in (over or {}).items():
        values[name], texts[name] = v, text
    for slot in tp.slots:
        if slot not in texts:
            p = tool.param(slot)
            values[slot] = _value(rng, p, avoid)
            texts[slot] = _say(rng, p, values[slot])
    text = "".join(lit + (texts[slot] if slot is not None else "") for lit, slot in tp.parts)
    return text, {p.name: values[p.name] for p in tool.params if p.name in values}


def _join_requests(rng: random.Random, requests: list[tuple[Template, str]], split: str) -> str:
    """One message from several requests: distinct connectors, first word lower-cased where safe."""
    connectors = rng.sample(CONNECTORS[split], len(requests) - 1)
    out = [requests[0][1]]
    for (tp, text), connector in zip(requests[1:], connectors, strict=True):
        starts_with_text = tp.parts[0][0] != "" or tp.parts[0][1] is None
        word = text.split(" ", 1)[0]
        if starts_with_text and word != "I" and not word.startswith("I'") and not word.isupper():
            text = text[0].lower() + text[1:]
        out.append(connector + text)
    return " ".join(out)


def _accepted(tool: Tool, args: dict[str, Any]) -> tuple[dict[str, list[Any]], bool]:
    """BFCL-style accepted values; True when a defaulted optional argument may be given or left out."""
    out: dict[str, list[Any]] = {}
    alternatives = False
    for p in tool.params:
        if p.name in args:
            v = args[p.name]
            same = p.default is not None and type(v) is type(p.default) and v == p.default
            out[p.name] = [v, ""] if same else [v]
            alternatives |= same
        elif p.default is not None:
            out[p.name] = [p.default, ""]
            alternatives = True
    return out, alternatives


_Call = tuple[Tool, dict[str, Any]]
_Draft = tuple[list[Tool], str, list[_Call], list[str]]  # shown tools, request, calls, extra tags


class _Generator:
    def __init__(self, split: str, rng: random.Random, tools: tuple[Tool, ...]):
        self.split = split
        self.rng = rng
        self.tools = tools
        self.by_domain: dict[str, list[Tool]] = {}
        for t in self.tools:
            self.by_domain.setdefault(t.domain, []).append(t)
        self.fan_tools = [t for t in self.tools if t.fan and any(t.fan in tp.slots for tp in t.templates)]
        self.schema_json = {t.name: json.dumps(t.schema()) for t in self.tools}
        # (tool, template, parameter) triples each reasoning kind can rewrite
        self.reasoning: dict[str, list[tuple[Tool, Template, Param]]] = {}
        for kind, pools in _REASONING_POOLS.items():
            triples = [
                (t, tp, t.param(s))
                for t in self.tools
                for tp in t.templates
                for s in tp.slots
                if t.param(s).pool in pools and t.param(s).type != "array"
            ]
            if triples:
                self.reasoning[kind] = triples

    # -- helpers
    def _template(self, tool: Tool) -> Template:
        return self.rng.choice(tool.templates)

    def _distractors(self, chosen: list[Tool], k: int, same_domain: bool) -> list[Tool]:
        names = {t.name for t in chosen}
        pool = self.by_domain[chosen[0].domain] if same_domain else self.tools
        pool = [t for t in pool if t.name not in names]
        if len(pool) < k:
            pool = [t for t in self.tools if t.name not in names]
        return self.rng.sample(pool, k)

    def _shown(self, tools: list[Tool]) -> list[Tool]:
        tools = list({t.name: t for t in tools}.values())  # drop repeats, keep first-seen order
        self.rng.shuffle(tools)
        return tools

    # -- categories: each returns (shown tools, text, calls [(tool, args)], tags)
    def simple(self) -> _Draft:
        tool = self.rng.choice(self.tools)
        text, args = _render(self.rng, tool, self._template(tool))
        return [tool], text, [(tool, args)], []

    def multiple(self) -> _Draft:
        tool = self.rng.choice(self.tools)
        k = self.rng.choices((1, 2, 3), weights=(0.65, 0.25, 0.1))[0]  # short prompts: mostly 2 tools
        distractors = self._distractors([tool], k, same_domain=self.rng.random() < 0.5)
        text, args = _render(self.rng, tool, self._template(tool))
        return self._shown([tool, *distractors]), text, [(tool, args)], []

    def parallel(self) -> _Draft:
        rng = self.rng
        k = rng.choice((2, 2, 3))
        if rng.random() < 0.6:
            tool = rng.choice(self.fan_tools)
            tp = rng.choice([tp for tp in tool.templates if tool.fan in tp.slots])
            fan = tool.param(tool.fan)
            avoid: set[str] = set()
            fan_values = [_value(rng, fan, avoid) for _ in range(k)]
            if len(set(fan_values)) < k:  # generated ids can collide
                return self.parallel()
            text, args = _render(rng, tool, tp, avoid, over={fan.name: (fan_values[0], _join(fan_values))})
            calls = [(tool, {**copy.deepcopy(args), fan.name: v}) for v in fan_values]
            return [tool], text, calls, []
        tool = rng.choice(self.tools)
        requests: list[tuple[Template, str]] = []
        calls: list[_Call] = []
        avoid: set[str] = set()
        for _ in range(20 * k):  # a tool with few distinct requests may not give k different calls
            tp = self._template(tool)
            text, args = _render(rng, tool, tp, avoid)
            if any(args == other for _, other in calls):
                continue
            requests.append((tp, text))
            calls.append((tool, args))
            if len(calls) == k:
                return [tool], _join_requests(rng, requests, self.split), calls, []
        return self.parallel()

    def parallel_multiple(self) -> _Draft:
        rng = self.rng
        tools = rng.sample(self.tools, rng.choice((2, 2, 2, 3)))
        if len(tools) == 2 and rng.random() < 0.25:
            tools.insert(rng.randrange(3), rng.choice(tools))
        requests: list[tuple[Template, str]] = []
        calls: list[_Call] = []
        avoid: set[str] = set()
        for tool in tools:
            tp = self._template(tool)
            text, args = _render(rng, tool, tp, avoid)
            requests.append((tp, text))
            calls.append((tool, args))
        if any(calls[i] == calls[j] for i in range(len(calls)) for j in range(i)):
            return self.parallel_multiple()
        shown = list(tools)
        if rng.random() < 0.2:
            shown += self._distractors(tools, 1, same_domain=False)
        return self._shown(shown), _join_requests(rng, requests, self.split), calls, []

    def irrelevance(self) -> _Draft:
        rng = self.rng
        k = rng.choice((1, 1, 2, 2, 3))
        if rng.random() < 0.3:
            return rng.sample(self.tools, k), rng.choice(CHITCHAT[self.split]), [], ["unserved:chitchat"]
        wanted = rng.choice(self.tools)
        usable = [
            t
            for t in self.tools
            if t.domain != wanted.domain and frozenset((t.domain, wanted.domain)) not in OVERLAPPING_DOMAINS
        ]
        text, _ = _render(rng, wanted, self._template(wanted))
        return rng.sample(usable, k), text, [], [f"unserved:{wanted.name}"]

    def reasoning_sample(self) -> _Draft:
        rng = self.rng
        kind = rng.choice(sorted(self.reasoning))
        tool, tp, p = rng.choice(self.reasoning[kind])
        avoid: set[str] = set()
        value, slot_text, preamble = _reason(rng, kind, p, avoid)
        text, args = _render(rng, tool, tp, avoid, over={p.name: (value, slot_text)})
        shown = [tool]
        if rng.random() < 0.25:
            shown += self._distractors(shown, 1, same_domain=False)
        return (
            self._shown(shown),
            f"{preamble} {text}" if preamble else text,
            [(tool, args)],
            [f"reasoning:{kind}"],
        )


def _schedule(weights: dict[str, float]) -> Iterator[str]:
    """Smooth weighted round-robin: deterministic, interleaved, exact mix in every prefix (±1)."""
    names = [c for c in weights if weights[c] > 0]
    total = sum(weights[c] for c in names)
    current = dict.fromkeys(names, 0.0)
    while True:
        for c in names:
            current[c] += weights[c]
        best = max(names, key=lambda c: current[c])
        current[best] -= total
        yield best


def _resolve_weights(categories: list[str] | None, weights: dict[str, float] | None) -> dict[str, float]:
    w = dict(DEFAULT_WEIGHTS if weights is None else weights)
    unknown = [c for c in [*w, *(categories or [])] if c not in CATEGORIES]
    if unknown:
        raise ValueError(f"unknown categories {unknown}; the generator makes {list(CATEGORIES)}")
    if any(v < 0 for v in w.values()):
        raise ValueError(f"category weights must be >= 0, got {w}")
    if categories is not None:
        w = {c: w.get(c, DEFAULT_WEIGHTS[c]) for c in categories}
    w = {c: w[c] for c in CATEGORIES if w.get(c, 0) > 0}  # fixed order: output must not depend on dict order
    if not w:
        raise ValueError("no category has a positive weight")
    return w


TOOL_SETS = ("fixed", "procedural", "mixed")


def catalogue_tools(split: str, tools: str = "fixed") -> tuple[Tool, ...]:
    """The tools of one split: the hand-written catalogue (``fixed``), the procedural one, or both."""
    from itool_ray.data.synth_procedural import procedural_tools

    if tools not in TOOL_SETS:
        raise ValueError(f"unknown tool set {tools!r}; expected one of {TOOL_SETS}")
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; expected one of {SPLITS}")
    out = (tools_in(split) if tools != "procedural" else ()) + (
        procedural_tools(split) if tools != "fixed" else ()
    )
    if not out:
        raise ValueError(f"split {split!r} has no {tools} tools: the dev split is procedural (tools=mixed)")
    return out


def tool_catalogue(split: str = "train", tools: str = "fixed") -> list[dict[str, Any]]:
    """The OpenAI-style function schemas of one split (``train``, ``dev`` or ``heldout``)."""
    return [t.schema() for t in catalogue_tools(split, tools)]


def generate(
    n: int,
    *,
    seed: int = 0,
    split: str = "train",
    categories: list[str] | None = None,
    weights: dict[str, float] | None = None,
    tools: str = "fixed",
) -> list[Sample]:
    """``n`` synthetic samples with ids ``syn-<split>-<index>`` and structural difficulty set.

    ``weights`` sets the category mix (default ``DEFAULT_WEIGHTS``); ``categories`` restricts it.
    ``tools`` picks the catalogue (``catalogue_tools``): ``fixed`` (64 hand-written tools), ``procedural``
    (40 generated domains) or ``mixed``; the ``dev`` split exists in the procedural catalogue only.
    """
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    schedule = _schedule(_resolve_weights(categories, weights))
    catalogue = catalogue_tools(split, tools)
    rng_key = f"itool-synth/{split}/{seed}" + ("" if tools == "fixed" else f"/{tools}")
    gen = _Generator(split, random.Random(rng_key), catalogue)
    makers = {
        "simple": gen.simple,
        "multiple": gen.multiple,
        "parallel": gen.parallel,
        "parallel_multiple": gen.parallel_multiple,
        "irrelevance": gen.irrelevance,
        "reasoning": gen.reasoning_sample,
    }
    out: list[Sample] = []
    for i in range(n):
        category = next(schedule)
        shown, text, calls, tags = makers[category]()
        answer = [{"name": t.name, "arguments": args} for t, args in calls]
        accepted = [_accepted(t, args) for t, args in calls]
        alternatives = (
            [{"name": t.name, "arguments": acc} for (t, _), (acc, _) in zip(calls, accepted, strict=True)]
            if any(alt for _, alt in accepted)
            else None
        )
        sample = Sample(
            id=f"syn-{split}-{i:06d}",
            tools=[json.loads(gen.schema_json[t.name]) for t in shown],
            messages=[{"role": "user", "content": text}],
            answer=answer,
            category=category,
            source=SOURCE,
            tags=[category, *tags],
            accepted=alternatives,
        )
        sample.difficulty = difficulty_level(structural_score(sample))
        out.append(sample)
    return out
