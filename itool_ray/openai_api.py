"""OpenAI chat completions <-> our prompt and answer formats: the pure part of ``itool serve``.

    req = parse_request(body)                                   # RequestError(status, message, param)
    prompt = render_request(tokenizer, req, style=cfg.data.prompt_style)
    gen = generation_request(req, prompt, stop=[end_of_turn(tokenizer)], default_max_tokens=96)
    out = translate_output(completion.text, completion.finish_reason, tools=req.tools, tool_choice=...)
    body = chat_response(out, model=..., prompt_tokens=..., completion_tokens=...)

The Ray Serve deployment (actors/serve_app.py) does the I/O; everything here is data in, data out, and
is unit-tested with fixed model text.

Requests: ``messages``, ``tools`` (OpenAI function tools), ``tool_choice`` ("auto" or "none"),
``max_tokens`` (or ``max_completion_tokens``), ``temperature`` (default 0, greedy: tool-call arguments
should not be sampled unless asked; OpenAI's default is 1), ``top_p``, ``stop``, ``seed``, ``n`` (1
only). ``stream``, ``logprobs`` and ``tool_choice`` "required" or a named tool are refused with 400
rather than ignored; other OpenAI fields (``user``, penalties, ``parallel_tool_calls`` ...) are ignored.
The ``model`` field is not checked: a server hosts one model and answers with its own id.

Conversation rendering follows the training data (ToolACE, see itool_ray/data/toolace.py): an
assistant turn with ``tool_calls`` becomes our answer text ``[f(a=1)]`` (toolcall.format_calls); a run
of ``tool`` messages becomes one ``tool`` turn ``[{"name": <called function>, "results": <content, as
JSON when it parses>}]``, the name found through ``tool_call_id``; ``developer`` is ``system``.

Model output is hostile: it is read only with ``toolcall.parse``. It becomes ``tool_calls`` (content
null, finish_reason "tool_calls") only when it parses as a non-empty call list, every call names a tool
of this request, and generation ended on its own. Otherwise the text is returned as ``content``:
prose, unparsable text, the no-call answer ``[]``, calls naming tools the request did not offer
(never handed to a client as calls it would execute), text cut by ``max_tokens`` (finish_reason
"length": a cut call list may be missing calls), and everything when ``tool_choice`` is "none".
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from itool_ray.engines.base import GenerationRequest
from itool_ray.prompts import PromptError, render_prompt
from itool_ray.toolcall import MAX_DEPTH, FunctionCall, ToolCallParseError, format_calls, parse

MAX_STOP_STRINGS = 4
OBJECT_COMPLETION = "chat.completion"


class RequestError(ValueError):
    """A request the server refuses; becomes an OpenAI error body with HTTP ``status``."""

    def __init__(
        self,
        message: str,
        *,
        status: int = 400,
        param: str | None = None,
        code: str | None = None,
        type: str = "invalid_request_error",
    ):
        super().__init__(message)
        self.message = message
        self.status = status
        self.param = param
        self.code = code
        self.type = type

    def body(self) -> dict[str, Any]:
        return error_body(self.message, type=self.type, param=self.param, code=self.code)


def error_body(
    message: str, *, type: str, param: str | None = None, code: str | None = None
) -> dict[str, Any]:
    """OpenAI's error shape: ``{"error": {"message", "type", "param", "code"}}``."""
    return {"error": {"message": message, "type": type, "param": param, "code": code}}


# ---------------------------------------------------------------------------------------------------
# Request models
# ---------------------------------------------------------------------------------------------------


class _Model(BaseModel):
    model_config = ConfigDict(extra="ignore")


class FunctionDef(_Model):
    name: str = Field(min_length=1, max_length=256)
    description: str | None = None
    parameters: dict[str, Any] | None = None

    def schema_dict(self) -> dict[str, Any]:
        """The function schema as the prompt shows it (prompts.tools_json drops empty fields)."""
        return self.model_dump(exclude_none=True)


class Tool(_Model):
    type: Literal["function"]
    function: FunctionDef


