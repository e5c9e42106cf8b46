"""Loaders: every format loads; every kind of bad record is a counted skip with file, line and reason."""

from __future__ import annotations

import json
import logging
import os
import sys
import types
from pathlib import Path

import pytest

from itool_ray.data.io import MAX_KEPT_ERRORS, DatasetError, LoadReport, read_records, write_samples
from itool_ray.data.loaders import load_samples, parse_spec
from itool_ray.data.schema import Sample
from itool_ray.data.xlam import param_schema

DATA = Path(__file__).resolve().parent.parent / "data"
TOOLACE = str(DATA / "toolace_sample.json")
XLAM = str(DATA / "xlam_sample.json")

WEATHER = {
    "name": "get_weather",
    "description": "Current weather in a city.",
    "parameters": {
        "type": "object",
        "properties": {"city": {"type": "string"}, "unit": {"type": "string", "enum": ["c", "f"]}},
        "required": ["city"],
    },
}


def sample(i: int | str, **over) -> dict:
    d = {
        "id": f"s{i}",
        "tools": [WEATHER],
        "messages": [{"role": "user", "content": f"Weather in city {i}?"}],
        "answer": [{"name": "get_weather", "arguments": {"city": f"City{i}"}}],
        "category": "simple",
        "source": "test",
    }
    d.update(over)
    return d


def write_lines(path: Path, lines: list[str]) -> str:
    path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    return str(path)


def reasons(report: LoadReport) -> dict[int, str]:
    return {e.line: e.reason for e in report.errors}


# -- Sample JSONL: each malformed input is skipped, counted, and located --------------------------
def test_malformed_jsonl_records_are_skipped_with_line_and_reason(tmp_path, caplog):
    bad_schema = dict(WEATHER, parameters={"type": "object", "properties": {"city": {"type": "strng"}}})
    lines = [
        json.dumps(sample(1)),  # 1 ok
        json.dumps(sample(2))[:-9],  # 2 truncated JSON
        "",  # 3 blank: silently skipped
        json.dumps(sample(3, tools="get_weather")),  # 4 wrong type
        json.dumps({k: v for k, v in sample(4).items() if k != "messages"}),  # 5 missing field
        json.dumps(sample(5, tools=[bad_schema])),  # 6 invalid tool schema
        json.dumps(sample(6, answer=[{"name": "get_time", "arguments": {}}])),  # 7 unknown tool
        json.dumps(sample(1)),  # 8 duplicate id
        "   ",  # 9 blank
        json.dumps([1, 2]),  # 10 not an object
        json.dumps(sample(7)),  # 11 ok
    ]
    path = write_lines(tmp_path / "s.jsonl", lines)
    with caplog.at_level(logging.WARNING, logger="itool_ray.data.io"):
        samples, report = load_samples(path)

    assert [s.id for s in samples] == ["s1", "s7"]
    assert (report.n_read, report.n_loaded, report.n_skipped) == (9, 2, 7)
    got = reasons(report)
    assert got[2].startswith("invalid JSON")
    assert got[4].startswith("tools")
    assert got[5].startswith("messages") and "required" in got[5].lower()
    assert got[6].startswith("invalid tool schema") and "strng" in got[6]
    assert got[7] == "answer calls unknown tool 'get_time'"
    assert got[8].startswith("duplicate id 's1'") and f"{path}:1" in got[8]
    assert "expected a JSON object" in got[10]
    assert set(got) == {2, 4, 5, 6, 7, 8, 10}
    assert all(e.file == path for e in report.errors)
    assert report.by_kind["invalid JSON"] == 1 and report.by_kind["duplicate id"] == 1
    # one warning line per skip plus the summary; never a traceback
    skipped = [r for r in caplog.records if r.getMessage().startswith("skipped")]
    assert len(skipped) == 7 and all(r.exc_info is None for r in caplog.records)
    assert "skipped 7" in report.summary()


