"""ToolACE rows -> Sample dicts.

A ToolACE row is ``{"system": str, "conversations": [{"from": "user"|"assistant"|"tool", "value": str}]}``.
The system prompt embeds the tools as a JSON list ("Here is a list of functions in JSON format that you
can invoke:\\n[...]"); assistant turns that call tools are call lists ``[Func Name(a=1, b="x")]``.

Which turns become Samples (one row yields several):
- every assistant turn that is a call list: answer = its calls;
- every prose assistant turn that directly follows a user turn: answer = [] (the tools cannot serve the
  request, or a required argument is missing, so the right answer is no call);
- prose after a tool turn (a summary of tool results) is context only: it teaches no call decision.
History = all preceding turns; the system prompt is dropped (prompts are built from ``tools``).
A call turn that does not parse makes the whole row unusable (it would corrupt every later history).
"""

from __future__ import annotations

import json
from typing import Any

from itool_ray.data.schema import SampleError
from itool_ray.toolcall import ToolCallParseError, parse

_ROLES = {
    "user": "user",
    "human": "user",
    "assistant": "assistant",
    "gpt": "assistant",
    "tool": "tool",
    "function": "tool",
    "observation": "tool",
}
_TOOLS_MARKER = "JSON format that you can invoke"
# ToolACE (like BFCL) writes Python-ish type names; JSON Schema spells them differently.
_TYPE_ALIASES = {"dict": "object", "float": "number", "tuple": "array", "list": "array"}


class UnparsableAnswer(SampleError):
    """An assistant turn looks like a call list but does not parse."""

    kind = "unparsable answer"


def is_toolace(record: Any) -> bool:
    return isinstance(record, dict) and "system" in record and "conversations" in record


def extract_tools(system: str) -> list[dict[str, Any]]:
    """The tool list embedded in a ToolACE system prompt: the first ``[`` (after the usual marker
    phrase, if present) that decodes as a JSON list of objects with a ``name``."""
    decoder = json.JSONDecoder()
    start = system.find(_TOOLS_MARKER)
    pos = system.find("[", max(start, 0))
    while pos >= 0:
        try:
            value, _ = decoder.raw_decode(system, pos)
        except json.JSONDecodeError:
            value = None
        if isinstance(value, list) and value and all(isinstance(t, dict) and "name" in t for t in value):
            return value
        pos = system.find("[", pos + 1)
    raise SampleError("no JSON tool list found in the system prompt")


def normalize_schema(schema: Any) -> Any:
    """JSON Schema type names for ToolACE's Python-ish ones (dict -> object, float -> number, …),
    recursively through properties/items/anyOf; ``any`` drops the type (unconstrained)."""
    if not isinstance(schema, dict):
        return schema
    out = dict(schema)
    t = out.get("type")
    if isinstance(t, str):
        if t.lower() == "any":
            del out["type"]
        else:
            out["type"] = _TYPE_ALIASES.get(t.lower(), t)
    if isinstance(out.get("properties"), dict):
        out["properties"] = {k: normalize_schema(v) for k, v in out["properties"].items()}
    for key in ("items", "additionalProperties"):
        if isinstance(out.get(key), dict):
            out[key] = normalize_schema(out[key])
    for key in ("anyOf", "oneOf", "allOf"):
        if isinstance(out.get(key), list):
            out[key] = [normalize_schema(s) for s in out[key]]
    return out


def _tool(raw: dict[str, Any]) -> dict[str, Any]:
    # Drop ToolACE's null-valued extras (e.g. a function-level "required": null); keep names as written.
    tool = {k: v for k, v in raw.items() if v is not None}
    if "parameters" in tool:
        tool["parameters"] = normalize_schema(tool["parameters"])
    return tool


def convert_row(row: Any, *, row_id: str) -> list[dict[str, Any]]:
    """Sample dicts (without category: the loader infers it) for one ToolACE row."""
    if not (
        isinstance(row, dict)
        and isinstance(row.get("system"), str)
        and isinstance(row.get("conversations"), list)
    ):
        raise SampleError("a ToolACE row needs 'system' (string) and 'conversations' (list)")
    tools = [_tool(t) for t in extract_tools(row["system"])]
    names = [t["name"] for t in tools if isinstance(t.get("name"), str)]

    samples: list[dict[str, Any]] = []
    history: list[dict[str, str]] = []
    for i, turn in enumerate(row["conversations"]):
        if not isinstance(turn, dict) or not isinstance(turn.get("value"), str):
            raise SampleError(f"conversations[{i}] needs 'from' and a string 'value'")
        role = _ROLES.get(str(turn.get("from", "")).lower())
        if role is None:
            raise SampleError(
                f"conversations[{i}].from must be user|assistant|tool, got {turn.get('from')!r}"
            )
        text = turn["value"]
        if role == "assistant":
            stripped = text.strip()
            if stripped.startswith("[") and stripped.endswith("]"):
                try:
                    calls = parse(stripped, tool_names=names)
                except ToolCallParseError as e:
                    raise UnparsableAnswer(f"conversations[{i}]: unparsable answer text: {e}") from None
                answer: list[dict[str, Any]] | None = [c.to_dict() for c in calls]
            else:
                answer = [] if history and history[-1]["role"] == "user" else None
            if answer is not None and history:
                samples.append(
                    {
                        "id": f"{row_id}-t{i}",
                        "tools": tools,
                        "messages": [dict(m) for m in history],
                        "answer": answer,
                        "source": "toolace",
                    }
                )
        history.append({"role": role, "content": text})
    if not samples:
        raise SampleError("no assistant turn to learn from (no call list, no reply to a user turn)")
    return samples
