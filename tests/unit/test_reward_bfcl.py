"""Our AST reward must agree with BFCL's own checker (bfcl-eval), entry by entry.

For every entry of BFCL's Python categories (simple, multiple, parallel, parallel_multiple, irrelevance)
the ground-truth answer text and corrupted variants of it are judged by BFCL (its decoder
``default_decode_ast_prompting`` + ``ast_checker``, or the relevance rule for irrelevance) and by
``match(...).exact``.
"""

from __future__ import annotations

import collections
import os
import random
import tempfile
from typing import Any

import pytest

pytestmark = pytest.mark.bfcl

os.environ.setdefault("BFCL_PROJECT_ROOT", tempfile.mkdtemp(prefix="bfcl-root-"))
pytest.importorskip("bfcl_eval")

from itool_ray.data.bfcl import load_bfcl  # noqa: E402
from itool_ray.eval.bfcl import bfcl_checker  # noqa: E402
from itool_ray.reward import match  # noqa: E402
from itool_ray.toolcall import FunctionCall, format_calls  # noqa: E402

CATEGORIES = os.environ.get(
    "BFCL_AGREEMENT_CATEGORIES", "simple,multiple,parallel,parallel_multiple,irrelevance"
).split(",")
BFCL_TEST_CATEGORY = {"simple": "simple_python"}
AGREEMENT = 0.995


# -- corrupted variants --------------------------------------------------------------------------------


def _other_value(v: Any) -> Any:
    if isinstance(v, bool):
        return not v
    if isinstance(v, int):
        return v + 1
    if isinstance(v, float):
        return v * 2 + 1.5
    if isinstance(v, str):
        return v + " zz"
    if isinstance(v, list):
        return v[:-1] if v else ["zz"]
    if isinstance(v, dict):
        return {**v, "zz": 1}
    return "zz"


def _with_args(calls: list[FunctionCall], i: int, args: dict[str, Any]) -> list[FunctionCall]:
    return [FunctionCall(c.name, args) if k == i else c for k, c in enumerate(calls)]


def _types(sample: Any, name: str) -> tuple[dict[str, Any], list[str]]:
    fn = next((f for f in sample.tool_functions() if f["name"] == name), {})
    params = fn.get("parameters", {})
    return params.get("properties", {}), params.get("required", [])


def variants(sample: Any, rng: random.Random) -> list[tuple[str, str]]:
    """(kind, answer text) pairs: the ground truth and corruptions of it."""
    out: list[tuple[str, str]] = []
    funcs = sample.tool_functions()
    if not sample.answer:  # irrelevance: the right answer is no call
        fn = funcs[0] if funcs else {"name": "some_function", "parameters": {"properties": {}}}
        props, required = fn["parameters"]["properties"], fn["parameters"].get("required", [])
        dummy = {"string": "x", "integer": 1, "float": 1.0, "boolean": True, "array": [], "dict": {}}
        args = {k: dummy.get(props[k].get("type"), "x") for k in required if k in props}
        return [
            ("no_call", "[]"),
            ("prose", "I cannot answer that with the given functions."),
            ("call", format_calls([FunctionCall(fn["name"], args)])),
            ("positional_call", f"[{fn['name']}(1)]"),
        ]
    calls = sample.calls
    out.append(("ground_truth", format_calls(calls)))
    # every argument with its last accepted alternative (optional ones included)
    alt = []
    for c, acc in zip(calls, sample.accepted or [], strict=False):
        args = {}
        for k, options in acc.arguments.items():
            real = [o for o in options if o != ""]
            if real:
                args[k] = real[-1]
        alt.append(FunctionCall(c.name, args))
    if alt:
        try:
            out.append(("alternatives", _format_nested(alt, sample)))
        except ValueError:
            pass
    i = rng.randrange(len(calls))
    call = calls[i]
    props, required = _types(sample, call.name)
    if call.arguments:
        k = rng.choice(list(call.arguments))
        out.append(
            (
                "wrong_value",
                format_calls(_with_args(calls, i, {**call.arguments, k: _other_value(call.arguments[k])})),
            )
        )
    present_required = [k for k in required if k in call.arguments]
    if present_required:
        k = rng.choice(present_required)
        out.append(
            (
                "missing_required",
                format_calls(_with_args(calls, i, {a: v for a, v in call.arguments.items() if a != k})),
            )
        )
    out.append(("extra_argument", format_calls(_with_args(calls, i, {**call.arguments, "zz_extra": 1}))))
    others = [f["name"] for f in funcs if f["name"] != call.name]
    wrong_name = rng.choice(others) if others else call.name + "_zz"
    out.append(
        (
            "wrong_function",
            format_calls(
                [FunctionCall(wrong_name, c.arguments) if k == i else c for k, c in enumerate(calls)]
            ),
        )
    )
    if len(calls) > 1:
        out.append(("reordered", format_calls(list(reversed(calls)))))
        out.append(("missing_call", format_calls(calls[:-1])))
    out.append(("extra_call", format_calls([*calls, calls[i]])))
    for j, c in enumerate(calls):
        p, _ = _types(sample, c.name)
        for k, v in c.arguments.items():
            t = p.get(k, {}).get("type")
            if t == "float" and type(v) is float and v.is_integer():
                out.append(("int_for_float", format_calls(_with_args(calls, j, {**c.arguments, k: int(v)}))))
            elif t == "float" and type(v) is int:
                out.append(("int_for_float", format_calls(_with_args(calls, j, {**c.arguments, k: v}))))
                out.append(
                    (
                        "float_literal_for_float",
                        format_calls(_with_args(calls, j, {**c.arguments, k: float(v)})),
                    )
                )
            elif t == "integer" and type(v) is int:
                out.append(
                    ("float_for_int", format_calls(_with_args(calls, j, {**c.arguments, k: float(v)})))
                )
                out.append(("string_for_int", format_calls(_with_args(calls, j, {**c.arguments, k: str(v)}))))
            elif t == "array" and isinstance(v, list) and v and all(type(x) is int for x in v):
                out.append(
                    (
                        "floats_in_int_list",
                        format_calls(_with_args(calls, j, {**c.arguments, k: [float(x) for x in v]})),
                    )
                )
            elif t == "string" and isinstance(v, str) and v:
                out.append(
                    (
                        "case_and_spaces",
                        format_calls(_with_args(calls, j, {**c.arguments, k: " " + v.upper() + " "})),
                    )
                )
                out.append(("string_as_list", format_calls(_with_args(calls, j, {**c.arguments, k: [v]}))))
            elif t == "boolean" and type(v) is bool:
                out.append(("int_for_bool", format_calls(_with_args(calls, j, {**c.arguments, k: int(v)}))))
            if isinstance(v, list):
                out.append(
                    ("tuple_for_list", format_calls(_with_args(calls, j, {**c.arguments, k: tuple(v)})))
                )
            if isinstance(v, dict) and v:
                first = next(iter(v))
                out.append(
                    (
                        "dict_missing_key",
                        format_calls(
                            _with_args(
                                calls, j, {**c.arguments, k: {a: x for a, x in v.items() if a != first}}
                            )
                        ),
                    )
                )
                out.append(
                    (
                        "dict_extra_key",
                        format_calls(_with_args(calls, j, {**c.arguments, k: {**v, "zz": "x"}})),
                    )
                )
            if rng.random() < 0.2:
                out.append(("none_value", format_calls(_with_args(calls, j, {**c.arguments, k: None}))))
        acc = (sample.accepted or [])[j].arguments if j < len(sample.accepted or []) else {}
        for k, options in acc.items():
            if "" in options and k not in c.arguments:
                t = p.get(k, {}).get("type")
                filler = {"string": "", "array": [], "integer": 0, "boolean": False, "float": 0.0}.get(t, "")
                out.append(
                    ("optional_filled", format_calls(_with_args(calls, j, {**c.arguments, k: filler})))
                )
    return out