class ToolCallFunction(_Model):
    name: str = Field(min_length=1)
    arguments: str  # a JSON object, as text (OpenAI's wire format)


class ToolCall(_Model):
    id: str
    type: Literal["function"] = "function"
    function: ToolCallFunction


class ChatMessage(_Model):
    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: str | list[dict[str, Any]] | None = None
    name: str | None = None
    tool_calls: list[ToolCall] | None = None
    tool_call_id: str | None = None

    @model_validator(mode="after")
    def _content_present(self) -> ChatMessage:
        if isinstance(self.content, list):
            for i, part in enumerate(self.content):
                if part.get("type") != "text" or not isinstance(part.get("text"), str):
                    raise ValueError(
                        f"content[{i}]: only text parts ({{'type': 'text', 'text': ...}}) are supported, "
                        f"got type {part.get('type')!r}"
                    )
        if self.tool_calls and self.role != "assistant":
            raise ValueError(f"tool_calls is only allowed on assistant messages, not {self.role!r}")
        if self.content is None and not (self.role == "assistant" and self.tool_calls):
            raise ValueError(f"a {self.role!r} message needs content")
        return self

    @property
    def text(self) -> str:
        if isinstance(self.content, list):
            return "".join(part["text"] for part in self.content)
        return self.content or ""


MAX_TOKENS_LIMIT = 1 << 20


class ChatCompletionRequest(_Model):
    model: str | None = None
    messages: list[ChatMessage] = Field(min_length=1)
    tools: list[Tool] | None = None
    tool_choice: str | dict[str, Any] | None = None
    # Every number bounded: a value an engine cannot take (a seed beyond 64 bits) would fail the whole
    # batch it was served in, other clients' requests included.
    max_tokens: int | None = Field(None, ge=1, le=MAX_TOKENS_LIMIT)
    max_completion_tokens: int | None = Field(None, ge=1, le=MAX_TOKENS_LIMIT)
    temperature: float | None = Field(None, ge=0, le=2)
    top_p: float | None = Field(None, gt=0, le=1)
    n: int | None = None
    stop: str | list[str] | None = None
    seed: int | None = Field(None, ge=0, lt=2**63)
    stream: bool | None = None
    logprobs: bool | None = None

    @field_validator("tool_choice")
    @classmethod
    def _tool_choice_supported(cls, v: Any) -> Any:
        if v is None or v in ("auto", "none"):
            return v
        shown = v if isinstance(v, str) else "a named tool"
        raise ValueError(f"tool_choice {shown!r} is not supported; use 'auto' or 'none'")

    @field_validator("n")
    @classmethod
    def _one_choice(cls, v: int | None) -> int | None:
        if v is not None and v != 1:
            raise ValueError(f"only n=1 is supported (got {v}); send separate requests for more samples")
        return v

    @field_validator("stream")
    @classmethod
    def _no_stream(cls, v: bool | None) -> bool | None:
        if v:
            raise ValueError("streaming is not supported; send stream=false")
        return v

    @field_validator("logprobs")
    @classmethod
    def _no_logprobs(cls, v: bool | None) -> bool | None:
        if v:
            raise ValueError("logprobs are not supported")
        return v

    @field_validator("stop")
    @classmethod
    def _few_stops(cls, v: str | list[str] | None) -> str | list[str] | None:
        if isinstance(v, list) and len(v) > MAX_STOP_STRINGS:
            raise ValueError(f"at most {MAX_STOP_STRINGS} stop strings (got {len(v)})")
        return v

    @field_validator("tools")
    @classmethod
    def _unique_names(cls, v: list[Tool] | None) -> list[Tool] | None:
        seen: set[str] = set()
        for t in v or []:
            if t.function.name in seen:
                raise ValueError(f"two tools are named {t.function.name!r}; tool names must be unique")
            seen.add(t.function.name)
        return v

    @property
    def tool_names(self) -> list[str]:
        return [t.function.name for t in self.tools or []]

    @property
    def answer_max_tokens(self) -> int | None:
        return self.max_completion_tokens if self.max_completion_tokens is not None else self.max_tokens


