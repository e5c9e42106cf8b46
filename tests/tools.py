"""Tool schemas shared by the tests (one place, so a change to the schema format is one edit)."""

from __future__ import annotations

from typing import Any


def weather_tool(
    *,
    required: tuple[str, ...] = ("city",),
    unit: bool = True,
    description: str = "Current weather in a city",
) -> dict[str, Any]:
    """``get_weather(city, [unit: celsius | fahrenheit])`` as a JSON Schema function."""
    properties: dict[str, Any] = {"city": {"type": "string"}}
    if unit:
        properties["unit"] = {"type": "string", "enum": ["celsius", "fahrenheit"]}
    return {
        "name": "get_weather",
        "description": description,
        "parameters": {"type": "object", "properties": properties, "required": list(required)},
    }


WEATHER = weather_tool()