def test_strict_mode_raises_on_first_bad_record_naming_file_and_line(tmp_path):
    path = write_lines(tmp_path / "s.jsonl", [json.dumps(sample(1)), "", "{not json", json.dumps(sample(2))])
    with pytest.raises(DatasetError, match=rf"{path}:3: invalid JSON"):
        load_samples(path, strict=True)


def test_strict_mode_names_the_sample_of_a_semantic_error(tmp_path):
    line = json.dumps(sample(9, answer=[{"name": "nope", "arguments": {}}]))
    path = write_lines(tmp_path / "s.jsonl", [line])
    with pytest.raises(DatasetError, match=r"s\.jsonl:1: answer calls unknown tool 'nope' \(sample s9\)"):
        load_samples(path, strict=True)


def test_raise_if_strict_after_a_lenient_load(tmp_path):
    path = write_lines(tmp_path / "s.jsonl", [json.dumps(sample(1)), "[", json.dumps(sample(2))])
    samples, report = load_samples(path)
    assert len(samples) == 2
    report.raise_if_strict(False)
    with pytest.raises(DatasetError, match=r":2: invalid JSON"):
        report.raise_if_strict(True)


@pytest.mark.parametrize("content", ["", "\n\n  \n"])
def test_empty_file_is_a_clear_error(tmp_path, content):
    path = tmp_path / "empty.jsonl"
    path.write_text(content)
    with pytest.raises(DatasetError, match="source is empty"):
        load_samples(str(path))


def test_all_records_bad_is_an_error_naming_the_first_problem(tmp_path):
    path = write_lines(tmp_path / "s.jsonl", ["{", "{"])
    with pytest.raises(DatasetError, match=r"s\.jsonl:1: invalid JSON"):
        load_samples(str(path))


def test_very_long_line_is_skipped_without_losing_line_numbers(tmp_path):
    path = tmp_path / "long.jsonl"
    big = json.dumps(sample(2, messages=[{"role": "user", "content": "x" * (20 * 1024 * 1024)}]))
    with open(path, "w") as f:
        f.write(json.dumps(sample(1)) + "\n" + big + "\n" + json.dumps(sample(3)) + "\n")
    samples, report = load_samples(str(path))
    assert [s.id for s in samples] == ["s1", "s3"]
    (err,) = report.errors
    assert err.line == 2 and err.reason.startswith("line too long") and err.kind == "line too long"


def test_last_line_without_newline_and_crlf_are_read(tmp_path):
    path = tmp_path / "s.jsonl"
    path.write_bytes((json.dumps(sample(1)) + "\r\n" + json.dumps(sample(2))).encode())
    samples, _ = load_samples(str(path))
    assert [s.id for s in samples] == ["s1", "s2"]


def test_errors_are_capped_but_all_counted(tmp_path, caplog):
    n_bad = MAX_KEPT_ERRORS + 50
    path = write_lines(tmp_path / "s.jsonl", [json.dumps(sample(0))] + ["{"] * n_bad)
    with caplog.at_level(logging.WARNING, logger="itool_ray.data.io"):
        _, report = load_samples(str(path))
    assert report.n_skipped == n_bad and report.by_kind["invalid JSON"] == n_bad
    assert len(report.errors) == MAX_KEPT_ERRORS
    assert len(caplog.records) < 30  # capped per-record lines + a summary


def test_limit_stops_early(tmp_path):
    path = write_lines(tmp_path / "s.jsonl", [json.dumps(sample(i)) for i in range(10)])
    samples, report = load_samples(str(path), limit=3)
    assert [s.id for s in samples] == ["s0", "s1", "s2"] and report.n_read == 3


def test_missing_file_is_a_dataset_error(tmp_path):
    with pytest.raises(DatasetError, match="cannot open"):
        load_samples(str(tmp_path / "nope.jsonl"))


