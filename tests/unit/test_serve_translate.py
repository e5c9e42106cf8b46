"""The pure half of `itool serve`: OpenAI request -> our prompt, model text -> OpenAI message."""

from __future__ import annotations

import json

import pytest
from tools import weather_tool

from itool_ray.openai_api import (
    RequestError,
    chat_response,
    conversation,
    generation_request,
    parse_request,
    render_request,
    translate_output,
)

WEATHER = {"type": "function", "function": weather_tool(unit=False, description="Weather for a city")}
SPACED = {"type": "function", "function": {"name": "Get Weather Forecast", "parameters": {"type": "object"}}}
USER = [{"role": "user", "content": "Weather in Paris?"}]


def request(**fields) -> bytes:
    return json.dumps({"model": "m", "messages": USER, "tools": [WEATHER], **fields}).encode()


def ids():
    counter = iter(range(100))
    return lambda: f"call_{next(counter)}"


@pytest.fixture(scope="module")
def chatml():
    from itool_ray.models import _byte_tokenizer

    return _byte_tokenizer()


# ---------------------------------------------------------------------------------- model text -> message
def test_call_text_becomes_tool_calls_with_json_arguments():
    out = translate_output(
        '[get_weather(city="Paris", days=3)]', "stop", tool_names=["get_weather"], new_id=ids()
    )
    assert out.finish_reason == "tool_calls"
    assert out.content is None
    assert out.tool_calls == [
        {
            "id": "call_0",
            "type": "function",
            "function": {"name": "get_weather", "arguments": '{"city": "Paris", "days": 3}'},
        }
    ]


def test_parallel_calls_keep_their_order_and_get_distinct_ids():
    text = '[get_weather(city="Paris"), get_weather(city="Oslo")]'
    out = translate_output(text, "stop", tool_names=["get_weather"], new_id=ids())
    assert [json.loads(c["function"]["arguments"])["city"] for c in out.tool_calls] == ["Paris", "Oslo"]
    assert [c["id"] for c in out.tool_calls] == ["call_0", "call_1"]


def test_tool_names_with_spaces_are_read():
    out = translate_output(
        '[Get Weather Forecast(city="Paris")]', "stop", tool_names=["Get Weather Forecast"]
    )
    assert out.tool_calls[0]["function"]["name"] == "Get Weather Forecast"


def test_nested_values_become_json():
    text = '[get_weather(city="Paris", opts={"units": ["c", "f"], "n": -1.5, "x": None, "t": (1, 2)})]'
    out = translate_output(text, "stop", tool_names=["get_weather"])
    args = json.loads(out.tool_calls[0]["function"]["arguments"])
    assert args["opts"] == {"units": ["c", "f"], "n": -1.5, "x": None, "t": [1, 2]}


def test_garbage_text_becomes_content():
    out = translate_output("ĠĠx(]]( the weather", "stop", tool_names=["get_weather"])
    assert (out.content, out.tool_calls, out.finish_reason) == ("ĠĠx(]]( the weather", [], "stop")


def test_prose_becomes_content():
    out = translate_output("It is sunny in Paris.", "stop", tool_names=["get_weather"])
    assert out.content == "It is sunny in Paris." and out.finish_reason == "stop"


def test_no_call_answer_is_content():
    out = translate_output("[]", "stop", tool_names=["get_weather"])
    assert (out.content, out.tool_calls, out.finish_reason) == ("[]", [], "stop")


def test_calls_to_tools_not_offered_are_content_not_tool_calls():
    text = '[get_weather(city="Paris"), delete_all_files(path="/")]'
    out = translate_output(text, "stop", tool_names=["get_weather"])
    assert out.tool_calls == [] and out.content == text and out.finish_reason == "stop"


def test_code_is_never_evaluated():
    text = '[get_weather(city=__import__("os").system("touch /tmp/pwned"))]'
    out = translate_output(text, "stop", tool_names=["get_weather"])
    assert out.tool_calls == [] and out.content == text


def test_text_cut_by_max_tokens_is_content_with_finish_reason_length():
    out = translate_output(
        '[get_weather(city="Paris"), get_weather(city=', "length", tool_names=["get_weather"]
    )
    assert (out.content, out.tool_calls, out.finish_reason) == (
        '[get_weather(city="Paris"), get_weather(city=',
        [],
        "length",
    )


def test_tool_choice_none_never_returns_calls():
    out = translate_output(
        '[get_weather(city="Paris")]', "stop", tool_names=["get_weather"], tool_choice="none"
    )
    assert out.tool_calls == [] and out.content == '[get_weather(city="Paris")]'


def test_without_tools_calls_stay_text():
    out = translate_output('[get_weather(city="Paris")]', "stop", tool_names=[])
    assert out.tool_calls == [] and out.finish_reason == "stop"


