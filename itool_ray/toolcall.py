"""Tool-call text <-> FunctionCall.

Answer text looks like ``[get_weather(city="Paris", unit="celsius"), get_time(tz="CET")]``.
Model output is attacker-controlled: it is only ever parsed with ``ast`` and literal evaluation.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class FunctionCall:
    name: str
    arguments: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "arguments": dict(self.arguments)}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> FunctionCall:
        return cls(name=d["name"], arguments=dict(d.get("arguments") or {}))
