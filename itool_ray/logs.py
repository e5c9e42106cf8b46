"""The console is for the user; the log file keeps everything.

``itool`` prints its own lines (stage starts and ends, summaries, warnings, progress bars, training
progress) and errors from anywhere. What libraries say below ERROR (vLLM's engine configuration and its
warnings at each engine start, Ray Data's executor lines, Ray Train's, DeepSpeed's and torch's notices,
their progress bars) goes to the log file only: ``<run>/logs/itool.log`` for the run commands. ``-v`` puts
all of it back on the console.

Two sources reach the driver's console: its own ``logging`` records, filtered by :class:`ConsoleFilter`,
and the stdout/stderr lines Ray forwards from actors and workers, filtered line by line by
:func:`is_library_output`. This module imports no Ray; the driver wires the forwarded lines through
:func:`route_worker_lines`.
"""

from __future__ import annotations

import logging
import os
import re
import sys
import threading
from collections.abc import Callable
from typing import Any, TextIO

OWN_LOGGERS = ("itool", "itool_ray", "actors", "jobs", "__main__")
FORMAT = "%(asctime)s %(name)s: %(message)s"
FILE_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"

# What libraries write to a worker's stdout/stderr, as they format it (all of it goes to the log file).
_LIBRARY_LINE = re.compile(
    r"""^\s*(?:
        \S*(?:\([\w\- ]+\spid=\d+\)\s)?(?:INFO|DEBUG|WARNING)\s\d\d-\d\d\s\d\d:\d\d:\d\d\s  # vLLM
      | \d{4}-\d\d-\d\d\s\d\d:\d\d:\d\d[,.]\d+\s+(?:INFO|DEBUG|WARNING)\b      # Ray (Python): 2026-12-06 16:00:00,123\tINFO
      | \[\d{4}-\d\d-\d\d\s[\d:,.]+\s[IW]\s\d+\s\d+\]                     # Ray (C++): [2026-12-06 16:00:00,123 I 77 78]
      | \[\d{4}-\d\d-\d\d\s[\d:,.]+\]\s\[(?:INFO|DEBUG|WARNING)\]          # DeepSpeed: [2026-12-06 …] [INFO]
      | (?:INFO|DEBUG|WARNING):[\w.]*:                                   # Python's default: INFO:name:
      | \[?[IW]\d{4}\s\d\d:\d\d:\d\d\.\d+                              # torch (glog/c10): W1206 16:00:00.1
      | (?:\[rank\d+\]:)?\[W\d{4}\s                                      # torch (c10): [rank0]:[W1206 …
      | \[(?:transformers|datasets|huggingface_hub)\]\s                   # transformers' own prefix
      | \S+\.py:\d+:\s\w*Warning:\s                                      # Python warnings: f.py:1: FutureWarning:
      | [^|]{0,120}?:\s+\d{1,3}%(?:\||\sCompleted\s\|)                   # a library's progress bar
      | Reporting\straining\sresult\s\d+:\sTrainingReport\(                # Ray Train 2.60 (a logger named by path)
      | \[\d{4}-\d\d-\d\d\s[\d:,.]+\sE\s\d+\s\d+\]\score_worker\.cc:\d+:\sActor\swith\sclass\sname:
        .*\shas\sconstructor\sarguments\sin\sthe\sobject\sstore             # Ray's notice on restartable actors
      | $                                                                # blank
    )""",
    re.VERBOSE,
)
_ANSI = re.compile(r"\x1b\[[\d;]*m")


def progress_bar(total: int | None, desc: str) -> Any:
    """The console's progress bar for a long step (``with progress_bar(n, "name") as bar: ...
    bar.update(k)``): on stderr, cleared when done."""
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, unit="it", dynamic_ncols=True, leave=False)


def is_library_output(line: str) -> bool:
    """True for a line a library wrote below ERROR (a log record, a warning, a progress bar): it goes to the
    log file, not to the console. Errors, tracebacks and the project's own lines are not library output."""
    return bool(_LIBRARY_LINE.match(_ANSI.sub("", line)))


def _console_lines(lines: list[str]) -> list[str]:
    """The lines of one batch of worker output that belong on the console (a Python warning's source line
    goes with its warning)."""
    keep: list[str] = []
    after_warning = False
    for line in lines:
        if after_warning and line.startswith((" ", "\t")):
            continue
        after_warning = bool(_PY_WARNING.match(line))
        if not is_library_output(line):
            keep.append(line)
    return keep


_PY_WARNING = re.compile(r"^\S+\.py:\d+:\s\w*Warning:\s")


