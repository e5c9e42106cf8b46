"""xLAM function-calling rows -> Sample dicts.

An xLAM row is ``{"id", "query": str, "tools": JSON text, "answers": JSON text}`` where tools are
``[{"name", "description", "parameters": {param: {"type", "description", "default"?}}}]``: a flat mapping
of parameter to spec with Python type strings ("str", "List[int]", "str, optional"), not JSON Schema.
This module turns that into JSON Schema: the type string maps to JSON Schema types, and a parameter is
required unless its type says optional (", optional", ``Optional[...]``, ``Union[..., None]``) or it has a
default.
"""

from __future__ import annotations

import ast
import json
from typing import Any

from itool_ray.data.schema import SampleError

_SCALARS = {
    "str": "string",
    "string": "string",
    "int": "integer",
    "integer": "integer",
    "float": "number",
    "number": "number",
    "double": "number",
    "bool": "boolean",
    "boolean": "boolean",
    "none": "null",
    "nonetype": "null",
}
_ARRAYS = {"list", "array", "tuple", "set", "sequence", "iterable"}
_OBJECTS = {"dict", "object", "mapping"}
_UNCONSTRAINED = {"", "any", "callable", "function"}


def is_xlam(record: Any) -> bool:
    return isinstance(record, dict) and {"query", "tools", "answers"} <= record.keys()


def _split_top(s: str) -> list[str]:
    """Split on commas outside brackets and quotes: "Dict[str, int], optional" -> two parts."""
    parts, depth, quote, cur = [], 0, "", []
    for ch in s:
        if quote:
            quote = "" if ch == quote else quote
        elif ch in "'\"":
            quote = ch
        elif ch == "[":
            depth += 1
        elif ch == "]":
            depth -= 1
        elif ch == "," and depth == 0:
            parts.append("".join(cur).strip())
            cur = []
            continue
        cur.append(ch)
    parts.append("".join(cur).strip())
    return parts


def _type_schema(expr: str) -> tuple[dict[str, Any], bool]:
    """JSON Schema for a Python type expression, and whether it admits None (so is optional)."""
    expr = expr.strip()
    head, _, rest = expr.partition("[")
    name = head.strip().lower().rsplit(".", 1)[-1]  # typing.List -> list
    args = _split_top(rest[: rest.rfind("]")]) if rest else []
    if name in _UNCONSTRAINED:
        return {}, False
    if name in _SCALARS and not args:
        t = _SCALARS[name]
        return ({}, True) if t == "null" else ({"type": t}, False)
    if name == "optional" and len(args) == 1:
        return _type_schema(args[0])[0], True
    if name == "union" and args:
        members = [_type_schema(a) for a in args]
        nullable = any(opt for _, opt in members)
        schemas = [s for s, opt in members if s or not opt]
        if any(not s for s in schemas) or not schemas:
            return {}, nullable
        if all(s.keys() == {"type"} for s in schemas):
            types = list(dict.fromkeys(s["type"] for s in schemas))
            return {"type": types[0] if len(types) == 1 else types}, nullable
        return {"anyOf": schemas}, nullable
    if name in _ARRAYS:
        schema: dict[str, Any] = {"type": "array"}
        if len(args) == 1 and args[0] != "...":
            items, _ = _type_schema(args[0])
            if items:
                schema["items"] = items
        return schema, False
    if name in _OBJECTS:
        return {"type": "object"}, False
    if name == "literal" and args:
        try:
            values = [ast.literal_eval(a) for a in args]
        except (ValueError, SyntaxError):
            values = []
        if values:
            return {"enum": values}, False
    raise ValueError(expr)


def param_schema(spec: Any) -> tuple[dict[str, Any], bool]:
    """(JSON Schema of one xLAM parameter, required?)."""
    if not isinstance(spec, dict):
        raise ValueError(f"spec must be an object, got {type(spec).__name__}")
    type_text = spec.get("type", "")
    if not isinstance(type_text, str):
        raise ValueError(f"type must be a string, got {type_text!r}")
    main, *modifiers = _split_top(type_text)
    try:
        schema, optional = _type_schema(main)
    except ValueError:
        raise ValueError(f"unsupported type {type_text!r}") from None
    optional = optional or any(m.lower().startswith(("optional", "default")) for m in modifiers)
    for key in ("description", "default", "enum"):
        if key in spec:
            schema[key] = spec[key]
    return schema, not optional and "default" not in spec


def convert_tool(tool: Any) -> dict[str, Any]:
    if not isinstance(tool, dict) or not isinstance(tool.get("name"), str):
        raise SampleError("every xLAM tool needs a string 'name'")
    params = tool.get("parameters", {}) or {}
    if not isinstance(params, dict):
        raise SampleError(f"tool {tool['name']!r}: 'parameters' must be an object")
    if isinstance(params.get("type"), str) and isinstance(params.get("properties"), dict):
        schema = params  # already JSON Schema (some xLAM derivatives)
    else:
        props, required = {}, []
        for pname, spec in params.items():
            try:
                props[pname], req = param_schema(spec)
            except ValueError as e:
                raise SampleError(f"tool {tool['name']!r} parameter {pname!r}: {e}") from None
            if req:
                required.append(pname)
        schema = {"type": "object", "properties": props, "required": required}
    out = {"name": tool["name"], "description": tool.get("description", ""), "parameters": schema}
    return out


def _json_field(row: dict[str, Any], key: str) -> Any:
    value = row.get(key)
    if isinstance(value, str):
        try:
            return json.loads(value)
        except json.JSONDecodeError as e:
            raise SampleError(f"'{key}' is not valid JSON: {e.msg} at column {e.colno}") from None
    return value


def convert_row(row: Any, *, row_id: str) -> list[dict[str, Any]]:
    """The Sample dict (without category: the loader infers it) for one xLAM row."""
    if not is_xlam(row):
        raise SampleError("an xLAM row needs 'query', 'tools' and 'answers'")
    if not isinstance(row["query"], str) or not row["query"].strip():
        raise SampleError("'query' must be a non-empty string")
    tools, answers = _json_field(row, "tools"), _json_field(row, "answers")
    if not isinstance(tools, list):
        raise SampleError(f"'tools' must be a list, got {type(tools).__name__}")
    if not isinstance(answers, list):
        raise SampleError(f"'answers' must be a list, got {type(answers).__name__}")
    answer = []
    for i, call in enumerate(answers):
        if not isinstance(call, dict) or not isinstance(call.get("name"), str):
            raise SampleError(f"answers[{i}] needs a string 'name'")
        args = call.get("arguments", {})
        if isinstance(args, str):  # some exports double-encode arguments
            try:
                args = json.loads(args)
            except json.JSONDecodeError:
                pass
        if not isinstance(args, dict):
            raise SampleError(f"answers[{i}].arguments must be an object")
        answer.append({"name": call["name"], "arguments": args})
    rid = row.get("id")
    return [
        {
            "id": f"xlam-{rid}" if isinstance(rid, (int, str)) and str(rid).strip() else row_id,
            "tools": [convert_tool(t) for t in tools],
            "messages": [{"role": "user", "content": row["query"]}],
            "answer": answer,
            "source": "xlam",
        }
    ]
