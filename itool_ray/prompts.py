"""The one prompt renderer: training, deficiency mining, MCTS, evaluation and serving all call it.

    prompt = render_prompt(tokenizer, sample.tools, sample.messages, style="compact")
    # prompt ends exactly where the assistant's answer begins; generation stops at end_of_turn(tokenizer)
    train_text = prompt + render_answer(sample.calls) + end_of_turn(tokenizer)

Styles:
- ``compact`` (default): a one-line instruction that teaches the answer format, then only the sample's
  tools as compact JSON. Short prompts are what a 135M model can afford to train on (≈135 tokens).
- ``bfcl``: BFCL's prompting-mode system prompt, verbatim, so evaluation numbers are comparable with the
  leaderboard's prompting handlers.

The no-call answer is the text ``[]`` (NO_CALL_TEXT): BFCL decodes it to an empty list, which its
irrelevance checker counts as "no function call" (bfcl_eval/eval_checker/eval_runner.py,
relevance_file_runner), and it is the answer text's own syntax for "zero calls".
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

STYLES = ("compact", "bfcl")

NO_CALL_TEXT = "[]"

COMPACT_INSTRUCTION = (
    'Reply with only a list of tool calls, like [tool_a(text="Paris", n=2), tool_b(flag=True)]; '
    "reply [] if no tool fits the request. Tools:"
)

# BFCL's default prompting-mode system prompt, as produced by
# bfcl_eval.model_handler.utils.formulate_system_prompt(DEFAULT_SYSTEM_PROMPT_FORMAT, functions) in
# bfcl-eval 2026.3.23 (templates in bfcl_eval/constants/default_prompts.py; DEFAULT_SYSTEM_PROMPT_FORMAT =
# "ret_fmt=python&tool_call_tag=False&func_doc_fmt=json&prompt_fmt=plaintext&style=classic").
# Copied, not imported, so nothing at runtime depends on bfcl-eval. The missing space after
# "functions." and the double space before "You SHOULD NOT" are BFCL's own; {functions} is
# json.dumps(functions, indent=4). tests/unit/test_prompts.py checks it against bfcl-eval when installed.
BFCL_SYSTEM_PROMPT = (
    "You are an expert in composing functions.You are given a question and a set of possible functions. "
    "Based on the question, you will need to make one or more function/tool calls to achieve the purpose. "
    "If none of the functions can be used, point it out. If the given question lacks the parameters required "
    "by the function, also point it out.\n\n"
    "You should only return the function calls in your response.\n\n"
    "If you decide to invoke any of the function(s), you MUST put it in the format of "
    "[func_name1(params_name1=params_value1, params_name2=params_value2...), func_name2(params)].  "
    "You SHOULD NOT include any other text in the response.\n\n"
    "At each turn, you should try your best to complete the tasks requested by the user within the current "
    "turn. Continue to output functions to call until you have fulfilled the user's request to the best of "
    "your ability. Once you have no more functions to call, the system will consider the current turn "
    "complete and proceed to the next turn or task.\n\n"
    "Here is a list of functions in json format that you can invoke.\n{functions}\n"
)

# Schema keys whose value is data, not description: an empty value there still means something.
_VALUE_KEYS = frozenset({"default", "enum", "const", "example", "examples"})


class PromptError(ValueError):
    """A prompt that cannot be rendered (unknown style, empty conversation, a template that drops it)."""


def unwrap_tool(tool: dict[str, Any]) -> dict[str, Any]:
    """``{"type": "function", "function": {...}}`` -> ``{...}``; plain function schemas pass through."""
    if tool.get("type") == "function" and isinstance(tool.get("function"), dict):
        return tool["function"]
    return tool


def _drop_empty(schema: Any, *, in_properties: bool = False) -> Any:
    """Remove empty descriptive fields ("description": "", "required": []) from a JSON schema, recursively.

    Parameter names under "properties" are always kept (an argument with an empty schema is still an
    argument), and so are value-carrying keys such as "default": "".
    """
    if isinstance(schema, dict):
        out = {}
        for key, value in schema.items():
            if in_properties:
                out[key] = _drop_empty(value)
            elif key in _VALUE_KEYS:
                out[key] = value
            else:
                value = _drop_empty(value, in_properties=key == "properties")
                if value in ("", None, [], {}):
                    continue
                out[key] = value
        return out
    if isinstance(schema, list):
        return [_drop_empty(v) for v in schema]
    return schema


def tools_json(tools: Sequence[dict[str, Any]], *, style: str = "compact") -> str:
    """The tool list as it appears in the prompt: one compact line, or BFCL's indented JSON."""
    functions = [unwrap_tool(t) for t in tools]
    if style == "bfcl":
        return json.dumps(functions, indent=4)
    return json.dumps([_drop_empty(f) for f in functions], ensure_ascii=False, separators=(",", ":"))