class ConsoleFilter(logging.Filter):
    """The project's own records at their level; everyone else's from ERROR up (the rest is in the file)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno >= logging.ERROR:
            return True
        return record.name.split(".", 1)[0] in OWN_LOGGERS


_file_handler: logging.Handler | None = None
_lock = threading.Lock()


def setup_console(verbose: bool) -> None:
    """Configure the driver's logging: the console shows the project's records (all with ``verbose``)."""
    root = logging.getLogger()
    root.setLevel(logging.DEBUG if verbose else logging.INFO)
    console = logging.StreamHandler()
    console.setFormatter(logging.Formatter(FORMAT, datefmt="%H:%M:%S"))
    if not verbose:
        console.addFilter(ConsoleFilter())
    console.set_name("itool-console")
    root.handlers = [h for h in root.handlers if h.get_name() != "itool-console"] + [console]
    if verbose:
        os.environ["ITOOL_VERBOSE"] = "1"
    else:
        # Library progress bars (weights written, datasets saved) in this process and the workers it starts.
        os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
        os.environ.setdefault("HF_DATASETS_DISABLE_PROGRESS_BARS", "1")


def verbose() -> bool:
    return os.environ.get("ITOOL_VERBOSE") == "1"


def quiet_library_loggers() -> None:
    """Library loggers that bring their own console handlers hand their records to the root logger instead,
    so the console filter and the log file see them (Ray's and Ray Data's driver-side lines)."""
    for name in ("ray", "ray.data", "ray.train", "ray.serve"):
        logger = logging.getLogger(name)
        for h in list(logger.handlers):
            if isinstance(h, logging.StreamHandler) and not isinstance(h, logging.FileHandler):
                logger.removeHandler(h)
        logger.propagate = True


class RunLogFile(logging.FileHandler):
    """The run's log file. A write that fails (a full disk) is one line on stderr, once, and the file takes
    nothing more: the console goes on, and the run directory's own writes stop the run with ``cannot write``
    where a write matters. (logging's default prints a traceback for every record it cannot write.)"""

    failed = False

    def emit(self, record: logging.LogRecord) -> None:
        if not self.failed:
            super().emit(record)

    def handleError(self, record: logging.LogRecord) -> None:
        self.fail(sys.exc_info()[1])

    def fail(self, error: BaseException | None) -> None:
        if not self.failed:
            self.failed = True
            reason = getattr(error, "strerror", None) or error
            sys.stderr.write(
                f"itool: cannot write the log file {self.baseFilename}: {reason}; not logging to it\n"
            )

    def close(self) -> None:
        try:
            super().close()
        except OSError as e:  # the last buffered lines could not be flushed either
            self.fail(e)


def log_to_file(path: str) -> logging.Handler:
    """Send every record (INFO up; DEBUG up when verbose) to ``path`` as well, replacing an earlier log file; returns the handler."""
    global _file_handler
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    handler = RunLogFile(path, encoding="utf-8")
    handler.setFormatter(logging.Formatter(FILE_FORMAT))
    handler.setLevel(logging.DEBUG if verbose() else logging.INFO)
    root = logging.getLogger()
    with _lock:
        if _file_handler is not None:
            root.removeHandler(_file_handler)
            _file_handler.close()
        _file_handler = handler
    root.addHandler(handler)
    return handler


def close_log_file() -> None:
    global _file_handler
    with _lock:
        if _file_handler is not None:
            logging.getLogger().removeHandler(_file_handler)
            _file_handler.close()
            _file_handler = None


def write_worker_lines(prefix: str, lines: list[str]) -> None:
    """Append forwarded worker lines to the log file (when there is one)."""
    with _lock:
        handler = _file_handler
        if not isinstance(handler, RunLogFile) or handler.stream is None or handler.failed:
            return
        stream: TextIO = handler.stream
        try:
            for line in lines:
                stream.write(f"{prefix} {line}\n")
            stream.flush()
        except OSError as e:
            handler.fail(e)


def route_worker_lines(print_batch: Callable[[dict[str, Any]], None]) -> Callable[[dict[str, Any]], None]:
    """A handler for Ray's forwarded worker output: every line to the log file, and to the console (through
    Ray's own printer, ``print_batch``) the lines that are not library output (all of them when verbose)."""

    def handle(data: dict[str, Any]) -> None:
        lines = data.get("lines") or []
        who = data.get("actor_name") or data.get("task_name") or ""
        write_worker_lines(f"({who} pid={data.get('pid')}, ip={data.get('ip')})", lines)
        keep = lines if verbose() else _console_lines(lines)
        if keep:
            print_batch({**data, "lines": keep})

    return handle
