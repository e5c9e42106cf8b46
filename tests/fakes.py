"""Scripted stand-ins for a policy engine (no model): fast, deterministic unit tests of the search.

The fake policy is a distribution over complete answers per conversation. Asked to continue
``conversation + SEP + prefix``, it keeps the answers that start with the prefix and returns their
remainders, one character per token, with the exact character-level conditional logprobs of that
distribution. Sampling is stratified (the j-th of n completions takes quantile (j + 1/2) / n), so a
50/50 choice among 3 completions always yields both options.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping

from itool_ray.engines.base import Completion, EngineError, GenerationRequest, GenerationResult

SEP = "\n<answer>"


def prompt_for(conversation: str) -> str:
    return conversation + SEP


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


class FakePolicy:
    """An ``Engine`` (``.generate(requests)``); ``.route`` is the same policy as a ``GenerateFn`` (with keys).

    answers: conversation -> [(answer text, probability)].
    raise_on_calls: engine-call indices (0-based) that raise ``error`` for the whole batch.
    fail_key: a routing key predicate; requests routed to a matching key get an EngineError in place.
    clock, seconds_per_call: a FakeClock advanced on every call (timeouts).
    """

    def __init__(
        self,
        answers: Mapping[str, list[tuple[str, float]]],
        *,
        raise_on_calls: Callable[[int], bool] | None = None,
        error: Exception | None = None,
        fail_key: Callable[[str], bool] | None = None,
        clock: FakeClock | None = None,
        seconds_per_call: float = 0.0,
    ):
        self.answers = {conv: [(a, p) for a, p in opts if p > 0] for conv, opts in answers.items()}
        self.raise_on_calls = raise_on_calls
        self.error = error or EngineError("replica died")
        self.fail_key = fail_key
        self.clock, self.seconds_per_call = clock, seconds_per_call
        self.calls: list[list[GenerationRequest]] = []
        self.keys: list[list[str]] = []
        self.tokens = 0  # generated tokens served

    # -- the two calling conventions -------------------------------------------------------------
    def generate(self, requests: list[GenerationRequest]) -> list[GenerationResult]:
        return self.route(requests, [""] * len(requests))

    def route(self, requests: list[GenerationRequest], keys: list[str]) -> list:
        index = len(self.calls)
        self.calls.append(list(requests))
        self.keys.append(list(keys))
        if self.clock is not None:
            self.clock.now += self.seconds_per_call
        if self.raise_on_calls is not None and self.raise_on_calls(index):
            raise self.error
        out: list = []
        for req, key in zip(requests, keys, strict=True):
            if self.fail_key is not None and self.fail_key(key):
                out.append(EngineError(f"replica for {key} died"))
            else:
                out.append(GenerationResult([self._complete(req, j) for j in range(req.n)]))
        return out

    # -- the policy ------------------------------------------------------------------------------
    def _mass(self, options: list[tuple[str, float]], text: str) -> float:
        return sum(p for a, p in options if a.startswith(text))

    def _complete(self, req: GenerationRequest, j: int) -> Completion:
        assert isinstance(req.prompt, str) and SEP in req.prompt, f"unexpected prompt {req.prompt!r}"
        conversation, prefix = req.prompt.split(SEP, 1)
        options = [(a, p) for a, p in self.answers[conversation] if a.startswith(prefix)]
        if not options:
            return Completion(
                text="", token_ids=[], logprobs=[] if req.logprobs else None, finish_reason="stop"
            )
        total = sum(p for _, p in options)
        u, acc, answer = (j + 0.5) / req.n * total, 0.0, options[-1][0]
        for a, p in options:
            acc += p
            if u < acc:
                answer = a
                break
        rest = answer[len(prefix) :]
        finish = "stop"
        if len(rest) > req.max_tokens:
            rest, finish = rest[: req.max_tokens], "length"
        logprobs = None
        if req.logprobs:
            logprobs = [
                math.log(self._mass(options, prefix + rest[: i + 1]) / self._mass(options, prefix + rest[:i]))
                for i in range(len(rest))
            ]
        self.tokens += len(rest)
        return Completion(
            text=rest, token_ids=[ord(ch) for ch in rest], logprobs=logprobs, finish_reason=finish
        )