def system_prompt(tools: Sequence[dict[str, Any]], *, style: str = "compact") -> str:
    if style == "compact":
        return f"{COMPACT_INSTRUCTION}\n{tools_json(tools, style=style)}"
    if style == "bfcl":
        return BFCL_SYSTEM_PROMPT.format(functions=tools_json(tools, style=style))
    raise PromptError(f"unknown prompt style {style!r} (styles: {', '.join(STYLES)})")


def _apply_template(tokenizer: Any, chat: list[dict[str, str]]) -> str:
    text = tokenizer.apply_chat_template(chat, tokenize=False, add_generation_prompt=True)
    if not isinstance(text, str):
        raise PromptError(
            f"{type(tokenizer).__name__}.apply_chat_template returned {type(text).__name__}, not text"
        )
    return text


def render_prompt(
    tokenizer: Any,
    tools: Sequence[dict[str, Any]],
    messages: Sequence[dict[str, Any]],
    *,
    style: str = "compact",
) -> str:
    """System message (instruction + tools) + the conversation, through the tokenizer's chat template.

    The returned text ends exactly where the assistant's answer begins. A leading system message of the
    conversation is merged after ours (BFCL does the same). Templates without a system role get the
    system text at the head of the first user message instead.
    """
    if not messages:
        raise PromptError("messages is empty: a prompt needs at least one user message")
    system = system_prompt(tools, style=style)
    rest = [{"role": m["role"], "content": m["content"]} for m in messages]
    if rest[0]["role"] == "system":
        system = f"{system}\n\n{rest.pop(0)['content']}"
    from jinja2 import TemplateError

    try:
        text = _apply_template(tokenizer, [{"role": "system", "content": system}, *rest])
    except TemplateError:  # templates that reject the system role (e.g. Gemma's raise_exception)
        text = None
    if text is not None and system.strip() in text:
        return text
    # The template refused or dropped the system message: carry it in the first user message.
    if not rest or rest[0]["role"] != "user":
        raise PromptError(
            f"the chat template of {getattr(tokenizer, 'name_or_path', type(tokenizer).__name__)!r} drops the "
            "system message and the conversation does not start with a user message to carry it"
        )
    rest[0] = {"role": "user", "content": f"{system}\n\n{rest[0]['content']}"}
    return _apply_template(tokenizer, rest)


def end_of_turn(tokenizer: Any) -> str:
    """The special token the template closes an assistant turn with ("<|im_end|>" for ChatML).

    Training appends it after the answer; generation stops on it. Found by rendering a one-turn
    conversation; falls back to the tokenizer's eos token for templates that end turns without one.
    """
    marker = "\u2063ANSWER\u2063"
    chat = [{"role": "user", "content": "q"}, {"role": "assistant", "content": marker}]
    from jinja2 import TemplateError

    try:
        text = tokenizer.apply_chat_template(chat, tokenize=False)
    except TemplateError:  # a template that cannot render this turn: the eos token is the best answer left
        text = ""
    tail = text.split(marker, 1)[1].lstrip() if marker in text else ""
    for token in sorted(getattr(tokenizer, "all_special_tokens", []) or [], key=len, reverse=True):
        if token and tail.startswith(token):
            return token
    added = [t.content for t in getattr(tokenizer, "added_tokens_decoder", {}).values() if t.special]
    for token in sorted(added, key=len, reverse=True):
        if token and tail.startswith(token):
            return token
    if not tokenizer.eos_token:
        raise PromptError("cannot tell how the chat template ends a turn, and the tokenizer has no eos token")
    return tokenizer.eos_token


def render_answer(calls: Sequence[Any]) -> str:
    """Target text for training: ``[f(a=1), g(b="x")]``, or NO_CALL_TEXT when the answer is no call.

    ``calls`` holds FunctionCall objects or ``{name, arguments}`` dicts (a Sample's ``answer``).
    """
    if not calls:
        return NO_CALL_TEXT
    from itool_ray.toolcall import FunctionCall, format_calls

    return format_calls([c if isinstance(c, FunctionCall) else FunctionCall.from_dict(c) for c in calls])


def render_example(tokenizer: Any, sample: Any, style: str = "compact") -> tuple[str, str]:
    """(prompt_text, answer_text) for a Sample (or a sample dict).

    The full training text is ``prompt_text + answer_text + end_of_turn(tokenizer)``.
    """
    if isinstance(sample, dict):
        tools, messages, answer = sample["tools"], sample["messages"], sample.get("answer", [])
    else:
        tools, messages, answer = sample.tools, sample.messages, sample.answer
    return render_prompt(tokenizer, tools, messages, style=style), render_answer(answer)
