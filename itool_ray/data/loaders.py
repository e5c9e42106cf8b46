"""``load_samples(spec)``: every dataset the project reads, as validated Samples plus a LoadReport.

Every source goes through the same per-record checks, so a bad record is a counted skip with its file,
line and reason (or, in strict mode, a DatasetError), whatever the format:
converter errors, ``Sample.from_dict`` errors, tool schemas that are not JSON Schema objects, answer
calls naming a tool the sample does not offer, and duplicate ids.
A spec that yields no Samples at all (an empty file, or every record bad) is a DatasetError: a
training run on nothing is never what was meant.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from typing import Any

from itool_ray.data.io import JSON_FIELDS, DatasetError, LoadReport, read_records, suffix
from itool_ray.data.schema import Sample, SampleError

SPEC_FORMS = """accepted dataset specs:
  synthetic[:split[:tools]]               generated samples (keyword arguments n=, seed=); tools: fixed |
                                         procedural | mixed (the dev split is procedural only)
  PATH.jsonl | PATH.json | PATH.parquet  Sample records; ToolACE or xLAM rows are detected
  toolace:PATH                           ToolACE rows (system + conversations)
  xlam:PATH                              xLAM rows (query, tools, answers)
  bfcl:CAT1,CAT2                         BFCL categories
  hf:ID_OR_DIR[:split]                   a Hugging Face dataset: hub id, save_to_disk dir, data-files dir