def test_category_is_inferred_when_absent(tmp_path):
    two = sample(2, answer=[{"name": "get_weather", "arguments": {"city": c}} for c in "AB"])
    del two["category"]
    none = sample(3, answer=[])
    del none["category"]
    path = write_lines(
        tmp_path / "s.jsonl", [json.dumps(sample(1, category="reasoning")), json.dumps(two), json.dumps(none)]
    )
    samples, _ = load_samples(str(path))
    assert [s.category for s in samples] == ["reasoning", "parallel", "irrelevance"]


# -- JSON arrays and Parquet ------------------------------------------------------------------------
def test_json_array_keeps_element_lines_and_stops_at_a_syntax_error(tmp_path):
    path = tmp_path / "s.json"
    text = "[\n" + json.dumps(sample(1)) + ",\n" + json.dumps(sample(2), indent=1) + ',\n{"id": \n}\n]'
    path.write_text(text)
    samples, report = load_samples(str(path))
    assert [s.id for s in samples] == ["s1", "s2"]
    assert [line for line, _ in read_records(str(path), LoadReport(source="x"))] == [2, 3]
    (err,) = report.errors
    assert err.reason.startswith("invalid JSON") and err.line == text.splitlines().index("}") + 1


def test_jsonl_round_trip(tmp_path):
    originals = [Sample.from_dict(sample(i, difficulty="easy", tags=["t"])) for i in range(3)]
    originals.append(Sample.from_dict(sample(9, answer=[], category="irrelevance")))
    path = str(tmp_path / "out" / "samples.jsonl")
    assert write_samples(originals, path) == 4
    loaded, report = load_samples(path)
    assert loaded == originals and report.n_skipped == 0


def test_parquet_round_trip(tmp_path):
    accepted = [{"name": "get_weather", "arguments": {"city": ["Paris", "paris"], "unit": ["", "c"]}}]
    originals = [
        Sample.from_dict(
            sample(
                1,
                answer=[{"name": "get_weather", "arguments": {"city": "Paris", "unit": "c"}}],
                accepted=accepted,
            )
        ),
        Sample.from_dict(
            sample(
                2, tools=[WEATHER, {"name": "no_args", "parameters": {"type": "object", "properties": {}}}]
            )
        ),
    ]
    path = str(tmp_path / "samples.parquet")
    write_samples(originals, path)
    loaded, _ = load_samples(path)
    assert loaded == originals


def test_parquet_bad_row_reported_by_row_number(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    rows = [sample(1), sample(2), sample(3)]
    table_rows = [{**r, **{k: json.dumps(r[k]) for k in ("tools", "messages", "answer")}} for r in rows]
    table_rows[1]["answer"] = '[{"name": '
    path = str(tmp_path / "s.parquet")
    pq.write_table(pa.Table.from_pylist(table_rows), path)
    samples, report = load_samples(path)
    assert [s.id for s in samples] == ["s1", "s3"]
    assert reasons(report)[2].startswith("answer: invalid JSON text")


def test_write_is_atomic_when_the_iterable_fails(tmp_path):
    path = tmp_path / "s.jsonl"
    path.write_text("previous content\n")

    def failing():
        yield Sample.from_dict(sample(1))
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError):
        write_samples(failing(), str(path))
    assert path.read_text() == "previous content\n" and os.listdir(tmp_path) == ["s.jsonl"]


def test_write_is_atomic_when_the_writer_fails_midway(tmp_path, monkeypatch):
    import pyarrow.parquet as pq

    def half_write(table, f):
        f.write(b"PAR1 partial")
        raise OSError("disk full")

    monkeypatch.setattr(pq, "write_table", half_write)
    with pytest.raises(DatasetError, match=r"cannot write .*s\.parquet: disk full"):
        write_samples([Sample.from_dict(sample(1))], str(tmp_path / "s.parquet"))
    assert os.listdir(tmp_path) == []


def test_fsspec_uri_round_trip():
    uri = "memory://itool-test/samples.jsonl"
    originals = [Sample.from_dict(sample(i)) for i in range(2)]
    write_samples(originals, uri)
    loaded, _ = load_samples(uri)
    assert loaded == originals


