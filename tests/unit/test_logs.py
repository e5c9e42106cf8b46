"""The console keeps the project's lines; the log file keeps everything."""

from __future__ import annotations

import logging
import os

import pytest

from itool_ray import logs

# Real lines from a quickstart's console before the filter (vLLM 0.32, Ray 2.60, DeepSpeed, torch, tqdm).
LIBRARY = [
    "(EngineCore pid=4242) INFO 12-06 16:00:01 [core.py:93] Initializing a V1 LLM engine (v0.32.0) with "
    "config: model='/tmp/m', speculative_config=None, tokenizer='/tmp/m', skip_tokenizer_init=False",
    "(MainProcess pid=77) INFO 12-06 16:00:01 [arg_utils.py:1180] Chunked prefill is enabled",
    "\r(MainProcess pid=77) DEBUG 12-06 16:00:01 [utils.py:10] second line of a multi-line record",
    "(MainProcess pid=6975) WARNING 12-06 19:20:37 [cpu_worker.py:114] libtcmalloc is not found in LD_PRELOAD.",
    "\x1b[32mINFO\x1b[0m 12-06 16:00:01 [cpu.py:12] coloured",
    "2026-12-06 16:00:02,123\tINFO streaming_executor.py:117 -- Starting execution of Dataset.",
    "2026-12-06 16:00:02,123 INFO worker_group.py:211 -- Attempting to start training worker group",
    "2026-12-06 16:00:02,123\tWARNING authentication_token_setup.py:85 -- Token authentication is enabled",
    "[2026-12-06 19:20:49,482 I 7077 7105] core_worker.cc:100: an info line",
    "[2026-12-06 16:00:03,456] [INFO] [real_accelerator.py:222:get_accelerator] Setting ds_accelerator",
    "[2026-12-06 19:20:53,453] [WARNING] [real_accelerator.py:213:get_accelerator] Setting accelerator to CPU.",
    "INFO:datasets:PyTorch version 2.13.0 available.",
    "W1206 19:20:36.666000 6975 torch/_library/triton.py:53] Triton not available, find_triton_kernels = []",
    "[W1206 19:20:37.631440515 utils.cpp:68] Warning: NUMA binding: Using MEMBIND policy",
    "[rank0]:[W1206 19:20:54.735995085 reducer.cpp:1529] Warning: find_unused_parameters=True was specified",
    "[transformers] mtime may not be reliable on this filesystem, falling back to numerical ordering",
    "/x/vllm/triton_utils/dispatcher.py:138: FutureWarning: `torch.distributed.reduce_op` is deprecated",
    "Loading safetensors checkpoint shards:   0% Completed | 0/1 [00:00<?, ?it/s]",
    "Loading weights: 100%|██████████| 20/20 [00:00<00:00, 24442.33it/s]",
    "Reporting training result 1: TrainingReport(checkpoint=None, metrics={'loss': 6.5}) from rank 0",
    "[2026-12-06 19:24:19,508 E 9572 9601] core_worker.cc:2465: Actor with class name: 'PreemptionWatcher' and "
    "ID: 'e7c7' has constructor arguments in the object store and max_restarts > 0. If the arguments ...",
    "",
    "   ",
]
KEPT = [
    "(EngineCore pid=4242) ERROR 12-06 16:00:01 [core.py:10] EngineCore failed to start",
    "[2026-12-06 19:20:49,482 E 7077 7105] core_worker.cc:2465: an error from Ray's core",
    "2026-12-06 16:00:02,123\tERROR streaming_executor.py:117 -- an error",
    "dpo: step 3/10  loss 0.6931  margin 0.012  1.2 s/step",
    "Traceback (most recent call last):",
    "RuntimeError: CUDA out of memory",
    "INFO is a word a user may print too",
    "ValueError: INFO 12-06 is not a header here",
]


@pytest.mark.parametrize("line", LIBRARY)
def test_what_libraries_write_below_error_is_library_output(line):
    assert logs.is_library_output(line)


@pytest.mark.parametrize("line", KEPT)
def test_errors_tracebacks_and_the_projects_lines_are_not_library_output(line):
    assert not logs.is_library_output(line)