def parse_request(body: bytes | str) -> ChatCompletionRequest:
    """Decode and validate a request body; RequestError (400) names what is wrong and where."""
    try:
        data = json.loads(body)
    except (ValueError, RecursionError) as e:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
        raise RequestError(f"the request body is not valid JSON: {e}", code="invalid_json") from None
    if not isinstance(data, dict):
        raise RequestError(f"the request body must be a JSON object, got {type(data).__name__}")
    try:
        return ChatCompletionRequest.model_validate(data)
    except ValidationError as e:
        raise _as_request_error(e) from None
    except RecursionError:
        raise RequestError("the request body is nested too deeply") from None


def _as_request_error(e: ValidationError) -> RequestError:
    errors = e.errors(include_url=False)
    parts = []
    for err in errors[:5]:
        loc = ".".join(str(p) for p in err["loc"] if not _is_union_tag(p)) or "body"
        msg = err["msg"].removeprefix("Value error, ")
        parts.append(f"{loc}: {msg}")
    more = f" (and {len(errors) - 5} more)" if len(errors) > 5 else ""
    param = ".".join(str(p) for p in errors[0]["loc"] if not _is_union_tag(p)) or None
    return RequestError("invalid request: " + "; ".join(parts) + more, param=param)


def _is_union_tag(p: Any) -> bool:
    """Pydantic puts the tried union member (``str``, ``list[dict[str,any]]``) into error locations."""
    return isinstance(p, str) and (p in ("str", "int", "float", "bool", "none") or "[" in p)


# ---------------------------------------------------------------------------------------------------
# Request -> prompt and generation request
# ---------------------------------------------------------------------------------------------------


def conversation(messages: Sequence[ChatMessage]) -> list[dict[str, str]]:
    """OpenAI messages -> our ``{role, content}`` turns, rendered as the training data renders them."""
    out: list[dict[str, str]] = []
    called: dict[str, str] = {}  # tool_call_id -> function name
    results: list[dict[str, Any]] = []

    def flush_results() -> None:
        if results:
            out.append({"role": "tool", "content": json.dumps(results, ensure_ascii=False)})
            results.clear()

    for i, m in enumerate(messages):
        if m.role == "tool":
            name = called.get(m.tool_call_id or "") or m.name
            result: dict[str, Any] = {"name": name} if name else {}
            result["results"] = _json_or_text(m.text)
            results.append(result)
            continue
        flush_results()
        if m.role == "assistant" and m.tool_calls:
            calls = []
            for j, tc in enumerate(m.tool_calls):
                where = f"messages.{i}.tool_calls.{j}.function"
                try:
                    args = json.loads(tc.function.arguments) if tc.function.arguments.strip() else {}
                except (ValueError, RecursionError):
                    raise RequestError(
                        f"{where}.arguments is not valid JSON", param=f"{where}.arguments"
                    ) from None
                if not isinstance(args, dict):
                    raise RequestError(f"{where}.arguments must be a JSON object", param=f"{where}.arguments")
                if _nesting(args) > MAX_DEPTH:
                    raise RequestError(
                        f"{where}.arguments is nested deeper than {MAX_DEPTH} levels",
                        param=f"{where}.arguments",
                    )
                calls.append(FunctionCall(tc.function.name, args))
                called[tc.id] = tc.function.name
            try:
                content = format_calls(calls)
            except ValueError as e:
                raise RequestError(
                    f"messages.{i}.tool_calls: {e}", param=f"messages.{i}.tool_calls"
                ) from None
        else:
            content = m.text
        role = "system" if m.role == "developer" else m.role
        out.append({"role": role, "content": content})
    flush_results()
    return out


def _nesting(value: Any) -> int:
    """How deep lists and objects nest in a JSON value (iterative: no recursion on hostile input)."""
    deepest, stack = 0, [(value, 1)]
    while stack:
        v, d = stack.pop()
        if isinstance(v, dict | list):
            deepest = max(deepest, d)
            stack.extend((x, d + 1) for x in (v.values() if isinstance(v, dict) else v))
    return deepest