def test_read_records_yields_line_numbers(tmp_path):
    path = write_lines(tmp_path / "r.jsonl", ['{"a": 1}', "", '{"a": 2}'])
    report = LoadReport(source=path)
    assert list(read_records(path, report)) == [(1, {"a": 1}), (3, {"a": 2})]
    assert report.n_read == 2


# -- ToolACE ------------------------------------------------------------------------------------------
def test_toolace_rows_become_samples_per_target_turn():
    samples, report = load_samples(f"toolace:{TOOLACE}")
    by_id = {s.id: s for s in samples}
    assert sorted(by_id) == [
        "toolace-toolace_sample-2-t1",
        "toolace-toolace_sample-3-t1",
        "toolace-toolace_sample-4-t1",
        "toolace-toolace_sample-4-t5",
        "toolace-toolace_sample-5-t1",
    ]
    weather = by_id["toolace-toolace_sample-2-t1"]
    assert weather.answer == [{"name": "Get Weather Forecast", "arguments": {"city": "Paris", "days": 3}}]
    assert weather.tools[0]["name"] == "Get Weather Forecast"  # names with spaces kept as written
    assert weather.tools[0]["parameters"]["type"] == "object"  # ToolACE's "dict" normalised
    assert "required" not in weather.tools[0]  # ToolACE's function-level "required": null dropped
    assert weather.messages == [
        {"role": "user", "content": "What's the weather going to be like in Paris for the next 3 days?"}
    ]
    assert weather.category == "simple" and weather.source == "toolace"

    parallel = by_id["toolace-toolace_sample-3-t1"]
    assert [c["arguments"]["symbol"] for c in parallel.answer] == ["AAPL", "MSFT"]
    assert parallel.category == "parallel_multiple"
    fx = parallel.tools[1]["parameters"]["properties"]
    assert fx["amount"]["type"] == "number" and fx["options"]["type"] == "object"

    follow_up = by_id["toolace-toolace_sample-4-t5"]
    assert [m["role"] for m in follow_up.messages] == ["user", "assistant", "tool", "assistant", "user"]
    assert follow_up.answer == [{"name": "Book Flight", "arguments": {"flight_id": "UA123", "seats": 2}}]

    assert by_id["toolace-toolace_sample-5-t1"].answer == []
    assert by_id["toolace-toolace_sample-5-t1"].category == "irrelevance"

    got = reasons(report)
    assert set(got) == {6, 7}
    assert "unparsable answer text" in got[6] and report.by_kind["unparsable answer"] == 1
    assert got[7] == "no JSON tool list found in the system prompt"
    assert (report.n_read, report.n_loaded, report.n_skipped) == (6, 5, 2)


def test_toolace_is_detected_from_a_plain_path():
    samples, _ = load_samples(TOOLACE)
    assert len(samples) == 5 and all(s.source == "toolace" for s in samples)


def test_toolace_unknown_tool_in_a_call_is_reported(tmp_path):
    rows = json.loads(Path(TOOLACE).read_text())
    row = rows[0]
    row["conversations"][1]["value"] = '[get_forecast(city="Paris")]'
    path = write_lines(tmp_path / "t.jsonl", [json.dumps(row), json.dumps(rows[1])])
    samples, report = load_samples(f"toolace:{path}")
    assert len(samples) == 1
    assert reasons(report) == {1: "answer calls unknown tool 'get_forecast'"}


