"""BFCL (Berkeley Function Calling Leaderboard v4) single-turn categories as Samples.

The data comes from the installed ``bfcl-eval`` package (``pip install --no-deps bfcl-eval==2026.3.23``):
``bfcl_eval/data/BFCL_v4_<stem>.json`` holds one question per line (``id``, ``question``: turns of
messages, ``function``: function docs) and ``possible_answer/BFCL_v4_<stem>.json`` the matching
``ground_truth``: ``[{function_name: {param: [accepted values]}}]`` where ``""`` marks an argument that may be
omitted and a ``dict`` parameter's accepted values are themselves ``{key: [accepted values]}``.

A Sample keeps the function docs as tools unchanged (BFCL type names ``dict``, ``float``, ``tuple``,
``any``: the reward understands them), the possible answers as ``accepted``, and as ``answer`` the first
accepted value of each argument -- an argument whose first accepted value is ``""`` is left out.
Irrelevance entries have no possible answer: ``answer == []``.
"""

from __future__ import annotations

import importlib.util
import json
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from itool_ray.data.schema import AcceptedCall, Sample, SampleError

__all__ = ["BFCL_CATEGORIES", "bfcl_category", "bfcl_data_dir", "from_bfcl", "load_bfcl"]

# Our category name -> BFCL file stem. Only single-turn Python categories in the AST format.
BFCL_CATEGORIES: dict[str, str] = {
    "simple": "simple_python",
    "multiple": "multiple",
    "parallel": "parallel",
    "parallel_multiple": "parallel_multiple",
    "irrelevance": "irrelevance",
    "live_simple": "live_simple",
    "live_multiple": "live_multiple",
    "live_parallel": "live_parallel",
    "live_parallel_multiple": "live_parallel_multiple",
    "live_irrelevance": "live_irrelevance",
}
_STEM_TO_CATEGORY = {stem: cat for cat, stem in BFCL_CATEGORIES.items()}
_INSTALL_HINT = "install it with: pip install --no-deps bfcl-eval==2026.3.23"


def bfcl_data_dir() -> Path:
    """The installed bfcl-eval package's ``data`` folder (found without importing the package)."""
    spec = importlib.util.find_spec("bfcl_eval")
    if spec is None or not spec.submodule_search_locations:
        raise ModuleNotFoundError(f"the BFCL data needs the bfcl-eval package; {_INSTALL_HINT}")
    for location in spec.submodule_search_locations:
        data = Path(location) / "data"
        if (data / "possible_answer").is_dir():
            return data
    raise FileNotFoundError(f"bfcl-eval is installed but has no data folder; reinstall it ({_INSTALL_HINT})")


def bfcl_category(entry_id: str) -> str:
    """``simple_python_12`` -> ``simple``; ``live_multiple_3-1-0`` -> ``live_multiple``."""
    stem = entry_id.rsplit("_", 1)[0]
    if stem not in _STEM_TO_CATEGORY:
        raise SampleError(
            f"unsupported BFCL category '{stem}' (supported: {', '.join(BFCL_CATEGORIES.values())})",
            sample_id=entry_id,
        )
    return _STEM_TO_CATEGORY[stem]


def _props(fn: Mapping[str, Any] | None) -> Mapping[str, Any]:
    params = fn.get("parameters") if isinstance(fn, Mapping) else None
    props = params.get("properties") if isinstance(params, Mapping) else None
    return props if isinstance(props, Mapping) else {}


def _first(accepted: list[Any], spec: Mapping[str, Any] | None) -> tuple[bool, Any]:
    """(present, value): the first accepted value as a concrete argument value."""
    if not accepted or accepted[0] == "":
        return False, None
    return True, _concrete(accepted[0], spec)


def _concrete(value: Any, spec: Mapping[str, Any] | None) -> Any:
    """Nested accepted values (dict parameters, arrays of dicts) -> one concrete value."""
    kind = spec.get("type") if isinstance(spec, Mapping) else None
    if kind == "dict" and isinstance(value, dict):
        out = {}
        for k, options in value.items():
            present, v = _first(options if isinstance(options, list) else [options], None)
            if present:
                out[k] = v
        return out
    items = spec.get("items") if isinstance(spec, Mapping) else None
    if kind in ("array", "tuple") and isinstance(items, Mapping) and items.get("type") == "dict":
        if isinstance(value, list):
            return [_concrete(v, items) for v in value]
    return value


