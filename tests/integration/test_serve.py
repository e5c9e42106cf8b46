"""`itool serve` over HTTP: the tiny model behind Ray Serve on 127.0.0.1, driven with the openai client.

One Serve instance for the module (tests here run in order, never in parallel against it), shut down
at the end; the session's Ray cluster stays up for other tests. The tiny random model writes garbage:
these tests check the response shape and the error paths; the tool_calls path is unit-tested with fixed
model text in tests/unit/test_serve_translate.py.
"""

from __future__ import annotations

import json
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from tools import weather_tool

PORT = 8765
API_KEY = "test-key"
MAX_BODY = 64 * 1024
TOOLS = [{"type": "function", "function": weather_tool(unit=False, description="Current weather for a city")}]
USER = [{"role": "user", "content": "Weather in Paris?"}]


@pytest.fixture(scope="module")
def server(ray_session, tiny_hub_id):
    from actors.serve_app import start_server, stop_server
    from itool_ray.config import load_config

    cfg = load_config(
        "tiny",
        {
            "engine": {"kind": "hf"},
            "serve": {
                "host": "127.0.0.1",
                "port": PORT,
                "max_body_bytes": MAX_BODY,
                "max_concurrency": 1,
            },
        },
    )
    os.environ["ITOOL_API_KEY"] = API_KEY  # the key comes from the environment, never from the config
    try:
        url = start_server(tiny_hub_id, cfg)  # a hub id, resolved offline from the hub cache
    finally:
        del os.environ["ITOOL_API_KEY"]
    yield url
    stop_server()


@pytest.fixture(scope="module")
def client(server):
    import openai

    return openai.OpenAI(base_url=f"{server}/v1", api_key=API_KEY, max_retries=0, timeout=60)


def post(server, body: bytes, *, key: str | None = API_KEY, headers: dict | None = None):
    import requests

    h = {"Content-Type": "application/json", **(headers or {})}
    if key is not None:
        h["Authorization"] = f"Bearer {key}"
    return requests.post(f"{server}/v1/chat/completions", data=body, headers=h, timeout=60)


def test_health_and_models(server, client):
    import requests

    assert requests.get(f"{server}/health", timeout=10).json() == {"status": "ok"}
    models = client.models.list()
    assert [m.id for m in models.data] == ["itool-ray"] and models.data[0].object == "model"
    resp = client.chat.completions.create(model="x", messages=USER, max_tokens=4)
    assert resp.model == "itool-ray"  # the served name: the checkpoint's path never reaches a client


def test_tool_request_gets_a_well_formed_response(client):
    resp = client.chat.completions.create(model="tiny", messages=USER, tools=TOOLS, max_tokens=16)
    assert resp.object == "chat.completion" and len(resp.choices) == 1
    choice = resp.choices[0]
    assert choice.message.role == "assistant"
    assert choice.finish_reason in ("stop", "length", "tool_calls")
    if (
        choice.finish_reason == "tool_calls"
    ):  # not expected from a random model, but well-formed if it happens
        assert choice.message.content is None and choice.message.tool_calls
    else:  # garbage text comes back as content
        assert isinstance(choice.message.content, str) and not choice.message.tool_calls
    assert resp.usage.prompt_tokens > 0 and 0 < resp.usage.completion_tokens <= 16
    assert resp.usage.total_tokens == resp.usage.prompt_tokens + resp.usage.completion_tokens


def test_conversation_with_tool_results_is_served(client):
    messages = [
        *USER,
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "id": "c1",
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'},
                }
            ],
        },
        {"role": "tool", "tool_call_id": "c1", "content": '{"temp": 21}'},
    ]
    resp = client.chat.completions.create(
        model="tiny", messages=messages, tools=TOOLS, max_tokens=8, temperature=1.0
    )
    assert resp.choices[0].finish_reason in ("stop", "length", "tool_calls")


def test_wrong_or_missing_api_key_is_401(server):
    import openai

    bad = openai.OpenAI(base_url=f"{server}/v1", api_key="wrong", max_retries=0, timeout=30)
    with pytest.raises(openai.AuthenticationError):
        bad.chat.completions.create(model="tiny", messages=USER, max_tokens=4)
    r = post(server, json.dumps({"messages": USER}).encode(), key=None)
    assert r.status_code == 401 and r.json()["error"]["type"] == "authentication_error"


def test_oversized_body_is_413(server):
    big = json.dumps({"messages": [{"role": "user", "content": "x" * (2 * MAX_BODY)}]}).encode()
    r = post(server, big)
    assert r.status_code == 413 and "max_body_bytes" in r.json()["error"]["message"]


def test_malformed_json_is_400(server):
    r = post(server, b'{"messages": [')
    assert r.status_code == 400 and "not valid JSON" in r.json()["error"]["message"]


def test_schema_errors_are_400_with_a_message(server):
    r = post(server, json.dumps({"messages": USER, "tools": {"name": "get_weather"}}).encode())
    assert r.status_code == 400 and "tools" in r.json()["error"]["message"]
    r = post(server, json.dumps({"messages": USER, "n": 3}).encode())
    assert r.status_code == 400 and "n=1" in r.json()["error"]["message"]


def test_a_prompt_longer_than_the_context_is_400(server):
    long = json.dumps({"messages": [{"role": "user", "content": "weather " * 4000}]}).encode()
    assert len(long) < MAX_BODY
    r = post(server, long)
    assert r.status_code == 400 and r.json()["error"]["code"] == "context_length_exceeded"


def test_overload_is_429_not_a_crash(server):
    body = json.dumps({"messages": USER, "tools": TOOLS, "max_tokens": 300, "temperature": 1.0}).encode()
    with ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(lambda _: post(server, body), range(8)))
    codes = sorted(r.status_code for r in answers)
    # max_concurrency=1: one request runs, one waits in Serve's queue, the rest are turned away.
    assert set(codes) <= {200, 429} and codes.count(200) >= 1 and 429 in codes, codes
    # A turned-away client is told when to come back.
    assert all(float(r.headers["Retry-After"]) > 0 for r in answers if r.status_code == 429)


def _load(server, clients: int, seconds: float) -> dict:
    """The load generator in a second process, as a real client would be."""
    import subprocess
    import sys

    cmd = [
        sys.executable,
        str(Path(__file__).resolve().parents[2] / "bench" / "loadgen.py"),
        "--url",
        server,
        "--api-key",
        API_KEY,
    ]
    cmd += ["--clients", str(clients), "--seconds", str(seconds), "--max-tokens", "8"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300, check=False)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return json.loads(proc.stdout)


@pytest.mark.slow
def test_load_at_the_configured_concurrency_has_no_errors_and_overload_gets_429(server):
    import requests

    steady = _load(server, clients=1, seconds=5)  # serve.max_concurrency is 1 here
    assert steady["ok"] >= 1 and steady["status"] == {"200": steady["ok"]}, steady
    overload = _load(server, clients=8, seconds=5)
    assert set(overload["status"]) <= {"200", "429"}, overload  # no 5xx, no dropped connection
    assert overload["ok"] >= 1 and overload["status"].get("429", 0) >= 1, overload
    assert requests.get(f"{server}/health", timeout=10).status_code == 200


def test_a_normal_request_still_succeeds_after_bad_ones(client):
    resp = client.chat.completions.create(model="tiny", messages=USER, tools=TOOLS, max_tokens=8)
    assert resp.choices[0].message.role == "assistant"