PATH may be an fsspec URI (s3://…)."""
DEFAULT_SYNTHETIC_N = 1000
_FILE_SUFFIXES = (".jsonl", ".json", ".parquet")

# JSON Schema's type names, plus the Python-ish dialect BFCL and ToolACE write (accepted as-is).
_SCHEMA_TYPES = {"string", "number", "integer", "boolean", "array", "object", "null"}
_DIALECT_TYPES = {"dict", "float", "tuple", "any"}

Converter = Callable[..., list[dict[str, Any]]]


# -- formats --------------------------------------------------------------------------------------
def detect_format(keys: Iterable[str]) -> str | None:
    """'toolace', 'xlam' or 'sample' from a record's keys (or a dataset's columns); None if unknown."""
    keys = set(keys)
    if {"system", "conversations"} <= keys:
        return "toolace"
    if {"query", "tools", "answers"} <= keys:
        return "xlam"
    if {"id", "tools", "messages", "answer"} <= keys:
        return "sample"
    return None


def _sample_rows(record: Any, *, row_id: str) -> list[dict[str, Any]]:
    """A Sample record as read: Parquet keeps the nested fields as JSON text, decoded here."""
    if not isinstance(record, dict):
        raise SampleError(f"expected a JSON object, got {type(record).__name__}")
    out = dict(record)
    for key in JSON_FIELDS:
        if isinstance(out.get(key), str):
            import json

            try:
                out[key] = json.loads(out[key])
            except json.JSONDecodeError as e:
                raise SampleError(f"{key}: invalid JSON text: {e.msg}") from None
    return [out]


def _converter(fmt: str) -> Converter:
    if fmt == "toolace":
        from itool_ray.data.toolace import convert_row

        return convert_row
    if fmt == "xlam":
        from itool_ray.data.xlam import convert_row

        return convert_row
    return _sample_rows


# -- checks ---------------------------------------------------------------------------------------
def _schema_problem(schema: Any, where: str) -> str | None:
    if not isinstance(schema, dict):
        return f"{where} must be an object"
    t = schema.get("type")
    if t is not None:
        for x in t if isinstance(t, list) else [t]:
            if not isinstance(x, str) or x.lower() not in _SCHEMA_TYPES | _DIALECT_TYPES:
                return f"{where}.type {x!r} is not a JSON Schema type"
    props = schema.get("properties")
    if props is not None:
        if not isinstance(props, dict):
            return f"{where}.properties must be an object"
        for name, sub in props.items():
            if problem := _schema_problem(sub, f"{where}.properties.{name}"):
                return problem
    required = schema.get("required")
    if required is not None:
        if not isinstance(required, list) or not all(isinstance(r, str) for r in required):
            return f"{where}.required must be a list of names"
        missing = [r for r in required if not isinstance(props, dict) or r not in props]
        if missing:
            return f"{where}.required names {missing[0]!r}, which is not in properties"
    items = schema.get("items")
    if items is not None:
        for i, sub in enumerate(items if isinstance(items, list) else [items]):
            if problem := _schema_problem(
                sub, f"{where}.items" + (f"[{i}]" if isinstance(items, list) else "")
            ):
                return problem
    return None


def tool_schema_problem(fn: dict[str, Any]) -> str | None:
    """Why a tool's ``parameters`` is not a JSON Schema object, or None if it is (or is absent)."""
    params = fn.get("parameters")
    if params is None:
        return None
    if problem := _schema_problem(params, "parameters"):
        return problem
    if params.get("type") not in ("object", "dict"):
        return f"parameters.type must be 'object', got {params.get('type')!r}"
    return None


def infer_category(sample: Sample) -> str:
    """BFCL's categories from the shape: calls (none/one/several) x tools offered (one/several)."""
    n_calls, one_tool = len(sample.answer), len(sample.tools) == 1
    if n_calls == 0:
        return "irrelevance"
    if n_calls == 1:
        return "simple" if one_tool else "multiple"
    return "parallel" if one_tool else "parallel_multiple"


class _Collector:
    """Runs each record through conversion and the checks; keeps Samples, reports the rest."""

    def __init__(self, report: LoadReport, limit: int | None):
        self.report = report
        self.limit = limit
        self.samples: list[Sample] = []
        self.first_seen: dict[str, str] = {}

    @property
    def full(self) -> bool:
        return self.limit is not None and len(self.samples) >= self.limit

    def add_record(self, file: str, line: int, record: Any, convert: Converter, row_id: str) -> None:
        try:
            dicts = convert(record, row_id=row_id)
        except SampleError as e:
            self.report.skip(
                file, line, e.reason, kind=getattr(e, "kind", "bad record"), sample_id=e.sample_id
            )
            return
        for d in dicts:
            if self.full:
                return
            self.add_dict(file, line, d)

    def add_dict(self, file: str, line: int | None, d: dict[str, Any]) -> None:
        skip = self.report.skip
        try:
            sample = Sample.from_dict(d)
        except SampleError as e:
            skip(file, line, e.reason, kind="bad record", sample_id=e.sample_id)
            return
        fns = sample.tool_functions()
        for i, fn in enumerate(fns):
            if problem := tool_schema_problem(fn):
                skip(
                    file,
                    line,
                    f"invalid tool schema: tools[{i}] {fn['name']!r}: {problem}",
                    kind="invalid tool schema",
                    sample_id=sample.id,
                )
                return
        names = {fn["name"] for fn in fns}
        for call in sample.answer:
            if call["name"] not in names:
                skip(
                    file,
                    line,
                    f"answer calls unknown tool {call['name']!r}",
                    kind="unknown tool",
                    sample_id=sample.id,
                )
                return
        where = f"{file}:{line}" if line is not None else file
        if sample.id in self.first_seen:
            skip(
                file,
                line,
                f"duplicate id {sample.id!r} (first at {self.first_seen[sample.id]})",
                kind="duplicate id",
                sample_id=sample.id,
            )
            return
        self.first_seen[sample.id] = where
        if "category" not in d:
            sample = sample.model_copy(update={"category": infer_category(sample)})
        self.samples.append(sample)
        self.report.n_loaded += 1


# -- the spec -------------------------------------------------------------------------------------
def parse_spec(spec: str) -> tuple[str, str]:
    """(kind, argument): kind is synthetic | path | toolace | xlam | bfcl | hf."""
    if spec == "synthetic" or spec.startswith("synthetic:"):
        return "synthetic", spec.partition(":")[2]
    if "://" not in spec:
        for kind in ("toolace", "xlam", "bfcl", "hf"):
            if spec.startswith(kind + ":") and spec[len(kind) + 1 :]:
                return kind, spec[len(kind) + 1 :]
    if suffix(spec) in _FILE_SUFFIXES:
        return "path", spec
    raise DatasetError(f"unknown dataset spec {spec!r}; {SPEC_FORMS}")


def _stem(path: str) -> str:
    name = path.rstrip("/").rsplit("/", 1)[-1]
    return os.path.splitext(name)[0] or "data"


def load_samples(
    spec: str, *, strict: bool = False, limit: int | None = None, n: int | None = None, seed: int = 0
) -> tuple[list[Sample], LoadReport]:
    """Load Samples from a spec (see ``SPEC_FORMS``), validated, at most ``limit`` of them.

    Bad records are skipped and reported (``strict=True``: the first one raises DatasetError naming
    file, line and reason). ``n`` and ``seed`` are for ``synthetic`` (n defaults to ``limit``, else
    ``DEFAULT_SYNTHETIC_N``). Ids of converted rows are ``<format>-<file stem>-<line>-t<turn>`` (ToolACE),
    ``xlam-<id>`` (xLAM).
    """
    kind, arg = parse_spec(spec)
    report = LoadReport(source=spec, strict=strict)
    col = _Collector(report, limit)
    if limit is not None and limit <= 0:
        return [], report
    if kind in ("synthetic", "bfcl"):
        if kind == "synthetic":
            from itool_ray.data.synth import generate

            count = n if n is not None else limit if limit is not None else DEFAULT_SYNTHETIC_N
            split, _, tools = (arg or "train").partition(":")
            try:
                produced = generate(count, seed=seed, split=split, tools=tools or "fixed")
            except ValueError as e:  # an unknown split or tool set
                raise DatasetError(f"{spec}: {e}") from None
        else:
            from itool_ray.data.bfcl import load_bfcl

            produced = load_bfcl([c.strip() for c in arg.split(",") if c.strip()])
        for i, s in enumerate(produced, 1):
            report.n_read += 1
            col.add_dict(spec, i, s.to_dict())
            if col.full:
                break
    elif kind == "hf":
        from itool_ray.data.hf import load_rows

        ident, split = arg, None
        head, sep, tail = arg.rpartition(":")
        if sep and head and "/" not in tail and not os.path.exists(arg):
            ident, split = head, tail
        columns, rows = load_rows(ident, split)
        fmt = detect_format(columns)
        if fmt is None:
            raise DatasetError(f"{ident}: columns {columns} match no known format (ToolACE, xLAM or Sample)")
        convert = _converter(fmt)
        for i, row in enumerate(rows, 1):
            report.n_read += 1
            col.add_record(ident, i, row, convert, row_id=f"{fmt}-{_stem(ident)}-{i}")
            if col.full:
                break
    else:
        fmt = None if kind == "path" else kind
        convert = _converter(fmt) if fmt else None
        for line, record in read_records(arg, report):
            if convert is None:  # a plain path: the first object's keys decide the format
                fmt = detect_format(record) if isinstance(record, dict) else None
                if fmt is None:
                    fmt = "sample"
                convert = _converter(fmt)
            col.add_record(arg, line, record, convert, row_id=f"{fmt}-{_stem(arg)}-{line}")
            if col.full:
                break

    report.log_summary()
    if not col.samples:
        if report.n_read == 0:
            raise DatasetError(f"no samples loaded from {spec}: the source is empty")
        raise DatasetError(
            f"no samples loaded from {spec}: {report.summary()}; first problem: {report.errors[0]}"
        )
    return col.samples, report
