"""Reading records (with line numbers) and writing Samples; the load report every loader fills.

Readers yield ``(line, record)`` and report what they could not read into a ``LoadReport``; they never
raise for one bad record unless the report is strict. ``line`` is the 1-based line of a JSONL record,
the line where a JSON array element starts, or the 1-based row number of a Parquet row.

Paths may be local or any fsspec URI (``s3://…``, ``memory://…``); local paths skip fsspec.
"""

from __future__ import annotations

import json
import logging
import os
from collections import Counter
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import IO, Any

from itool_ray.data.schema import Sample
from itool_ray.storage import is_local
from itool_ray.storage import local_path as _local

log = logging.getLogger(__name__)

MAX_LINE_BYTES = 16 * 1024 * 1024  # a JSONL line longer than this is skipped unread
MAX_KEPT_ERRORS = 100  # errors kept verbatim in a report; beyond that only counted by kind
MAX_LOGGED_ERRORS = 20  # skipped records logged one line each; beyond that only the summary
_CHUNK = 1 << 20

# Nested Sample fields whose shape varies per row; Parquet stores them as JSON text.
JSON_FIELDS = ("tools", "messages", "answer", "accepted")


class DatasetError(ValueError):
    """A dataset cannot be loaded (strict mode: the first bad record), with file, line and reason."""


@dataclass(frozen=True)
class RecordError:
    file: str
    line: int | None
    sample_id: str | None
    reason: str
    kind: str

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}" if self.line is not None else self.file
        sid = f" (sample {self.sample_id})" if self.sample_id else ""
        return f"{where}: {self.reason}{sid}"


@dataclass
class LoadReport:
    """What one load read, kept and skipped, and why.

    ``n_read`` counts source records (lines, array elements, rows); ``n_loaded`` counts Samples, which
    can exceed ``n_read`` because one ToolACE conversation yields a Sample per target turn.
    ``errors`` keeps the first ``MAX_KEPT_ERRORS`` skips; ``by_kind`` counts all of them.
    """

    source: str
    strict: bool = False
    n_read: int = 0
    n_loaded: int = 0
    n_skipped: int = 0
    errors: list[RecordError] = field(default_factory=list)
    by_kind: Counter[str] = field(default_factory=Counter)

    def skip(
        self, file: str, line: int | None, reason: str, *, kind: str, sample_id: str | None = None
    ) -> None:
        """Record one skipped record; in strict mode raise DatasetError for it instead."""
        err = RecordError(file, line, sample_id, reason, kind)
        self.n_skipped += 1
        self.by_kind[kind] += 1
        if len(self.errors) < MAX_KEPT_ERRORS:
            self.errors.append(err)
        if self.strict:
            raise DatasetError(f"{err} — fix the record, or load without strict to skip bad records")
        if self.n_skipped <= MAX_LOGGED_ERRORS:
            log.warning("skipped %s", err)

    def raise_if_strict(self, strict: bool | None = None) -> None:
        """Raise DatasetError naming the first skipped record if ``strict`` (default: the report's own
        flag) and anything was skipped. For callers that decide on strictness after loading."""
        if (self.strict if strict is None else strict) and self.n_skipped:
            first = self.errors[0]
            raise DatasetError(f"{first} — {self.n_skipped} record(s) skipped in all ({self.summary()})")

    def summary(self) -> str:
        kinds = ", ".join(f"{k}={n}" for k, n in self.by_kind.most_common())
        tail = f" ({kinds})" if kinds else ""
        return f"{self.source}: read {self.n_read}, loaded {self.n_loaded}, skipped {self.n_skipped}{tail}"

    def log_summary(self) -> None:
        if self.n_skipped > MAX_LOGGED_ERRORS:
            log.warning("%d more skipped records not logged one by one", self.n_skipped - MAX_LOGGED_ERRORS)
        (log.warning if self.n_skipped else log.info)("%s", self.summary())


# -- files ----------------------------------------------------------------------------------------


@contextmanager
def open_binary(path: str) -> Iterator[IO[bytes]]:
    """Open for reading; a missing or unreadable file is a DatasetError, not a traceback."""
    try:
        if is_local(path):
            f: IO[bytes] = open(_local(path), "rb")
        else:
            from itool_ray.storage import filesystem

            fs, inner = filesystem(path)
            f = fs.open(inner, "rb")
    except (OSError, ValueError, ImportError) as e:
        raise DatasetError(f"cannot open {path}: {getattr(e, 'strerror', None) or e}") from None
    try:
        yield f
    finally:
        f.close()


