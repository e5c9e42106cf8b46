"""The single-controller runner (DESIGN §1): the plan's stages over a run directory, resumable.

Each stage reads and writes the run directory and is recorded in ``manifest.json``; re-running the same
command after a crash skips every stage whose outputs are complete (``--restart-from STAGE`` redoes a
stage and all after it). The plan and the stages are in ``stages.py``; what a stage needs (the policy
fleet of a version, the training workers) is declared in its plan entry and provided by the runner
through the ``Context`` (``context.py``).
"""

from __future__ import annotations

import hashlib
import logging
import os
import signal
import threading
import time

from itool_ray import logs, storage
from itool_ray.config import Config
from itool_ray.driver import stages
from itool_ray.driver.context import NOTHING, Context, PlanEntry
from itool_ray.driver.rundir import RunDir, RunDirError, RunLayout

log = logging.getLogger("itool")

# Fault injection for the crash tests (tests/integration/test_pipeline.py): the driver SIGKILLs itself right
# after this stage is recorded as done, as a lost head node or an OOM kill would stop it at a stage boundary.
KILL_AFTER_STAGE_ENV = "ITOOL_KILL_AFTER_STAGE"


class StageFailed(RuntimeError):
    """A stage stopped for a reason the user can act on (the message says which stage and why)."""


class PlanError(ValueError):
    """A stage name the run's plan does not have (``--restart-from``, ``itool iterate``)."""


class Terminated(KeyboardInterrupt):
    """SIGTERM (``ray job stop``, a node draining): unwinds like Ctrl-C: the running stage is recorded as failed
    (redone on the next run) and the fleet is released on the way out."""


STOPPED = "SIGTERM: the driver was stopped"
_sigterm = threading.Event()  # set by the SIGTERM handler of ``_stop_on_sigterm``


def _expected_failures() -> tuple[type[BaseException], ...]:
    """Errors that mean "this input/config cannot work", reported without a traceback. Anything else (a
    bare ValueError or KeyError included) is a bug and keeps its traceback."""
    from itool_ray.config import ConfigError
    from itool_ray.data.io import DatasetError
    from itool_ray.data.schema import SampleError
    from itool_ray.driver.mining import MiningError
    from itool_ray.mcts.search import SearchFailedError
    from itool_ray.models import ModelError
    from itool_ray.prompts import PromptError
    from itool_ray.storage import StorageError
    from itool_ray.train.common import TrainError
    from itool_ray.train.deepspeed import DeepSpeedConfigError

    return (
        TrainError,
        MiningError,
        SearchFailedError,
        ModelError,
        DatasetError,
        SampleError,
        PromptError,
        ConfigError,
        DeepSpeedConfigError,
        StorageError,
    )


def init_ray() -> None:
    """Join the cluster a job was submitted to (RAY_ADDRESS), or start a local one."""
    import ray

    logs.quiet_library_loggers()
    if not ray.is_initialized():
        ray.init(
            address=os.environ.get("RAY_ADDRESS")
        )  # worker output (training progress) reaches the driver
    _route_worker_output()
    _stop_on_sigterm()


def _stop_on_sigterm() -> None:
    """After ``ray.init``: SIGTERM raises ``Terminated`` in the driver. ``ray.init`` leaves SIGTERM to its
    core worker's crash handler (a C++ stack trace, then an abort: exit 134 mid-cleanup); a second SIGTERM
    during the unwinding is ignored so the fleet's release finishes (``ray job stop`` SIGKILLs after
    ``RAY_JOB_STOP_WAIT_TIME_S``)."""
    if threading.current_thread() is not threading.main_thread():
        return
    _sigterm.clear()

    def handler(signum: int, frame: object) -> None:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        _sigterm.set()
        raise Terminated(STOPPED)

    signal.signal(signal.SIGTERM, handler)


def as_terminated(e: KeyboardInterrupt) -> KeyboardInterrupt:
    """What a KeyboardInterrupt in the driver means: Ray's waits (``ray.get``) turn whatever a signal handler
    raised into a bare ``KeyboardInterrupt``, so after a SIGTERM it is ``Terminated``, whatever its type."""
    return Terminated(STOPPED) if _sigterm.is_set() and not isinstance(e, Terminated) else e


def _route_worker_output() -> None:
    """Worker output reaches the driver's console through Ray's printer: put the log filter in front of it
    (library output goes to the log file only). Ray's and Ray Data's loggers use the driver's handlers, and
    Ray Data draws no progress bars of its own (the stages draw theirs)."""
    import ray.data
    from ray._private.ray_logging import global_worker_stdstream_dispatcher as dispatcher

    logs.quiet_library_loggers()
    if not logs.verbose():
        ray.data.DataContext.get_current().enable_progress_bars = False
    handlers = dict(dispatcher.handlers)
    if "itool_print_logs" in handlers or "ray_print_logs" not in handlers:
        return
    dispatcher.remove_handler("ray_print_logs")
    dispatcher.add_handler("itool_print_logs", logs.route_worker_lines(handlers["ray_print_logs"]))