def _format_nested(calls: list[FunctionCall], sample: Any) -> str:
    """The alternatives variant: nested accepted dicts are turned into concrete values first."""
    fixed = []
    for c in calls:
        props, _ = _types(sample, c.name)
        args = {}
        for k, v in c.arguments.items():
            spec = props.get(k, {})
            if spec.get("type") == "dict" and isinstance(v, dict):
                v = {
                    a: [o for o in opts if o != ""][0] for a, opts in v.items() if any(o != "" for o in opts)
                }
            elif (
                spec.get("type") == "array"
                and spec.get("items", {}).get("type") == "dict"
                and isinstance(v, list)
            ):
                v = [
                    {
                        a: [o for o in opts if o != ""][0]
                        for a, opts in d.items()
                        if any(o != "" for o in opts)
                    }
                    for d in v
                ]
            args[k] = v
        fixed.append(FunctionCall(c.name, args))
    return format_calls(fixed)


# -- the test -------------------------------------------------------------------------------------------


def test_exact_agrees_with_bfcl_checker():
    c = bfcl_checker()
    ast_checker, decode, is_empty_output, language, model = (
        c.ast_checker,
        c.decode,
        c.is_empty_output,
        c.language,
        c.model_name,
    )
    samples = load_bfcl(CATEGORIES)
    assert len(samples) > 1000
    rng = random.Random(0)
    total = agree = crashed = 0
    by_kind: collections.Counter[str] = collections.Counter()
    disagreements: list[str] = []
    gt_rejected_by_bfcl: list[str] = []
    for sample in samples:
        category = BFCL_TEST_CATEGORY.get(sample.category, sample.category)
        possible = [{a.name: a.arguments} for a in sample.accepted or []]
        for kind, text in variants(sample, rng):
            try:
                decoded = decode(text)
            except Exception:
                decoded = None
            if "irrelevance" in sample.category:
                bfcl_ok = decoded is None or is_empty_output(decoded)
            elif decoded is None:
                bfcl_ok = False
            else:
                try:
                    bfcl_ok = ast_checker(sample.tools, decoded, possible, language.PYTHON, category, model)[
                        "valid"
                    ]
                except Exception:
                    crashed += 1
                    continue
            ours = match(text, sample)
            total += 1
            by_kind[kind] += 1
            if ours.exact == bfcl_ok:
                agree += 1
            else:
                disagreements.append(
                    f"{sample.id} [{kind}] bfcl={bfcl_ok} ours={ours.exact} ({ours.error}): {text[:160]}"
                )
            if kind == "ground_truth" and not bfcl_ok:
                gt_rejected_by_bfcl.append(sample.id)
    rate = agree / total
    print(
        f"\nBFCL agreement: {agree}/{total} = {rate:.4%} over {len(samples)} entries; checker crashes: {crashed}"
    )
    print("variants:", dict(by_kind))
    print("ground truths BFCL itself rejects:", gt_rejected_by_bfcl)
    for d in disagreements[:50]:
        print("  DISAGREE", d)
    assert by_kind["ground_truth"] == sum(1 for s in samples if s.answer)
    assert rate >= AGREEMENT, f"agreement {rate:.4%} < {AGREEMENT:.1%}"
