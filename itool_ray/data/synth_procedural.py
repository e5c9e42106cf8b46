"""Procedurally generated tool schemas: many domains, two naming styles, varied argument types and formats.

The hand-written catalogue (``synth_tools.py``) has 64 tools in 11 domains; a model trained on it learns
the call format but little that transfers to tools it has never seen. This module builds a much wider
catalogue from declarations: each domain names an object (``vehicle``), its identifier format
(``VH-48213``) and a few attributes drawn from a shared library (an owner, a date, a status, a budget, a
flag, an e-mail address, a duration …), and every domain gets the same five actions (details, list,
create, update one attribute, delete). Tool and parameter names follow the domain's naming style
(``get_vehicle(vehicle_id)`` or ``getVehicle(vehicleId)``).

Splits are by *domain*: every fifth domain is ``dev``, the next ``heldout``, the rest ``train``, so dev
and held-out tools come from domains the training set never shows. Each split has its own request
phrasings. Everything is a function of the declarations: no randomness at import, no ``hash()``.

    tools = procedural_tools("train")   # tuple[Tool, ...], the same dataclasses as the fixed catalogue
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from itool_ray.data.synth_tools import Param, Tool, _bool, _enum, _int, _num, _str, _template, check_tools

# -- the attribute library: kind -> (parameter, phrase in a request) -----------------------------------------
# A phrase holds ``{p}`` where the value's wording goes (the value pool words it: "on 2026-03-16",
# "$40", "90 minutes", "for Anna").
_STATUS = {"open": ("open",), "closed": ("closed",), "pending": ("pending", "on hold")}
_PRIORITY = {"low": ("low",), "normal": ("normal",), "high": ("high",), "urgent": ("urgent",)}
_NOTIFY = {True: ("and notify everyone", "with a notification"), False: ("without notifying anyone",)}


@dataclass(frozen=True)
class _Attr:
    kind: str
    phrase: str  # "{p}" = the value's wording

    def param(self, name: str, *, required: bool) -> Param:
        opt = {"opt": not required}
        return {
            "person": lambda: _str(name, "", "person", **opt),
            "city": lambda: _str(name, "", "city", **opt),
            "date": lambda: _str(name, "YYYY-MM-DD", "date", **opt),
            "time": lambda: _str(name, "HH:MM", "time", **opt),
            "status": lambda: _enum(name, "", _STATUS, **opt),
            "priority": lambda: _enum(name, "", _PRIORITY, **opt),
            "budget": lambda: _num(name, "USD", "price", **opt),
            "percent": lambda: _num(name, "percent", "rate", **opt),
            "minutes": lambda: _int(name, "minutes", "minutes", **opt),
            "quantity": lambda: _int(name, "", "units", **opt),
            "email": lambda: _str(name, "", "email", **opt),
            "notify": lambda: _bool(name, "", _NOTIFY, **opt),
        }[self.kind]()


ATTRS: dict[str, _Attr] = {
    "person": _Attr("person", "for {p}"),
    "city": _Attr("city", "in {p}"),
    "date": _Attr("date", "{p}"),
    "time": _Attr("time", "{p}"),  # the time pool words it "at 09:30"
    "status": _Attr("status", "marked {p}"),
    "priority": _Attr("priority", "with {p} priority"),
    "budget": _Attr("budget", "with a budget of {p}"),
    "percent": _Attr("percent", "at {p}"),
    "minutes": _Attr("minutes", "lasting {p}"),
    "quantity": _Attr("quantity", "with {p} units"),
    "email": _Attr("email", "with contact {p}"),
    "notify": _Attr("notify", "{p}"),
}


# -- domains: (name, object, plural, id prefix, camelCase?, attributes as "kind" or "kind:parameter") ------
_DOMAINS: tuple[tuple[str, str, str, str, bool, tuple[str, ...]], ...] = (
    ("library", "book loan", "book loans", "BL", False, ("person:borrower", "date:due_date", "notify")),
    ("fleet", "vehicle", "vehicles", "VH", True, ("city:depot", "status", "person:driver")),
    ("helpdesk", "ticket", "tickets", "TK", False, ("priority", "person:assignee", "status")),
    ("gardening", "plant", "plants", "PL", True, ("minutes:watering_minutes", "city:greenhouse", "date:planted_on")),
    ("education", "course", "courses", "CR", False, ("person:instructor", "date:start_date", "quantity:seats")),
    ("veterinary", "pet appointment", "pet appointments", "VA", True, ("date", "time", "person:owner")),
    ("construction", "site inspection", "site inspections", "SI", False, ("city:site", "date", "priority")),
    ("insurance", "claim", "claims", "CL", True, ("budget:amount", "status", "email:contact_email")),
    ("warehouse", "shipment", "shipments", "SH", False, ("city:destination", "quantity", "date:ship_date")),
    ("hr", "leave request", "leave requests", "LR", True, ("person:employee", "date:start_date", "status")),
    ("events", "venue booking", "venue bookings", "VB", False, ("city:venue_city", "date", "quantity:guests")),
    ("it assets", "laptop", "laptops", "LT", True, ("person:assigned_to", "status", "date:purchase_date")),
    ("marketing", "campaign", "campaigns", "CP", False, ("budget", "date:launch_date", "percent:discount")),
    ("clinic", "lab test", "lab tests", "LB", True, ("person:patient", "priority", "date:sample_date")),
    ("recruiting", "job opening", "job openings", "JB", False, ("city:location", "quantity:openings", "status")),
    ("legal", "contract", "contracts", "CT", True, ("person:counterparty", "date:expiry_date", "notify")),
    ("sports club", "training session", "training sessions", "TS", False, ("time", "minutes:duration", "person:coach")),
    ("real estate", "property viewing", "property viewings", "PV", True, ("city", "date", "person:agent")),
    ("manufacturing", "work order", "work orders", "WO", False, ("quantity", "priority", "date:due_date")),
    ("nonprofit", "donation", "donations", "DN", True, ("budget:amount", "person:donor", "email:receipt_email")),
    ("museum", "exhibit", "exhibits", "EX", False, ("city:gallery", "date:opening_date", "status")),
    ("laboratory", "experiment", "experiments", "XP", True, ("person:lead", "minutes:run_minutes", "status")),
    ("utilities", "meter reading", "meter readings", "MR", False, ("city:district", "date:read_on", "quantity:kwh")),
    ("catering", "catering order", "catering orders", "CO", True, ("quantity:portions", "date:event_date", "budget")),
    ("parking", "parking permit", "parking permits", "PP", False, ("person:holder", "date:valid_until", "city:zone")),
    ("podcast", "episode", "episodes", "EP", True, ("person:host", "minutes:length", "date:publish_date")),
    ("dentistry", "dental visit", "dental visits", "DV", False, ("person:patient", "date", "time")),
    ("procurement", "purchase order", "purchase orders", "PO", True, ("budget:total", "person:approver", "status")),
    ("cleaning", "cleaning job", "cleaning jobs", "CJ", False, ("city:address_city", "date", "minutes:duration")),
    ("security", "access badge", "access badges", "AB", True, ("person:holder", "status", "notify")),
    ("photography", "photo shoot", "photo shoots", "PS", False, ("city:location", "date", "budget:fee")),
    ("aviation", "maintenance check", "maintenance checks", "MC", True, ("priority", "date:due_date", "person:engineer")),
    ("farming", "harvest batch", "harvest batches", "HB", False, ("quantity:crates", "date:harvest_date", "city:farm")),
    ("tutoring", "lesson", "lessons", "LS", True, ("person:student", "time", "minutes:duration")),
    ("charity run", "runner registration", "runner registrations", "RR", False, ("person:runner", "email", "status")),
    ("translation", "translation job", "translation jobs", "TJ", True, ("quantity:pages", "date:deadline", "percent:rush_fee")),
    ("coworking", "desk reservation", "desk reservations", "DR", False, ("city:space", "date", "time")),
    ("archive", "records request", "records requests", "RQ", True, ("person:requester", "email:reply_to", "priority")),
    ("brewery", "tank", "tanks", "TN", False, ("status", "percent:fill_level", "date:brew_date")),
    ("moving company", "move", "moves", "MV", True, ("city:from_city", "date:move_date", "quantity:boxes")),
)  # fmt: skip

# -- actions and their request phrasings per split ({obj}, {objs} = the object; {id} = the id slot) --------
_PHRASES: dict[str, dict[str, tuple[str, ...]]] = {
    "get": {
        "train": ("Show me the details of {obj} {id}.", "Look up {obj} {id} for me.", "What's on record for {obj} {id}?"),
        "dev": ("I need the information on {obj} {id}.", "Pull up {obj} {id}."),
        "heldout": ("Could you fetch {obj} {id}?", "Get me everything about {obj} {id}."),
    },
    "list": {
        "train": ("List the {objs} {a0}.", "Which {objs} are there {a0}?", "Show all {objs} {a0}."),
        "dev": ("Give me an overview of the {objs} {a0}.", "I'd like to see the {objs} {a0}."),
        "heldout": ("Enumerate the {objs} {a0}.", "Find every one of the {objs} {a0}."),
    },
    "create": {
        "train": ("Create a new {obj} {a0} {a1}.", "Add a {obj} {a0} {a1}.", "Register a {obj} {a0} {a1}."),
        "dev": ("Set up a {obj} {a0} {a1}, please.", "Open a fresh {obj} {a0} {a1}."),
        "heldout": ("Please file a {obj} {a0} {a1}.", "Start a {obj} {a0} {a1}."),
    },
    "update": {
        "train": ("Update {obj} {id} {a0}.", "Change {obj} {id} so it is {a0}.", "Edit {obj} {id}: {a0}."),
        "dev": ("Modify {obj} {id} {a0}.", "Adjust {obj} {id}, {a0}."),
        "heldout": ("Revise {obj} {id} {a0}.", "Amend {obj} {id} {a0}, thanks."),
    },
    "delete": {
        "train": ("Delete {obj} {id}.", "Remove {obj} {id} {a0}.", "Cancel {obj} {id}."),
        "dev": ("Get rid of {obj} {id}.", "Drop {obj} {id} {a0}."),
        "heldout": ("Discard {obj} {id}.", "Erase {obj} {id} {a0}."),
    },
}  # fmt: skip
_DESCRIPTIONS = {
    "get": "Details of one {obj}.",
    "list": "List {objs}, optionally filtered.",
    "create": "Create a {obj}.",
    "update": "Change the {attr} of a {obj}.",
    "delete": "Delete a {obj}.",
}


def _words(obj: str) -> list[str]:
    return obj.replace("-", " ").split()


def _name(words: list[str], camel: bool) -> str:
    if camel:
        return words[0] + "".join(w.capitalize() for w in words[1:])
    return "_".join(words)


def _split(index: int) -> str:
    return {0: "dev", 1: "heldout"}.get(index % 5, "train")


def _domain_tools(index: int, spec: tuple[str, str, str, str, bool, tuple[str, ...]]) -> list[Tool]:
    domain, obj, objs, prefix, camel, attr_specs = spec
    split = _split(index)
    ow, pw = _words(obj), _words(objs)
    id_name = _name([*ow, "id"], camel) if len(ow) == 1 else _name([ow[-1], "id"], camel)
    id_param = Param(id_name, "string", f"e.g. {prefix}-10442", pool="ident", noun=prefix)
    attrs: list[tuple[_Attr, str]] = []
    attr_words: list[list[str]] = []
    for s in attr_specs:
        kind, _, pname = s.partition(":")
        attr_words.append((pname or kind).split("_"))
        attrs.append((ATTRS[kind], _name(attr_words[-1], camel)))

    def phrase(i: int) -> str:
        attr, pname = attrs[i]
        text = attr.phrase.replace("{p}", "{" + pname + "}")
        if attr.kind == "quantity" and attr_words[i] != ["quantity"]:  # "with 8 pages", not "8 units"
            text = text.replace(" units", " " + " ".join(attr_words[i]))
        return text

    def templates(action: str, fill: dict[str, str]) -> list[str]:
        out = []
        for t in _PHRASES[action][split]:
            text = t.replace("{obj}", obj).replace("{objs}", objs).replace("{id}", "{" + id_name + "}")
            for key, value in fill.items():
                text = text.replace("{" + key + "}", value)
            text = re.sub(r"\b([Aa]) ([aeiou])", r"\1n \2", " ".join(text.split()))
            out.append(text.replace(" .", ".").replace(" ,", ","))
        return out

    def tool(action: str, name_words: list[str], params: list[Param], tps: list[str], attr: str = "") -> Tool:
        desc = _DESCRIPTIONS[action].format(obj=obj, objs=objs, attr=attr.replace("_", " "))
        return Tool(
            _name(name_words, camel),
            domain,
            desc,
            tuple(params),
            tuple(_template(t) for t in tps),
            split,
            fan=id_name if action in ("get", "delete") else None,
        )

    # The flag-like attributes are optional on delete; list filters on the first attribute, with a limit.
    notify = next(((a, n) for a, n in attrs if a.kind == "notify"), None)
    delete_params = [id_param] + ([notify[0].param(notify[1], required=False)] if notify else [])
    delete_fill = {"a0": phrase([n for _, n in attrs].index(notify[1])) if notify else ""}
    limit = _int(_name(["limit"], camel), "", "count", opt=True, lo=2, hi=20, noun=objs)
    first = next(i for i, (a, _) in enumerate(attrs) if a.kind != "notify")
    second = next(i for i, (a, _) in enumerate(attrs) if a.kind != "notify" and i != first)
    update_attr = attrs[first]
    return [
        tool("get", ["get", *ow], [id_param], templates("get", {})),
        tool(
            "list",
            ["list", *pw],
            [attrs[first][0].param(attrs[first][1], required=True), limit],
            templates("list", {"a0": phrase(first)}),
        ),
        tool(
            "create",
            ["create", *ow],
            [a.param(n, required=i in (first, second)) for i, (a, n) in enumerate(attrs)],
            templates("create", {"a0": phrase(first), "a1": phrase(second)}),
        ),
        tool(
            "update",
            ["update", *ow, *attr_words[first]],
            [id_param, update_attr[0].param(update_attr[1], required=True)],
            templates("update", {"a0": phrase(first)}),
            attr=" ".join(attr_words[first]),
        ),
        tool("delete", ["delete", *ow], delete_params, templates("delete", delete_fill)),
    ]


def _build() -> tuple[Tool, ...]:
    return tuple(t for i, spec in enumerate(_DOMAINS) for t in _domain_tools(i, spec))


PROCEDURAL_TOOLS: tuple[Tool, ...] = _build()
PROCEDURAL_DOMAINS: tuple[str, ...] = tuple(spec[0] for spec in _DOMAINS)


def procedural_tools(split: str) -> tuple[Tool, ...]:
    """The procedural tools of one split (``train``, ``dev`` or ``heldout``)."""
    return tuple(t for t in PROCEDURAL_TOOLS if t.split == split)


def procedural_templates(split: str) -> list[str]:
    return [tp.text for t in procedural_tools(split) for tp in t.templates]


check_tools(PROCEDURAL_TOOLS)
