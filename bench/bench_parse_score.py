"""Answers per second for ``toolcall.parse`` alone and ``parse`` + ``reward.match``, on one core.

Rates are per CPU second of the process (stable on a busy machine) and per wall-clock second.

The mix: BFCL ground-truth answers and corrupted variants of them (wrong value, missing argument,
extra argument, wrong function, prose) when bfcl-eval is installed, else a small built-in set.

    python bench/bench_parse_score.py [--seconds 2]
"""

from __future__ import annotations

import argparse
import os
import random
import sys
import tempfile
import time
from typing import Any

from itool_ray.data.schema import Sample
from itool_ray.reward import match, prepare
from itool_ray.toolcall import FunctionCall, format_calls, parse


def _builtin_samples() -> list[Sample]:
    weather = {
        "name": "get_weather",
        "parameters": {
            "type": "object",
            "properties": {
                "city": {"type": "string"},
                "unit": {"type": "string", "default": "celsius"},
                "days": {"type": "integer"},
            },
            "required": ["city"],
        },
    }
    time_fn = {
        "name": "get_time",
        "parameters": {"type": "object", "properties": {"tz": {"type": "string"}}, "required": ["tz"]},
    }
    tools = [{"type": "function", "function": weather}, {"type": "function", "function": time_fn}]
    msgs = [{"role": "user", "content": "?"}]
    return [
        Sample(
            id="b1",
            tools=tools,
            messages=msgs,
            answer=[{"name": "get_weather", "arguments": {"city": "Paris"}}],
        ),
        Sample(
            id="b2",
            tools=tools,
            messages=msgs,
            answer=[
                {"name": "get_weather", "arguments": {"city": "Paris", "unit": "fahrenheit", "days": 3}},
                {"name": "get_time", "arguments": {"tz": "CET"}},
            ],
        ),
        Sample(id="b3", tools=tools, messages=msgs, answer=[]),
    ]


def _samples() -> tuple[list[Sample], str]:
    os.environ.setdefault("BFCL_PROJECT_ROOT", tempfile.mkdtemp(prefix="bfcl-root-"))
    try:
        from itool_ray.data.bfcl import load_bfcl

        return load_bfcl(["simple", "multiple", "parallel", "parallel_multiple", "irrelevance"]), "BFCL"
    except (ModuleNotFoundError, FileNotFoundError):
        return _builtin_samples(), "built-in"


def _variants(sample: Sample, rng: random.Random) -> list[str]:
    if not sample.answer:
        return ["[]", "I cannot do that with these tools."]
    calls = sample.calls
    out = [format_calls(calls)]
    c = calls[0]
    if c.arguments:
        k = rng.choice(list(c.arguments))
        v = c.arguments[k]
        wrong: Any = v + 1 if type(v) is int else "zz" if isinstance(v, str) else None
        out.append(format_calls([FunctionCall(c.name, {**c.arguments, k: wrong}), *calls[1:]]))
        out.append(
            format_calls([FunctionCall(c.name, {a: x for a, x in c.arguments.items() if a != k}), *calls[1:]])
        )
    out.append(format_calls([FunctionCall(c.name, {**c.arguments, "extra": 1}), *calls[1:]]))
    out.append(format_calls([FunctionCall(c.name + "_x", c.arguments), *calls[1:]]))
    return out


def _rate(fn: Any, items: list[Any], seconds: float) -> str:
    """Answers per CPU second of this process (robust on a shared machine), and per wall second."""
    done, cpu0, wall0 = 0, time.process_time(), time.perf_counter()
    while True:
        for it in items:
            fn(it)
        done += len(items)
        cpu = time.process_time() - cpu0
        if cpu >= seconds:
            return (
                f"{done / cpu:>10,.0f} answers/s (CPU)  {done / (time.perf_counter() - wall0):>10,.0f} (wall)"
            )


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=2.0, help="time per measurement")
    args = ap.parse_args(argv)
    samples, origin = _samples()
    rng = random.Random(0)
    pairs = [(t, s) for s in samples for t in _variants(s, rng)]
    rng.shuffle(pairs)
    texts = [t for t, _ in pairs]
    mean_len = sum(map(len, texts)) / len(texts)
    print(f"{origin} mix: {len(pairs)} answers from {len(samples)} samples, mean {mean_len:.0f} characters")

    def parse_one(t: str) -> None:
        try:
            parse(t)
        except ValueError:
            pass

    prepared = [(t, prepare(s)) for t, s in pairs]
    print(f"parse alone:               {_rate(parse_one, texts, args.seconds)}")
    print(f"parse + match (cached):    {_rate(lambda p: match(p[0], p[1]), pairs, args.seconds)}")
    print(f"parse + match (prepared):  {_rate(lambda p: match(p[0], p[1]), prepared, args.seconds)}")
    start = time.process_time()
    for s in samples:
        prepare(s)
    print(
        f"prepare:                   {len(samples) / (time.process_time() - start):>10,.0f} samples/s (CPU)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
