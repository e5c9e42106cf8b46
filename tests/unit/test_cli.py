import json

from itool_ray.cli import EXIT_TERMINATED, EXIT_USAGE, main


def test_config_show_prints_resolved_overrides(capsys):
    assert main(["config", "show", "--config", "tiny", "--mcts.num_children", "5"]) == 0
    out = capsys.readouterr().out
    assert "num_children: 5" in out


def test_unknown_override_key_exits_with_usage_error(capsys):
    assert main(["config", "show", "--mcts.num_childs", "5"]) == EXIT_USAGE
    err = capsys.readouterr().err
    assert "mcts.num_childs: unknown key" in err


def test_bad_value_exits_with_usage_error_naming_the_key(capsys):
    assert main(["config", "show", "--engine.kind", "tensorrt"]) == EXIT_USAGE
    assert "engine.kind" in capsys.readouterr().err


def test_data_synth_writes_deterministic_jsonl(tmp_path, capsys):
    a, b = tmp_path / "a.jsonl", tmp_path / "b.jsonl"
    assert main(["data", "synth", "--n", "20", "--out", str(a), "--seed", "3"]) == 0
    assert main(["data", "synth", "--n", "20", "--out", str(b), "--seed", "3"]) == 0
    assert a.read_bytes() == b.read_bytes()
    rows = [json.loads(line) for line in a.read_text().splitlines()]
    assert len(rows) == 20 and all(r["source"] for r in rows)


def test_data_check_reports_malformed_lines(tmp_path, capsys):
    good = tmp_path / "good.jsonl"
    assert main(["data", "synth", "--n", "3", "--out", str(good)]) == 0
    bad = tmp_path / "bad.jsonl"
    bad.write_text(good.read_text() + '{"id": "x", "tools": [\n')
    capsys.readouterr()
    assert main(["data", "check", str(bad)]) == 0
    out = capsys.readouterr()
    assert "3" in out.out and "skipped" in (out.out + out.err).lower()
    assert main(["data", "check", str(bad), "--strict"]) == EXIT_USAGE
    err = capsys.readouterr().err
    assert ":4" in err or "line 4" in err


def test_run_root_on_a_protocol_without_its_driver_is_one_line_naming_the_extra(capsys):
    assert main(["run", "--config", "tiny", "--run.root", "abfs://container/runs"]) == EXIT_USAGE
    err = capsys.readouterr().err
    assert "itool-ray[cloud]" in err and "abfs://" in err and err.count("\n") == 1


def test_user_errors_on_stages_and_models_are_one_line_not_tracebacks(tmp_path, capsys):
    root = ["--run.root", str(tmp_path)]
    cases = [
        (["run", "--config", "tiny", "--restart-from", "bogus", *root], "bogus"),
        (["iterate", "--config", "tiny", "--stage", "mine", "--iteration", "5", *root], "iter_5/mine"),
        (["eval", "--config", "tiny", "--model", str(tmp_path / "missing"), "--data", "x.jsonl"], "missing"),
    ]
    for argv, named in cases:
        assert main(argv) == EXIT_USAGE, argv
        err = capsys.readouterr().err
        assert err.startswith("itool: ") and named in err and err.count("\n") == 1, (argv, err)
    assert not (tmp_path / "tiny" / "config.yaml").exists(), "a refused command wrote to the run directory"


def test_a_missing_model_in_a_run_is_one_line_naming_the_stage(tmp_path, capsys, ray_session):
    missing = str(tmp_path / "no-such-model")
    argv = ["run", "--config", "tiny", "--run.root", str(tmp_path), "--model.name_or_path", missing]
    assert main(argv) == EXIT_USAGE
    err = capsys.readouterr().err.splitlines()
    assert [line for line in err if line.startswith("itool: ")] == [err[-1]]
    assert err[-1].startswith("itool: stage model failed: ") and missing in err[-1] and "re-run" in err[-1]
    assert not [line for line in err if "Traceback" in line]