def suffix(path: str) -> str:
    """The lowercase extension of a path or URI, ignoring a query string: ``.jsonl``, ``.parquet``."""
    name = path.split("?", 1)[0].rstrip("/").rsplit("/", 1)[-1]
    return os.path.splitext(name)[1].lower()


# -- reading --------------------------------------------------------------------------------------
def read_records(
    path: str, report: LoadReport, *, max_line_bytes: int = MAX_LINE_BYTES
) -> Iterator[tuple[int, Any]]:
    """Yield ``(line, record)`` from a .jsonl, .json (an array, or JSON Lines) or .parquet file.

    Unreadable records are reported as skips; blank lines are skipped silently. An empty file yields
    nothing (the caller decides whether no records is an error: ``load_samples`` says it is).
    """
    ext = suffix(path)
    if ext == ".parquet":
        yield from _read_parquet(path, report)
        return
    with open_binary(path) as f:
        head = _peek_nonspace(f)
        if ext == ".json" and head == b"[":
            yield from _read_json_array(f.read(), path, report)
        else:
            yield from _read_jsonl(f, path, report, max_line_bytes)


def _peek_nonspace(f: IO[bytes]) -> bytes:
    """The first non-whitespace byte, leaving the file at its start."""
    start = f.read(4096)
    f.seek(0)
    stripped = start.removeprefix(b"\xef\xbb\xbf").lstrip()
    return stripped[:1]


def _lines(f: IO[bytes], max_bytes: int) -> Iterator[tuple[int, bytes | None, int]]:
    """``(line_no, content or None if too long, length)`` for each line, reading fixed-size chunks so
    a huge line is counted and discarded without ever being held in memory."""
    line_no, buf, length, too_long = 0, bytearray(), 0, False
    while chunk := f.read(_CHUNK):
        start = 0
        while True:
            nl = chunk.find(b"\n", start)
            piece = chunk[start:] if nl < 0 else chunk[start:nl]
            length += len(piece)
            if not too_long:
                buf += piece
                if length > max_bytes:
                    too_long = True
                    buf.clear()
            if nl < 0:
                break
            line_no += 1
            yield line_no, None if too_long else bytes(buf), length
            buf.clear()
            length, too_long, start = 0, False, nl + 1
    if length:
        yield line_no + 1, None if too_long else bytes(buf), length


def _read_jsonl(f: IO[bytes], path: str, report: LoadReport, max_bytes: int) -> Iterator[tuple[int, Any]]:
    for line_no, raw, length in _lines(f, max_bytes):
        if raw is not None and not raw.strip():
            continue
        report.n_read += 1
        if raw is None:
            report.skip(
                path, line_no, f"line too long: {length} bytes > limit {max_bytes}", kind="line too long"
            )
            continue
        try:
            yield line_no, json.loads(raw)
        except UnicodeDecodeError as e:
            report.skip(path, line_no, f"invalid UTF-8: {e.reason} at byte {e.start}", kind="invalid JSON")
        except json.JSONDecodeError as e:
            report.skip(path, line_no, f"invalid JSON: {e.msg} at column {e.colno}", kind="invalid JSON")


