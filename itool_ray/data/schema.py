"""The Sample record (DESIGN §3): one JSONL line / one Ray Data row."""

from __future__ import annotations

import json
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from itool_ray.toolcall import FunctionCall

# Categories the system knows; BFCL and loaders may add their own names (kept as given).
CATEGORIES = ("simple", "multiple", "parallel", "parallel_multiple", "irrelevance", "reasoning")
DIFFICULTIES = ("easy", "medium", "hard")


class SampleError(ValueError):
    """A record that cannot become a Sample. ``reason`` says why, in words a user can act on."""

    def __init__(self, reason: str, *, sample_id: str | None = None):
        self.reason = reason
        self.sample_id = sample_id
        super().__init__(f"{reason} (sample {sample_id})" if sample_id else reason)


class AcceptedCall(BaseModel):
    """BFCL-style accepted answer for one call: every argument maps to the list of accepted values.

    An empty string ``""`` in the list means the argument may be omitted (BFCL's convention).
    """

    model_config = ConfigDict(extra="forbid")
    name: str
    arguments: dict[str, list[Any]] = Field(default_factory=dict)


class Sample(BaseModel):
    model_config = ConfigDict(extra="forbid")

    id: str
    tools: list[dict[str, Any]]
    messages: list[dict[str, Any]]
    answer: list[dict[str, Any]]  # [{name, arguments}]; [] = the right answer is no call
    category: str = "simple"
    difficulty: str | None = None
    source: str = "unknown"
    tags: list[str] = Field(default_factory=list)  # e.g. the reasoning kind of a synthetic sample
    # Optional BFCL possible answers (alternatives per argument); None = exactly ``answer``.
    accepted: list[AcceptedCall] | None = None

    @field_validator("id")
    @classmethod
    def _id_not_empty(cls, v: str) -> str:
        if not v.strip():
            raise ValueError("id must not be empty")
        return v

    @field_validator("tools")
    @classmethod
    def _tools_shape(cls, v: list[dict[str, Any]]) -> list[dict[str, Any]]:
        for i, t in enumerate(v):
            fn = t.get("function", t) if t.get("type") == "function" else t
            if not isinstance(fn.get("name"), str) or not fn["name"]:
                raise ValueError(f"tools[{i}] has no string 'name'")
            params = fn.get("parameters", {})
            if not isinstance(params, dict):
                raise ValueError(f"tools[{i}] ('{fn['name']}'): 'parameters' must be a JSON Schema object")
            if "properties" in params and not isinstance(params["properties"], dict):
                raise ValueError(f"tools[{i}] ('{fn['name']}'): 'parameters.properties' must be an object")
        return v

    @field_validator("messages")
    @classmethod
    def _messages_shape(cls, v: list[dict[str, Any]]) -> list[dict[str, Any]]:
        if not v:
            raise ValueError("messages must hold at least one message")
        for i, m in enumerate(v):
            if m.get("role") not in ("system", "user", "assistant", "tool"):
                raise ValueError(
                    f"messages[{i}].role must be system|user|assistant|tool, got {m.get('role')!r}"
                )
            if not isinstance(m.get("content"), str):
                raise ValueError(f"messages[{i}].content must be a string")
        return v

    @field_validator("answer")
    @classmethod
    def _answer_shape(cls, v: list[dict[str, Any]]) -> list[dict[str, Any]]:
        for i, c in enumerate(v):
            if not isinstance(c.get("name"), str) or not c["name"]:
                raise ValueError(f"answer[{i}] has no string 'name'")
            if not isinstance(c.get("arguments", {}), dict):
                raise ValueError(f"answer[{i}].arguments must be an object")
        return v

    @field_validator("difficulty")
    @classmethod
    def _difficulty_known(cls, v: str | None) -> str | None:
        if v is not None and v not in DIFFICULTIES:
            raise ValueError(f"difficulty must be one of {DIFFICULTIES} or null, got {v!r}")
        return v

    # -- conveniences -------------------------------------------------------------------------
    @property
    def calls(self) -> list[FunctionCall]:
        return [FunctionCall.from_dict(c) for c in self.answer]

    def tool_functions(self) -> list[dict[str, Any]]:
        """The tool schemas as plain function dicts (unwraps OpenAI's ``{"type": "function", ...}``)."""
        return [t["function"] if t.get("type") == "function" and "function" in t else t for t in self.tools]

    def to_dict(self) -> dict[str, Any]:
        return self.model_dump(mode="json", exclude_none=True)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), ensure_ascii=False, separators=(",", ":"))

    @classmethod
    def from_dict(cls, d: Any) -> Sample:
        """Validate a plain dict; raise SampleError naming the first problem."""
        if not isinstance(d, dict):
            raise SampleError(f"expected a JSON object, got {type(d).__name__}")
        try:
            return cls.model_validate(d)
        except ValidationError as e:
            err = e.errors()[0]
            where = ".".join(str(p) for p in err["loc"]) or "record"
            raise SampleError(
                f"{where}: {err['msg']}", sample_id=d.get("id") if isinstance(d.get("id"), str) else None
            ) from None