def test_a_run_directory_that_cannot_be_written_is_one_line_before_anything_starts(tmp_path, capsys):
    (tmp_path / "tiny").mkdir()
    (tmp_path / "tiny" / "logs").write_text("a file where the run's logs directory goes")
    assert main(["run", "--config", "tiny", "--run.root", str(tmp_path)]) == EXIT_USAGE
    err = capsys.readouterr().err
    assert err == f"itool: cannot write {tmp_path / 'tiny' / 'logs' / 'itool.log'}: File exists\n"
    assert not (tmp_path / "tiny" / "manifest.json").exists()


def test_a_bug_inside_a_stage_keeps_its_traceback(tmp_path, monkeypatch, ray_session):
    import pytest

    from itool_ray.config import load_config
    from itool_ray.data.io import DatasetError
    from itool_ray.driver import pipeline, stages
    from itool_ray.driver.context import PlanEntry

    cfg = load_config("tiny", ["--run.root", str(tmp_path)])

    def plan_raising(error):
        def boom(ctx):
            raise error

        return lambda cfg: [PlanEntry("data", boom)]

    monkeypatch.setattr(stages, "plan", plan_raising(DatasetError("data.train: no usable samples")))
    with pytest.raises(pipeline.StageFailed, match="no usable samples"):
        pipeline.run_pipeline(cfg)
    monkeypatch.setattr(stages, "plan", plan_raising(ValueError("a bug")))
    with pytest.raises(ValueError, match="a bug"):  # not dressed up as "stage data failed"
        pipeline.run_pipeline(cfg)


def test_sigterm_while_ray_waits_ends_the_run_as_stopped_not_as_ctrl_c(
    tmp_path, monkeypatch, capsys, ray_session
):
    """Ray's waits turn what the SIGTERM handler raises into a bare KeyboardInterrupt (seen on `itool run`
    stopped during an evaluation): the run must still end as ``Terminated`` (exit 143, "stopped") and
    record the stage as stopped."""
    import os
    import signal
    import threading
    import time

    import pytest

    from itool_ray.config import load_config
    from itool_ray.driver import pipeline, stages
    from itool_ray.driver.context import PlanEntry
    from itool_ray.driver.rundir import RunDir

    cfg = load_config("tiny", ["--run.root", str(tmp_path)])
    waiting = []

    @ray_session.remote(num_cpus=0)
    def slow():
        time.sleep(20)

    def stage(ctx):
        with ctx.run.stage("data"):
            threading.Timer(1.0, os.kill, (os.getpid(), signal.SIGTERM)).start()
            waiting.append(slow.remote())
            ray_session.get(waiting[-1])

    monkeypatch.setattr(stages, "plan", lambda cfg: [PlanEntry("data", stage)])
    previous = signal.getsignal(signal.SIGTERM)
    try:
        assert main(["run", "--config", "tiny", "--run.root", str(tmp_path)]) == EXIT_TERMINATED
    finally:
        signal.signal(signal.SIGTERM, previous)
        for ref in waiting:
            ray_session.cancel(ref, force=True)
    err = capsys.readouterr().err
    assert "itool: stopped (SIGTERM)" in err and "re-run the same command" in err, err
    record = RunDir(cfg.run.dir).manifest()["stages"]["data"]
    assert record["status"] == "failed" and record["error"].startswith("Terminated: SIGTERM"), record
    # A Ctrl-C is still a Ctrl-C once the handler is installed and no SIGTERM came.
    monkeypatch.setattr(stages, "plan", lambda cfg: [PlanEntry("data", _interrupted)])
    try:
        with pytest.raises(KeyboardInterrupt) as info:
            pipeline.run_pipeline(cfg)
    finally:
        signal.signal(signal.SIGTERM, previous)
    assert type(info.value) is KeyboardInterrupt


def _interrupted(ctx):
    raise KeyboardInterrupt