def test_response_follows_openai_schema():
    out = translate_output('[get_weather(city="Paris")]', "stop", tool_names=["get_weather"], new_id=ids())
    body = chat_response(
        out, model="m", prompt_tokens=10, completion_tokens=7, response_id="chatcmpl-1", created=5
    )
    assert body["object"] == "chat.completion" and body["model"] == "m"
    choice = body["choices"][0]
    assert choice["index"] == 0 and choice["finish_reason"] == "tool_calls"
    assert choice["message"]["role"] == "assistant" and choice["message"]["content"] is None
    assert body["usage"] == {"prompt_tokens": 10, "completion_tokens": 7, "total_tokens": 17}
    text = chat_response(
        translate_output("hi", "stop", tool_names=[]), model="m", prompt_tokens=1, completion_tokens=1
    )
    assert (
        "tool_calls" not in text["choices"][0]["message"] and text["choices"][0]["message"]["content"] == "hi"
    )


def test_response_validates_with_the_openai_client_types():
    from openai.types.chat import ChatCompletion

    out = translate_output('[get_weather(city="Paris")]', "stop", tool_names=["get_weather"])
    parsed = ChatCompletion.model_validate(
        chat_response(out, model="m", prompt_tokens=3, completion_tokens=4)
    )
    call = parsed.choices[0].message.tool_calls[0]
    assert call.function.name == "get_weather" and json.loads(call.function.arguments) == {"city": "Paris"}


# ---------------------------------------------------------------------------------- request validation
def test_a_valid_request_parses():
    req = parse_request(request(max_tokens=20, temperature=0.7, tool_choice="auto", stop="\n", n=1))
    assert req.tool_names == ["get_weather"] and req.answer_max_tokens == 20


@pytest.mark.parametrize(
    ("body", "needle"),
    [
        (b"{not json", "not valid JSON"),
        (b"\xff\xfe", "not valid JSON"),
        (b"[1, 2]", "must be a JSON object"),
        (b"[" * 100_000 + b"]" * 100_000, "not valid JSON"),
        (json.dumps({"model": "m"}).encode(), "messages: Field required"),
        (json.dumps({"messages": []}).encode(), "messages: List should have at least 1 item"),
        (request(tools={"name": "x"}), "tools: Input should be a valid list"),
        (
            request(tools=[{"type": "function", "function": {"description": "d"}}]),
            "tools.0.function.name: Field required",
        ),
        (request(tools=[{"type": "function", "function": {"name": ""}}]), "tools.0.function.name"),
        (request(tools=[WEATHER, WEATHER]), "tool names must be unique"),
        (request(n=2), "only n=1 is supported"),
        (request(stream=True), "streaming is not supported"),
        (request(tool_choice="required"), "tool_choice 'required' is not supported"),
        (request(tool_choice={"type": "function", "function": {"name": "get_weather"}}), "a named tool"),
        (request(max_tokens=0), "max_tokens"),
        (request(max_tokens=10**15), "max_tokens"),
        (request(seed=2**64), "seed"),
        (request(seed=-1), "seed"),
        (request(temperature=-1), "temperature"),
        (request(messages=[{"role": "robot", "content": "hi"}]), "messages.0.role"),
        (request(messages=[{"role": "user"}]), "a 'user' message needs content"),
        (request(messages=[{"role": "user", "content": 5}]), "messages.0.content"),
        (
            request(
                messages=[{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "x"}}]}]
            ),
            "only text parts",
        ),
    ],
)
def test_bad_requests_are_400_with_a_message_naming_the_problem(body, needle):
    with pytest.raises(RequestError) as e:
        parse_request(body)
    assert e.value.status == 400
    assert needle in e.value.message
    assert e.value.body()["error"]["type"] == "invalid_request_error"


def test_unknown_openai_fields_are_ignored():
    req = parse_request(request(user="u", presence_penalty=0.5, parallel_tool_calls=True))
    assert req.tool_names == ["get_weather"]


# ---------------------------------------------------------------------------------- request -> prompt
def test_tool_history_renders_like_the_training_data():
    msgs = parse_request(
        request(
            messages=[
                {"role": "user", "content": "Weather in Paris for 3 days?"},
                {
                    "role": "assistant",
                    "content": None,
                    "tool_calls": [
                        {
                            "id": "c1",
                            "type": "function",
                            "function": {
                                "name": "Get Weather Forecast",
                                "arguments": '{"city": "Paris", "days": 3}',
                            },
                        }
                    ],
                },
                {"role": "tool", "tool_call_id": "c1", "content": '{"high": 24}'},
                {"role": "assistant", "content": "Sunny, 24."},
                {
                    "role": "user",
                    "content": [{"type": "text", "text": "And "}, {"type": "text", "text": "Oslo?"}],
                },
            ],
            tools=[SPACED],
        )
    ).messages
    assert conversation(msgs) == [
        {"role": "user", "content": "Weather in Paris for 3 days?"},
        {"role": "assistant", "content": '[Get Weather Forecast(city="Paris", days=3)]'},
        {"role": "tool", "content": '[{"name": "Get Weather Forecast", "results": {"high": 24}}]'},
        {"role": "assistant", "content": "Sunny, 24."},
        {"role": "user", "content": "And Oslo?"},
    ]