# -- xLAM -----------------------------------------------------------------------------------------
def test_xlam_rows_become_json_schema_samples():
    samples, report = load_samples(f"xlam:{XLAM}")
    by_id = {s.id: s for s in samples}
    assert sorted(by_id) == ["xlam-0", "xlam-1", "xlam-2"]

    weather = by_id["xlam-0"].tools[0]["parameters"]
    assert weather == {
        "type": "object",
        "properties": {
            "location": {
                "type": "string",
                "description": "City and country, e.g. Berlin, Germany",
                "default": "Berlin, Germany",
            },
            "units": {"type": "string", "description": "metric or imperial"},
        },
        "required": [],
    }
    assert by_id["xlam-0"].messages == [
        {"role": "user", "content": "What's the weather like in Tokyo right now?"}
    ]
    download = by_id["xlam-1"].tools[0]["parameters"]
    assert download["properties"]["video_ids"]["type"] == "array"
    assert download["properties"]["video_ids"]["items"] == {"type": "string"}
    assert download["required"] == ["video_ids", "quality"]
    assert by_id["xlam-1"].category == "parallel"
    calc = by_id["xlam-2"].tools[0]["parameters"]
    assert calc["required"] == ["principal", "rate", "years", "options"]
    assert calc["properties"]["contributions"]["items"] == {"type": "number"}
    assert by_id["xlam-2"].category == "multiple"

    got = reasons(report)
    assert set(got) == {5, 6, 7}
    assert got[5].startswith("'answers' is not valid JSON")
    assert got[6] == "answer calls unknown tool 'fact'"
    assert "unsupported type 'Widget[int]'" in got[7]


def test_xlam_is_detected_from_a_plain_path():
    samples, _ = load_samples(XLAM)
    assert [s.source for s in samples] == ["xlam"] * 3


@pytest.mark.parametrize(
    ("type_text", "schema", "required"),
    [
        ("str", {"type": "string"}, True),
        ("int", {"type": "integer"}, True),
        ("float", {"type": "number"}, True),
        ("bool", {"type": "boolean"}, True),
        ("str, optional", {"type": "string"}, False),
        ("int, default=5", {"type": "integer"}, False),
        ("Optional[int]", {"type": "integer"}, False),
        ("Union[int, float]", {"type": ["integer", "number"]}, True),
        ("Union[str, None]", {"type": "string"}, False),
        ("List[str]", {"type": "array", "items": {"type": "string"}}, True),
        (
            "List[List[int]]",
            {"type": "array", "items": {"type": "array", "items": {"type": "integer"}}},
            True,
        ),
        ("List", {"type": "array"}, True),
        ("Tuple[int, int]", {"type": "array"}, True),
        ("Dict[str, Any]", {"type": "object"}, True),
        ("List[Dict[str, int]], optional", {"type": "array", "items": {"type": "object"}}, False),
        ("Any", {}, True),
        ("Callable[[float], float]", {}, True),
        ("Literal['a', 'b']", {"enum": ["a", "b"]}, True),
    ],
)
def test_xlam_type_strings_map_to_json_schema(type_text, schema, required):
    assert param_schema({"type": type_text}) == (schema, required)


# -- Hugging Face datasets -------------------------------------------------------------------------
@pytest.fixture
def hf_cache(tmp_path, monkeypatch):
    import datasets

    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", tmp_path / "hf-cache")
    return tmp_path


def test_hf_save_to_disk_dir_with_xlam_rows(hf_cache):
    from datasets import Dataset, DatasetDict

    rows = json.loads(Path(XLAM).read_text())
    Dataset.from_list(rows).save_to_disk(str(hf_cache / "single"))
    samples, report = load_samples(f"hf:{hf_cache / 'single'}")
    assert [s.id for s in samples] == ["xlam-0", "xlam-1", "xlam-2"]
    assert reasons(report).keys() == {4, 5, 6}  # hf lines are 1-based row numbers

    DatasetDict({"train": Dataset.from_list(rows[:1]), "test": Dataset.from_list(rows[1:3])}).save_to_disk(
        str(hf_cache / "dict")
    )
    samples, _ = load_samples(f"hf:{hf_cache / 'dict'}:test")
    assert [s.id for s in samples] == ["xlam-1", "xlam-2"]
    with pytest.raises(DatasetError, match="no split 'dev'"):
        load_samples(f"hf:{hf_cache / 'dict'}:dev")