def _json_or_text(text: str) -> Any:
    """A tool result as JSON when it is JSON of sane depth, else as the text it is."""
    try:
        value = json.loads(text)
    except (ValueError, RecursionError):
        return text
    return value if _nesting(value) <= MAX_DEPTH else text


def render_request(tokenizer: Any, req: ChatCompletionRequest, *, style: str) -> str:
    """The prompt text for a request: our system prompt with the request's tools, then the conversation."""
    tools = [t.function.schema_dict() for t in req.tools or []]
    try:
        return render_prompt(tokenizer, tools, conversation(req.messages), style=style)
    except PromptError as e:
        raise RequestError(f"cannot render the conversation: {e}", param="messages") from None


def generation_request(
    req: ChatCompletionRequest, prompt: str, *, stop: Sequence[str], default_max_tokens: int
) -> GenerationRequest:
    """One engine request; ``stop`` (the end-of-turn marker) comes before the client's stop strings."""
    client_stop = [req.stop] if isinstance(req.stop, str) else list(req.stop or [])
    return GenerationRequest(
        prompt=prompt,
        n=1,
        max_tokens=req.answer_max_tokens or default_max_tokens,
        temperature=req.temperature if req.temperature is not None else 0.0,
        top_p=req.top_p if req.top_p is not None else 1.0,
        stop=[*stop, *(s for s in client_stop if s)],
        seed=req.seed,
    )


# ---------------------------------------------------------------------------------------------------
# Model text -> response
# ---------------------------------------------------------------------------------------------------


def new_call_id() -> str:
    return f"call_{uuid.uuid4().hex[:24]}"


@dataclass
class AssistantOutput:
    content: str | None
    tool_calls: list[dict[str, Any]] = field(default_factory=list)
    finish_reason: str = "stop"  # "stop" | "length" | "tool_calls"

    def message(self) -> dict[str, Any]:
        msg: dict[str, Any] = {"role": "assistant", "content": self.content}
        if self.tool_calls:
            msg["tool_calls"] = self.tool_calls
        return msg


def translate_output(
    text: str,
    finish_reason: str,
    *,
    tool_names: Sequence[str],
    tool_choice: str | None = "auto",
    new_id: Callable[[], str] = new_call_id,
) -> AssistantOutput:
    """Model text -> the assistant message: tool calls, or the text as content (rules in the module doc)."""
    as_text = AssistantOutput(content=text, finish_reason="length" if finish_reason == "length" else "stop")
    if tool_choice == "none" or finish_reason == "length" or not tool_names:
        return as_text
    try:
        calls = parse(text, tool_names=tool_names)
    except ToolCallParseError:
        return as_text
    offered = set(tool_names)
    if not calls or any(c.name not in offered for c in calls):
        return as_text
    tool_calls = [
        {
            "id": new_id(),
            "type": "function",
            "function": {"name": c.name, "arguments": json.dumps(c.arguments, ensure_ascii=False)},
        }
        for c in calls
    ]
    return AssistantOutput(content=None, tool_calls=tool_calls, finish_reason="tool_calls")


def chat_response(
    out: AssistantOutput,
    *,
    model: str,
    prompt_tokens: int,
    completion_tokens: int,
    response_id: str | None = None,
    created: int | None = None,
) -> dict[str, Any]:
    """The ``chat.completion`` object (OpenAI schema) for one choice."""
    return {
        "id": response_id or f"chatcmpl-{uuid.uuid4().hex}",
        "object": OBJECT_COMPLETION,
        "created": int(time.time()) if created is None else created,
        "model": model,
        "choices": [
            {"index": 0, "message": out.message(), "finish_reason": out.finish_reason, "logprobs": None}
        ],
        "usage": {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens,
        },
    }


def models_response(model: str, *, created: int) -> dict[str, Any]:
    """``GET /v1/models``: the one model this server hosts."""
    return {
        "object": "list",
        "data": [{"id": model, "object": "model", "created": created, "owned_by": "itool-ray"}],
    }