def _record(name: str, level: int) -> logging.LogRecord:
    return logging.LogRecord(name, level, __file__, 1, "m", None, None)


def test_console_filter_keeps_own_records_and_everyones_warnings():
    f = logs.ConsoleFilter()
    assert f.filter(_record("itool", logging.INFO))
    assert f.filter(_record("itool_ray.models", logging.INFO))
    assert f.filter(_record("actors.pool", logging.DEBUG))
    assert not f.filter(_record("vllm.engine", logging.INFO))
    assert not f.filter(_record("ray.data._internal.execution", logging.INFO))
    assert not f.filter(_record("vllm.engine", logging.WARNING))
    assert f.filter(_record("itool", logging.WARNING))
    assert f.filter(_record("ray.train", logging.ERROR))


@pytest.fixture()
def log_file(tmp_path, monkeypatch):
    monkeypatch.delenv("ITOOL_VERBOSE", raising=False)
    path = tmp_path / "logs" / "itool.log"
    logs.log_to_file(str(path))
    yield path
    logs.close_log_file()


def test_worker_lines_reach_the_log_file_and_only_the_projects_reach_the_console(log_file, monkeypatch):
    printed: list[dict] = []
    handle = logs.route_worker_lines(printed.append)
    warning = next(line for line in LIBRARY if "FutureWarning" in line)  # its source line goes with it
    lines = [*LIBRARY[:3], KEPT[0], warning, "  if hasattr(value, '__dict__'):", KEPT[3]]
    handle({"lines": lines, "pid": 9, "ip": "127.0.0.1", "actor_name": "PolicyReplica"})
    assert [p["lines"] for p in printed] == [[KEPT[0], KEPT[3]]]
    assert printed[0]["actor_name"] == "PolicyReplica"
    text = log_file.read_text()
    for line in lines:
        assert line.strip() in text
    assert "(PolicyReplica pid=9, ip=127.0.0.1)" in text

    printed.clear()
    handle({"lines": LIBRARY[:2], "pid": 9, "ip": "127.0.0.1"})
    assert printed == [], "a batch of library output alone prints nothing"

    monkeypatch.setenv("ITOOL_VERBOSE", "1")
    handle({"lines": LIBRARY[:2], "pid": 9, "ip": "127.0.0.1"})
    assert [p["lines"] for p in printed] == [LIBRARY[:2]], "-v prints every line"


def test_library_records_reach_the_file_but_not_the_console(log_file, capsys, monkeypatch):
    root = logging.getLogger()
    saved = (root.handlers[:], root.level)
    try:
        logs.setup_console(verbose=False)
        logs.log_to_file(str(log_file))  # setup_console keeps the file handler; re-open after it anyway
        logging.getLogger("somelib.config").info("engine configuration: 3 KB of it")
        logging.getLogger("itool").info("[1/3] data ...")
        logging.getLogger("urllib3.connectionpool").warning("a library warning")
        logging.getLogger("urllib3.connectionpool").error("a library error")
    finally:
        logs.close_log_file()
        root.handlers, root.level = saved
    err = capsys.readouterr().err
    assert "[1/3] data ..." in err
    assert "a library error" in err
    assert "a library warning" not in err
    assert "engine configuration" not in err
    text = log_file.read_text()
    assert "engine configuration: 3 KB of it" in text
    assert "[1/3] data ..." in text
    assert "a library warning" in text


@pytest.mark.skipif(not os.path.exists("/dev/full"), reason="needs /dev/full (every write: no space left)")
def test_a_log_file_on_a_full_disk_is_one_line_once_not_a_traceback_per_record(capsys):
    root = logging.getLogger()
    saved = (root.handlers[:], root.level)
    try:
        root.handlers, root.level = [], logging.INFO
        logs.log_to_file("/dev/full")
        for i in range(3):
            logging.getLogger("itool").info("record %d", i)
        logs.write_worker_lines("(PolicyReplica pid=9)", ["a worker line"])
    finally:
        logs.close_log_file()
        root.handlers, root.level = saved
    err = capsys.readouterr().err
    assert err == "itool: cannot write the log file /dev/full: No space left on device; not logging to it\n"
