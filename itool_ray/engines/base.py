"""The generation-engine protocol shared by the vLLM and transformers engines.

Everything above the engines (mining, MCTS, evaluation, serving) talks to this protocol only, so a
scripted fake engine can stand in for a real one in unit tests.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable


@dataclass
class GenerationRequest:
    prompt: str | list[int]  # prompt text (already rendered with the chat template) or token ids
    n: int = 1
    max_tokens: int = 96
    temperature: float = 0.0  # 0 = greedy
    top_p: float = 1.0
    stop: list[str] = field(default_factory=list)
    seed: int | None = None
    logprobs: bool = False  # return the sampled tokens' logprobs


@dataclass
class Completion:
    text: str
    token_ids: list[int]
    logprobs: list[float] | None  # one per generated token when requested
    finish_reason: str  # "stop" (EOS or a stop string) | "length"


@dataclass
class GenerationResult:
    completions: list[Completion]  # len == request.n


class EngineError(RuntimeError):
    """An engine failed to serve a request (the caller may retry on another replica)."""


@runtime_checkable
class Engine(Protocol):
    def generate(self, requests: list[GenerationRequest]) -> list[GenerationResult]:
        """Serve all requests as one batch; results are in request order."""
        ...

    def score(self, prompt: str | list[int], continuation: str | list[int]) -> list[float]:
        """Token logprobs of ``continuation`` given ``prompt`` (ground-truth perplexity)."""
        ...

    def score_batch(self, items: list[tuple[str | list[int], str | list[int]]]) -> list[list[float]]:
        """``score`` for many (prompt, continuation) pairs in one batch, in order."""
        ...

    def load_weights(self, checkpoint_dir: str) -> None:
        """Replace the weights with a Hugging Face checkpoint of the same architecture."""
        ...

    def close(self) -> None: ...


def score_sequences(
    items: Sequence[tuple[str | list[int], str | list[int]]],
    encode: Callable[[str | list[int], str], list[int]],
    max_tokens: int,
) -> tuple[list[list[int]], list[int]]:
    """Check and encode ``score`` items: (prompt + continuation ids, continuation length) per item.

    ``encode(text_or_ids, where)`` gives token ids; ``max_tokens`` is the most one sequence may hold.
    """
    seqs, lens = [], []
    for i, (prompt, continuation) in enumerate(items):
        p = encode(prompt, f"score item {i} prompt")
        c = encode(continuation, f"score item {i} continuation")
        if not p or not c:
            raise EngineError(f"score item {i}: prompt and continuation must both be non-empty")
        if len(p) + len(c) > max_tokens:
            raise EngineError(
                f"score item {i}: {len(p) + len(c)} tokens do not fit in {max_tokens} (engine.max_model_len)"
            )
        seqs.append(p + c)
        lens.append(len(c))
    return seqs, lens