def from_bfcl(entry: Mapping[str, Any], ground_truth: list[dict[str, Any]] | None) -> Sample:
    """One BFCL question record (+ its possible answer's ``ground_truth``; None for irrelevance)."""
    entry_id = entry.get("id")
    if not isinstance(entry_id, str):
        raise SampleError("a BFCL entry needs a string 'id'")
    question, functions = entry.get("question"), entry.get("function")
    if not isinstance(question, list) or not question or not isinstance(functions, list):
        raise SampleError(
            "a BFCL entry needs 'question' (list of turns) and 'function' (list)", sample_id=entry_id
        )
    if len(question) != 1 or not isinstance(question[0], list):
        raise SampleError(
            f"multi-turn BFCL entries are not supported ({len(question)} turns)", sample_id=entry_id
        )
    category = bfcl_category(entry_id)
    by_name = {f.get("name"): f for f in functions if isinstance(f, Mapping)}

    answer: list[dict[str, Any]] = []
    accepted: list[AcceptedCall] | None = None
    if ground_truth:
        accepted = []
        for call in ground_truth:
            if not isinstance(call, Mapping) or len(call) != 1:
                raise SampleError(
                    f"ground truth call must be {{name: {{param: [values]}}}}, got {call!r}",
                    sample_id=entry_id,
                )
            ((name, params),) = call.items()
            if not isinstance(params, Mapping):
                raise SampleError(f"ground truth for {name} must map params to lists", sample_id=entry_id)
            props = _props(by_name.get(name))
            arguments = {}
            for key, options in params.items():
                present, value = _first(
                    list(options) if isinstance(options, list) else [options], props.get(key)
                )
                if present:
                    arguments[key] = value
            answer.append({"name": name, "arguments": arguments})
            accepted.append(
                AcceptedCall(
                    name=name, arguments={k: v if isinstance(v, list) else [v] for k, v in params.items()}
                )
            )
    return Sample.from_dict(
        {
            "id": entry_id,
            "tools": [dict(f) for f in functions],
            "messages": [dict(m) for m in question[0]],
            "answer": answer,
            "category": category,
            "source": "bfcl",
            "accepted": [a.model_dump() for a in accepted] if accepted is not None else None,
        }
    )


def _read_jsonl(path: Path) -> Iterable[dict[str, Any]]:
    with path.open(encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            if line.strip():
                try:
                    yield json.loads(line)
                except json.JSONDecodeError as e:
                    raise SampleError(f"{path}:{lineno}: invalid JSON ({e.msg})") from None


def load_bfcl(categories: Iterable[str]) -> list[Sample]:
    """Samples of the named categories (our names, e.g. ``simple``, or BFCL stems, e.g. ``simple_python``)."""
    data = bfcl_data_dir()
    samples: list[Sample] = []
    for name in categories:
        stem = BFCL_CATEGORIES.get(name) or (name if name in _STEM_TO_CATEGORY else None)
        if stem is None:
            raise ValueError(f"unknown BFCL category '{name}' (choose from: {', '.join(BFCL_CATEGORIES)})")
        questions = data / f"BFCL_v4_{stem}.json"
        answers = data / "possible_answer" / f"BFCL_v4_{stem}.json"
        truth: dict[str, Any] = {}
        if answers.exists():
            truth = {r["id"]: r.get("ground_truth") for r in _read_jsonl(answers)}
        elif "irrelevance" not in stem:
            raise FileNotFoundError(f"{answers} is missing; the bfcl-eval install looks incomplete")
        for entry in _read_jsonl(questions):
            if "irrelevance" not in stem and entry.get("id") not in truth:
                raise SampleError(f"no possible answer in {answers.name}", sample_id=entry.get("id"))
            samples.append(from_bfcl(entry, truth.get(entry.get("id"))))
    return samples
