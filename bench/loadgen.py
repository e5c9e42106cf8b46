"""A bounded HTTP load generator for ``itool serve``: N closed-loop clients for T seconds.

    python bench/loadgen.py --url http://127.0.0.1:8000 --clients 8 --seconds 30 [--api-key KEY]

Run it as a second process (the server's event loop and this one's threads must not share a GIL).
Each client sends a chat completion with tools, waits for the answer, and sends the next one; a 429 is
counted and retried after a short pause (what a well-behaved client does with Retry-After). The result
is one JSON object on stdout: requests, requests/s, latency percentiles of the 200s, and a count per
status (``"error:<kind>"`` for requests that got no HTTP answer at all: refused, reset, timed out).
"""

from __future__ import annotations

import argparse
import json
import sys
import threading
import time
from collections import Counter
from typing import Any

TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "get_weather",
            "description": "Current weather for a city",
            "parameters": {
                "type": "object",
                "properties": {
                    "city": {"type": "string"},
                    "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]},
                },
                "required": ["city"],
            },
        },
    },
    {
        "type": "function",
        "function": {
            "name": "book_table",
            "description": "Book a restaurant table",
            "parameters": {
                "type": "object",
                "properties": {"restaurant": {"type": "string"}, "people": {"type": "integer"}},
                "required": ["restaurant", "people"],
            },
        },
    },
]
CITIES = ["Paris", "Oslo", "Lima", "Cairo", "Tokyo", "Quito", "Dublin", "Austin"]
BACKOFF_S = 0.05


def request_body(i: int, max_tokens: int) -> bytes:
    city = CITIES[i % len(CITIES)]
    messages = [{"role": "user", "content": f"What's the weather in {city} in celsius?"}]
    return json.dumps({"messages": messages, "tools": TOOLS, "max_tokens": max_tokens}).encode()


def percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))]


def run_load(
    url: str,
    *,
    clients: int,
    seconds: float,
    api_key: str | None = None,
    max_tokens: int = 32,
    timeout_s: float = 120,
) -> dict[str, Any]:
    import requests

    headers = {"Content-Type": "application/json"}
    if api_key:
        headers["Authorization"] = f"Bearer {api_key}"
    codes: Counter[str] = Counter()
    latencies: list[float] = []
    lock = threading.Lock()
    deadline = time.monotonic() + seconds

    def client(k: int) -> None:
        session = requests.Session()
        i = k
        while time.monotonic() < deadline:
            t = time.monotonic()
            try:
                r = session.post(
                    f"{url}/v1/chat/completions",
                    data=request_body(i, max_tokens),
                    headers=headers,
                    timeout=timeout_s,
                )
                key, ok = str(r.status_code), r.status_code == 200
                if ok:
                    body = r.json()
                    ok = body.get("choices", [{}])[0].get("message", {}).get("role") == "assistant"
                    key = key if ok else "200-malformed"
            except requests.RequestException as e:
                key, ok = f"error:{type(e).__name__}", False
            took = time.monotonic() - t
            with lock:
                codes[key] += 1
                if ok:
                    latencies.append(took)
            if key in ("429", "503"):
                time.sleep(BACKOFF_S)
            i += clients

    start = time.monotonic()
    threads = [threading.Thread(target=client, args=(k,), daemon=True) for k in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.monotonic() - start
    total = sum(codes.values())
    return {
        "clients": clients,
        "seconds": round(wall, 2),
        "requests": total,
        "ok": codes.get("200", 0),
        "ok_per_s": round(codes.get("200", 0) / wall, 3),
        "requests_per_s": round(total / wall, 3),
        "latency_s": {
            f"p{int(q * 100)}": (round(v, 3) if (v := percentile(latencies, q)) is not None else None)
            for q in (0.5, 0.9, 0.99)
        }
        | {"max": round(max(latencies), 3) if latencies else None},
        "status": dict(sorted(codes.items())),
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--url", required=True)
    p.add_argument("--clients", type=int, default=4)
    p.add_argument("--seconds", type=float, default=30)
    p.add_argument("--api-key")
    p.add_argument("--max-tokens", type=int, default=32)
    a = p.parse_args(argv)
    if a.clients < 1 or a.seconds <= 0:
        p.error("--clients must be >= 1 and --seconds > 0")
    out = run_load(a.url, clients=a.clients, seconds=a.seconds, api_key=a.api_key, max_tokens=a.max_tokens)
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
