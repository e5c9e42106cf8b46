"""Evaluation: held-out accuracy per category, and BFCL categories judged by BFCL's own checker."""

import pytest

from itool_ray.data.synth import generate
from itool_ray.engines.base import Completion, GenerationResult
from itool_ray.eval.heldout import evaluate_samples
from itool_ray.models import _byte_tokenizer
from itool_ray.prompts import render_answer, render_prompt


class AnswerBook:
    """An engine that answers each prompt from a table (the ground truth, or a wrong answer)."""

    def __init__(self, answers: dict[str, str]):
        self.answers = answers
        self.calls = 0

    def generate(self, requests):
        self.calls += 1
        return [GenerationResult([Completion(self.answers[r.prompt], [1], None, "stop")]) for r in requests]


def _book(samples, tok, style, wrong=()):
    return AnswerBook(
        {
            render_prompt(tok, s.tools, s.messages, style=style): (
                "[nope(x=1)]" if s.id in wrong else render_answer(s.answer)
            )
            for s in samples
        }
    )


def test_ground_truth_answers_score_full_accuracy_per_category():
    tok = _byte_tokenizer()
    samples = generate(40, seed=1, split="heldout")
    res = evaluate_samples(samples, _book(samples, tok, "compact"), tok, batch_size=16)
    assert res.accuracy["overall"] == 1.0
    assert set(res.accuracy) == {s.category for s in samples} | {"overall"}
    assert res.counts["overall"] == 40 and len(res.records) == 40


def test_wrong_answers_lower_their_category_only():
    tok = _byte_tokenizer()
    samples = generate(40, seed=1, split="heldout")
    wrong = {s.id for s in samples if s.category == "simple"}
    res = evaluate_samples(samples, _book(samples, tok, "compact", wrong), tok, batch_size=16)
    assert res.accuracy["simple"] == 0.0
    assert all(v == 1.0 for k, v in res.accuracy.items() if k not in ("simple", "overall"))
    assert res.accuracy["overall"] == pytest.approx(1 - len(wrong) / 40)


@pytest.mark.bfcl
def test_bfcl_eval_uses_bfcl_prompt_and_checker():
    pytest.importorskip("bfcl_eval")
    from itool_ray.data.bfcl import load_bfcl
    from itool_ray.eval.bfcl import evaluate_bfcl

    tok = _byte_tokenizer()
    cats = ["simple", "irrelevance"]
    samples = [s for s in load_bfcl(cats)]
    res = evaluate_bfcl(cats, _book(samples, tok, "bfcl"), tok, limit=20, batch_size=8)
    assert res.counts == {"simple": 20, "irrelevance": 20, "overall": 40}
    assert res.accuracy["irrelevance"] == 1.0  # "[]" is no call
    assert res.accuracy["simple"] >= 0.95
    assert all(r["exact"] == r["ours_exact"] for r in res.records)


class ContextLimitedBook(AnswerBook):
    """Refuses a whole batch when one prompt is longer than its context, as vLLM and transformers do."""

    def __init__(self, answers, tok, max_model_len):
        super().__init__(answers)
        self.tok, self.max_model_len = tok, max_model_len

    def generate(self, requests):
        for r in requests:
            n = len(self.tok(r.prompt, add_special_tokens=False)["input_ids"])
            if n >= self.max_model_len:
                raise RuntimeError(f"prompt of {n} tokens is longer than the context")
        return super().generate(requests)


def test_over_long_prompts_are_wrong_answers_with_a_reason_and_the_rest_are_scored():
    tok = _byte_tokenizer()
    samples = generate(40, seed=1, split="heldout")
    sizes = sorted(
        len(tok(render_prompt(tok, s.tools, s.messages), add_special_tokens=False)["input_ids"])
        for s in samples
    )
    limit = sizes[len(sizes) // 2]
    book = ContextLimitedBook(_book(samples, tok, "compact").answers, tok, limit)
    with pytest.raises(RuntimeError):  # without the check one long prompt loses the batch
        evaluate_samples(samples, book, tok, batch_size=16)
    res = evaluate_samples(samples, book, tok, batch_size=16, max_model_len=limit)
    long = [r for r in res.records if r.get("too_long")]
    assert res.too_long == len(long) == sum(1 for n in sizes if n >= limit) > 0
    assert all(not r["exact"] and "max_model_len" in r["error"] for r in long)
    assert sum(r["exact"] for r in res.records) == 40 - len(long)  # every prompt that fits was answered
    assert res.to_dict()["too_long"] == len(long)