def _read_json_array(data: bytes, path: str, report: LoadReport) -> Iterator[tuple[int, Any]]:
    """Decode a top-level array element by element, so each element keeps its starting line and a
    syntax error loses only the rest of the file, reported at its line."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        report.n_read += 1
        report.skip(
            path, data.count(b"\n", 0, e.start) + 1, f"invalid UTF-8: {e.reason}", kind="invalid JSON"
        )
        return
    decoder = json.JSONDecoder()
    pos = text.index("[") + 1
    line = text.count("\n", 0, pos) + 1

    def skip_ws(p: int) -> int:
        nonlocal line
        q = p
        while q < len(text) and text[q] in " \t\r\n":
            q += 1
        line += text.count("\n", p, q)
        return q

    pos = skip_ws(pos)
    if text.startswith("]", pos):
        return
    while True:
        report.n_read += 1
        try:
            obj, end = decoder.raw_decode(text, pos)
        except json.JSONDecodeError as e:
            report.skip(
                path,
                e.lineno,
                f"invalid JSON: {e.msg} at column {e.colno}; rest of file not read",
                kind="invalid JSON",
            )
            return
        yield line, obj
        line += text.count("\n", pos, end)
        pos = skip_ws(end)
        if text.startswith(",", pos):
            pos = skip_ws(pos + 1)
        elif text.startswith("]", pos):
            return
        else:
            report.skip(
                path,
                line,
                "invalid JSON: expected ',' or ']' after an array element; rest of file not read",
                kind="invalid JSON",
            )
            return


def _read_parquet(path: str, report: LoadReport) -> Iterator[tuple[int, Any]]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    with open_binary(path) as f:
        try:
            pf = pq.ParquetFile(f)
        except (pa.ArrowException, OSError) as e:
            raise DatasetError(f"cannot read {path} as Parquet: {e}") from None
        row = 0
        for batch in pf.iter_batches(batch_size=1024):
            for rec in batch.to_pylist():
                row += 1
                report.n_read += 1
                yield row, prune_nulls(rec)


def sample_from_row(row: dict[str, Any] | str) -> Sample:
    """The one way back from a stored Sample: its JSON text (a JSONL line, a mined row's ``sample``) or a
    Parquet row (nested fields as JSON text, Arrow's nulls for missing keys). Raises SampleError."""
    d = json.loads(row) if isinstance(row, str) else prune_nulls(row)
    if isinstance(d, dict):
        for key in JSON_FIELDS:
            if isinstance(d.get(key), str):
                d[key] = json.loads(d[key])
    return Sample.from_dict(d)


def prune_nulls(value: Any) -> Any:
    """Drop null-valued keys from every object, recursively.

    Arrow stores a list of objects as structs with the union of all their keys, filling the missing
    ones with null; pruning restores the original objects. (A genuine ``null`` is lost with them.)
    """
    if isinstance(value, dict):
        return {k: prune_nulls(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [prune_nulls(v) for v in value]
    return value


# -- writing --------------------------------------------------------------------------------------
def write_samples(samples: Iterable[Sample], path: str) -> int:
    """Write Samples as JSONL (``.jsonl``/``.json``: one JSON object per line) or Parquet, by suffix.

    Atomic: a local file is written under ``<path>.tmp-<pid>`` and renamed over ``path``, so a failure
    never leaves a partial file at ``path``; an object store commits a file only on close. Parquet keeps
    the nested fields (tools, messages, answer, accepted) as JSON text columns, since their shapes vary
    per row and Arrow structs cannot hold that. Returns the number of Samples written.
    """
    ext = suffix(path)
    if ext in (".jsonl", ".json"):
        lines = [s.to_json() + "\n" for s in samples]
        data = "".join(lines).encode("utf-8")
        _write_atomic(path, lambda f: f.write(data))
        return len(lines)
    if ext == ".parquet":
        import pyarrow.parquet as pq

        table = samples_to_table(samples)
        _write_atomic(path, lambda f: pq.write_table(table, f))
        return table.num_rows
    raise DatasetError(f"cannot write samples to {path}: use a .jsonl or .parquet suffix")


def samples_to_table(samples: Iterable[Sample]):  # -> pyarrow.Table (pyarrow imported lazily)
    import pyarrow as pa

    rows = []
    for s in samples:
        d = s.to_dict()
        for k in JSON_FIELDS:
            if k in d:
                d[k] = json.dumps(d[k], ensure_ascii=False, separators=(",", ":"))
        rows.append(d)
    schema = pa.schema(
        [
            ("id", pa.string()),
            ("tools", pa.string()),
            ("messages", pa.string()),
            ("answer", pa.string()),
            ("category", pa.string()),
            ("difficulty", pa.string()),
            ("source", pa.string()),
            ("tags", pa.list_(pa.string())),
            ("accepted", pa.string()),
        ]
    )
    return pa.Table.from_pylist(rows, schema=schema)


def _write_atomic(path: str, write) -> None:
    from itool_ray import storage

    try:
        storage.write_atomic(path, write)
    except OSError as e:  # disk full, unwritable directory, a file where a directory should be
        raise DatasetError(f"cannot write {path}: {e.strerror or e}") from None