def run_pipeline(
    cfg: Config, *, restart_from: str | None = None, until: str | None = None, redo: bool = False
) -> RunDir:
    """Run the stages in order, skipping completed ones; stop after ``until`` (``redo``: redo that one)."""
    plan = stages.plan(cfg)
    names = [entry.name for entry in plan]
    if restart_from is not None and restart_from not in names:
        raise PlanError(f"--restart-from {restart_from!r}: unknown stage (stages: {', '.join(names)})")
    if until is not None and until not in names:
        raise PlanError(
            f"stage {until!r} is not in this run's plan: run.iterations is {cfg.run.iterations} "
            f"(stages: {', '.join(names)})"
        )
    run = RunDir(cfg.run.dir)
    log_file = _open_log_file(run)
    try:
        return _run_plan(cfg, run, plan, names, restart_from=restart_from, until=until, redo=redo)
    finally:
        _close_log_file(run, log_file)


def _open_log_file(run: RunDir) -> str:
    """Every log record and every worker line of this run goes to ``<run>/logs/itool.log`` (appended across
    runs). For an object-store run root the file is written on this machine and uploaded when the run ends."""
    if run.local:
        path = run.path(RunLayout.LOG)
    else:
        digest = hashlib.sha256(run.uri.encode()).hexdigest()[:16]
        path = str(storage.cache_dir() / "logs" / f"{digest}.log")
    try:
        logs.log_to_file(path)
    except OSError as e:  # the run directory cannot be written: say so before anything starts
        raise RunDirError(f"cannot write {path}: {e.strerror or e}") from None
    where = path if run.local else f"{run.url(RunLayout.LOG)} (uploaded when the run ends)"
    log.info("log file: %s (library output%s)", where, "" if logs.verbose() else "; -v shows it here too")
    return path


def _close_log_file(run: RunDir, path: str) -> None:
    logs.close_log_file()
    if not run.local:
        try:
            with open(path, "rb") as f:
                run.write_bytes(RunLayout.LOG, f.read())
        except (OSError, RunDirError) as e:
            log.warning("could not upload the log file %s to %s: %s", path, run.url(RunLayout.LOG), e)


def _run_plan(
    cfg: Config,
    run: RunDir,
    plan: list[PlanEntry],
    names: list[str],
    *,
    restart_from: str | None,
    until: str | None,
    redo: bool,
) -> RunDir:
    if run.exists(RunLayout.CONFIG):
        old = run.read_text(RunLayout.CONFIG)
        if old != cfg.to_yaml():
            log.warning(
                "the config differs from the one this run directory was started with; completed stages "
                "are kept (use --restart-from STAGE to redo them)"
            )
    run.write_text(RunLayout.CONFIG, cfg.to_yaml())
    if restart_from is not None:
        run.forget_from(names[names.index(restart_from) :])
    on_driver = stages.base_model_on_driver_disk(run)
    if on_driver:
        log.warning(
            "the base model is %s, on this machine's disk, and the run is on an object store (a local run "
            "copied there?): the model stage is redone to upload it into %s, where every node can read it",
            on_driver,
            RunLayout.BASE_UPLOAD,
        )
        run.forget_from([RunLayout.MODEL_STAGE])
    if until is not None:
        plan = plan[: names.index(until) + 1]
        if redo:
            # Every later stage consumed what this one is about to replace: it is redone too, on the next run.
            later = [n for n in names[names.index(until) + 1 :] if run.stage_done(n)]
            if later:
                log.warning(
                    "redoing %s: %d later stage(s) built on it will be redone too: %s",
                    until,
                    len(later),
                    ", ".join(later),
                )
            run.forget_from(names[names.index(until) :])
    ctx = Context(cfg, run)
    init_ray()
    t0 = time.time()
    running = None  # the stage whose body is running (its record says so)
    try:
        for i, (name, fn, needs) in enumerate(plan, 1):
            if run.stage_done(name):
                log.info("[%d/%d] %s: done before, skipped", i, len(plan), name)
                continue
            t = time.time()
            log.info("[%d/%d] %s ...", i, len(plan), name)
            ctx.enter(name, needs)
            running = name
            try:
                fn(ctx)
            except _expected_failures() as e:
                raise StageFailed(
                    f"stage {name} failed: {e} (fix it, then re-run the same command: completed "
                    "stages are kept)"
                ) from e
            running = None
            run.note_stage(name, resources_held_after=ctx.held_after_stage())
            log.info("[%d/%d] %s: finished in %.1f s", i, len(plan), name, time.time() - t)
            if os.environ.get(KILL_AFTER_STAGE_ENV) == name:
                os.kill(os.getpid(), signal.SIGKILL)
    except KeyboardInterrupt as e:  # in a stage's body, or starting / reloading the fleet
        stop = as_terminated(e)
        if stop is e:
            raise
        if running:  # its record says KeyboardInterrupt: say what it was
            run.note_stage(running, error=f"{type(stop).__name__}: {stop}")
        raise stop from e
    finally:
        ctx.enter("end", NOTHING)
        ctx.release_pool("end of run")
    log.info("run %s finished in %.1f s", run.uri, time.time() - t0)
    return run