def test_hf_data_files_dir_with_toolace_rows(hf_cache):
    rows = json.loads(Path(TOOLACE).read_text())[:4]
    data = hf_cache / "toolace-json"
    data.mkdir()
    write_lines(data / "train.jsonl", [json.dumps(r) for r in rows])
    samples, report = load_samples(f"hf:{data}")
    assert len(samples) == 5 and report.n_skipped == 0
    assert samples[0].answer == [{"name": "Get Weather Forecast", "arguments": {"city": "Paris", "days": 3}}]


def test_hf_sample_rows_with_native_nested_columns(hf_cache):
    from datasets import Dataset

    rows = [sample(1), sample(2, answer=[{"name": "get_weather", "arguments": {"city": "X", "unit": "c"}}])]
    Dataset.from_list(rows).save_to_disk(str(hf_cache / "samples"))
    samples, _ = load_samples(f"hf:{hf_cache / 'samples'}")
    # Arrow fills absent keys with null (s1 gains unit=None); those are pruned on the way in.
    assert [s.to_dict() for s in samples] == [Sample.from_dict(r).to_dict() for r in rows]


def test_hf_unknown_id_offline_is_a_clean_error(hf_cache, monkeypatch):
    import datasets
    import huggingface_hub

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", True)
    with pytest.raises(DatasetError, match="no-such-org/no-such-dataset"):
        load_samples("hf:no-such-org/no-such-dataset")


# -- spec grammar and dispatch ---------------------------------------------------------------------
@pytest.mark.parametrize(
    ("spec", "parsed"),
    [
        ("synthetic", ("synthetic", "")),
        ("synthetic:test", ("synthetic", "test")),
        ("data/x.jsonl", ("path", "data/x.jsonl")),
        ("s3://bucket/x.parquet", ("path", "s3://bucket/x.parquet")),
        ("toolace:data/t.json", ("toolace", "data/t.json")),
        ("xlam:x.json", ("xlam", "x.json")),
        ("bfcl:simple,parallel", ("bfcl", "simple,parallel")),
        ("hf:Team-ACE/ToolACE:train", ("hf", "Team-ACE/ToolACE:train")),
    ],
)
def test_spec_grammar(spec, parsed):
    assert parse_spec(spec) == parsed


@pytest.mark.parametrize("spec", ["data/x.csv", "nonsense", "toolace:", "bfcl"])
def test_unknown_spec_lists_the_accepted_forms(spec):
    with pytest.raises(
        DatasetError, match=r"(?s)unknown dataset spec.*synthetic\[:split\[:tools\]\].*hf:ID_OR_DIR"
    ):
        load_samples(spec)


def test_synthetic_dispatch_passes_n_seed_split_and_validates(monkeypatch):
    calls = {}

    def generate(n, *, seed=0, split="train", categories=None, weights=None, tools="fixed"):
        calls.update(n=n, seed=seed, split=split, tools=tools)
        out = [Sample.from_dict(sample(i)) for i in range(n)]
        out.append(Sample.from_dict(sample(0)))  # a duplicate the loader must catch
        return out

    monkeypatch.setitem(sys.modules, "itool_ray.data.synth", types.SimpleNamespace(generate=generate))
    samples, report = load_samples("synthetic:test:mixed", n=4, seed=7)
    assert calls == {"n": 4, "seed": 7, "split": "test", "tools": "mixed"}
    assert len(samples) == 4 and report.by_kind == {"duplicate id": 1}


def test_bfcl_dispatch_splits_categories(monkeypatch):
    seen = []

    def load_bfcl(categories):
        seen.extend(categories)
        return [Sample.from_dict(sample(i, category=c)) for i, c in enumerate(categories)]

    monkeypatch.setitem(sys.modules, "itool_ray.data.bfcl", types.SimpleNamespace(load_bfcl=load_bfcl))
    samples, _ = load_samples("bfcl:simple, parallel")
    assert seen == ["simple", "parallel"] and [s.category for s in samples] == ["simple", "parallel"]


def test_real_synthetic_generator_loads_cleanly():
    pytest.importorskip("itool_ray.data.synth")
    samples, report = load_samples("synthetic", n=20, seed=1, strict=True)
    assert len(samples) == 20 and report.n_skipped == 0