def test_consecutive_tool_results_merge_into_one_turn():
    calls = [
        {
            "id": f"c{i}",
            "type": "function",
            "function": {"name": "get_weather", "arguments": json.dumps({"city": c})},
        }
        for i, c in enumerate(["Paris", "Oslo"])
    ]
    msgs = parse_request(
        request(
            messages=[
                *USER,
                {"role": "assistant", "tool_calls": calls},
                {"role": "tool", "tool_call_id": "c0", "content": "sunny"},
                {"role": "tool", "tool_call_id": "c1", "content": "[1, 2]"},
            ]
        )
    ).messages
    turns = conversation(msgs)
    assert turns[1]["content"] == '[get_weather(city="Paris"), get_weather(city="Oslo")]'
    assert json.loads(turns[2]["content"]) == [
        {"name": "get_weather", "results": "sunny"},
        {"name": "get_weather", "results": [1, 2]},
    ]
    assert len(turns) == 3


def test_prior_call_arguments_that_are_not_a_json_object_are_400():
    bad = {"id": "c", "type": "function", "function": {"name": "get_weather", "arguments": "[1]"}}
    msgs = parse_request(request(messages=[*USER, {"role": "assistant", "tool_calls": [bad]}])).messages
    with pytest.raises(RequestError, match="must be a JSON object"):
        conversation(msgs)


def test_prompt_carries_tools_and_ends_at_the_answer(chatml):
    req = parse_request(request(messages=[{"role": "developer", "content": "Be brief."}, *USER]))
    prompt = render_request(chatml, req, style="compact")
    assert '"name":"get_weather"' in prompt and "Be brief." in prompt
    assert prompt.endswith("<|im_start|>assistant\n")


def test_generation_request_defaults_to_greedy_and_stops_at_end_of_turn():
    req = parse_request(request(stop=["\n\n"]))
    gen = generation_request(req, "P", stop=["<|im_end|>"], default_max_tokens=96)
    assert (gen.prompt, gen.n, gen.max_tokens, gen.temperature, gen.top_p) == ("P", 1, 96, 0.0, 1.0)
    assert gen.stop == ["<|im_end|>", "\n\n"]
    gen = generation_request(
        parse_request(request(max_completion_tokens=7, temperature=1.2)), "P", stop=[], default_max_tokens=96
    )
    assert (gen.max_tokens, gen.temperature) == (7, 1.2)


# ---------------------------------------------------------------------------------- the API key
def test_api_key_comes_from_the_environment_or_a_file_and_never_from_the_config(tmp_path):
    from actors.serve_app import resolve_api_key
    from itool_ray.config import ConfigError, ServeConfig, load_config

    assert resolve_api_key(ServeConfig(), {}) is None  # no key: no auth
    assert resolve_api_key(ServeConfig(), {"ITOOL_API_KEY": " k1 \n"}) == "k1"
    with pytest.raises(ConfigError, match="empty"):
        resolve_api_key(ServeConfig(), {"ITOOL_API_KEY": "  "})
    f = tmp_path / "key"
    f.write_text("k2\n")
    assert resolve_api_key(ServeConfig(api_key_file=str(f)), {"ITOOL_API_KEY": "k1"}) == "k2"
    f.write_text("")
    with pytest.raises(ConfigError, match="empty"):
        resolve_api_key(ServeConfig(api_key_file=str(f)), {})
    with pytest.raises(ConfigError, match="api_key_file"):
        resolve_api_key(ServeConfig(api_key_file=str(tmp_path / "nope")), {})
    # The key itself cannot be put in a config, so `itool run` can never write it into <run>/config.yaml.
    with pytest.raises(ConfigError, match="serve.api_key"):
        load_config("tiny", ["--serve.api_key", "secret"])
    assert "secret" not in load_config("tiny").to_yaml()


def test_deeply_nested_history_is_a_400_or_plain_text_never_a_crash():
    from itool_ray.models import _byte_tokenizer

    deep = "[" * 900 + "]" * 900
    tools = [
        {"type": "function", "function": {"name": "f", "parameters": {"type": "object", "properties": {}}}}
    ]

    def history(arguments: str, result: str) -> bytes:
        call = {"id": "c1", "type": "function", "function": {"name": "f", "arguments": arguments}}
        messages = [
            {"role": "user", "content": "hi"},
            {"role": "assistant", "content": None, "tool_calls": [call]},
            {"role": "tool", "tool_call_id": "c1", "content": result},
        ]
        return json.dumps({"messages": messages, "tools": tools}).encode()

    with pytest.raises(RequestError) as e:
        conversation(parse_request(history('{"a": ' + deep + "}", "ok")).messages)
    assert e.value.status == 400 and "nested deeper" in e.value.message
    req = parse_request(history('{"a": 1}', deep))  # a deep tool result stays text
    assert "[[[" in render_request(_byte_tokenizer(), req, style="compact")
