"""The iTool loop end to end on the tiny preset: in-process, resumed, killed mid-search, and via `ray job submit`."""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from raycluster import start_head

from itool_ray import logs
from itool_ray.config import load_config
from itool_ray.driver.pipeline import KILL_AFTER_STAGE_ENV, run_pipeline
from itool_ray.driver.rundir import RunLayout
from itool_ray.driver.stages import plan
from itool_ray.train.ray_train import CRASH_AFTER_STEP_ENV

ROOT = Path(__file__).resolve().parents[2]
VENV_BIN = Path(sys.executable).parent


def _cfg(tmp_path: Path, data_dir: str, name: str = "tiny"):
    return load_config("tiny", ["--run.root", str(tmp_path), "--run.data_dir", data_dir, "--run.name", name])


def _manifest(run_dir: Path) -> dict:
    return json.loads((run_dir / "manifest.json").read_text())


def test_tiny_pipeline_runs_every_stage_and_resumes_without_redoing(
    tmp_path, data_dir, ray_session, s3_server
):
    cfg = _cfg(tmp_path, data_dir)
    cfg.run.controls = ["random", "targeted"]  # the default of every other preset
    cfg.distributed.num_workers = 0  # training in the driver (IN_DRIVER): seven training stages run here
    run = run_pipeline(cfg)
    run_dir = Path(run.root)
    manifest = _manifest(run_dir)
    names = [entry.name for entry in plan(cfg)]
    assert [n for n in names if manifest["stages"][n]["status"] != "done"] == []
    # Every output a stage recorded is a path the run's layout names (files) or a checkpoint directory.
    layout = RunLayout.of(cfg)
    named = set(layout.files()) | {layout.checkpoint(p) for p in layout.policies()}
    outputs = {rel for entry in manifest["stages"].values() for rel in entry["outputs"]}
    assert outputs and outputs <= named, sorted(outputs - named)

    results = json.loads((run_dir / "results.json").read_text())
    for stage in ("base", "warmup", "iter_1", "control", "control_targeted"):
        assert 0.0 <= results[stage]["overall"] <= 1.0
        assert "overall" in results[stage] and len(results[stage]) > 1
    assert results["wall_s"] > 0
    pairs = (run_dir / "iter_1" / "pairs.jsonl").read_text().splitlines()
    assert pairs, "the iteration produced no preference pairs"
    assert all({"prompt", "chosen", "rejected", "meta"} <= set(json.loads(p)) for p in pairs)
    assert (run_dir / "report.md").read_text().count("| iter_1 | **") == 1  # one row in the learning table
    assert (run_dir / "plots" / "accuracy.png").stat().st_size > 1000
    assert (run_dir / "plots" / "benchmarks.png").stat().st_size > 1000
    # Both controls trained for as many tokens as the iteration did; the targeted one on exactly the
    # samples the pairs came from.
    st = manifest["stages"]
    for control in ("control", "control_targeted"):
        assert st[control]["summary"]["token_budget"] == st["iter_1/train"]["summary"]["trained_tokens"] > 0
        assert st[control]["summary"]["trained_tokens"] >= st[control]["summary"]["token_budget"]
    paired_ids = {json.loads(p)["meta"]["sample_id"] for p in pairs}
    assert st["control_targeted"]["summary"]["samples"] == len(paired_ids)
    assert st["control"]["summary"]["samples"] == len(
        (run_dir / "data" / "train.jsonl").read_text().splitlines()
    )
    # Every comparison has its paired interval, per category and overall.
    intervals = results["intervals"]["heldout"]
    assert list(intervals) == [
        "warmup vs base",
        "iter_1 vs warmup",
        "iter_1 vs control",
        "iter_1 vs control_targeted",
        "iter_1 vs base",
    ]
    for ivs in intervals.values():
        assert ivs["overall"]["lo"] <= ivs["overall"]["diff"] <= ivs["overall"]["hi"]
        assert ivs["overall"]["n"] == len((run_dir / "data" / "heldout.jsonl").read_text().splitlines())
    assert "## Paired differences, held-out" in (run_dir / "report.md").read_text()
    assert "## Training cost" in (run_dir / "report.md").read_text()

    # One fleet for the whole run here (training in the driver holds no CPU of Ray's): started once,
    # shared by evaluation, mining and search, new weights reloaded in place after each training stage.
    fleet = manifest["fleet"]
    assert [e["event"] for e in fleet].count("start") == 1, fleet
    assert [e["stage"] for e in fleet if e["event"] == "reload"] == [
        "eval_warmup",
        "iter_1/eval",
        "eval_control",
        "eval_control_targeted",
    ]
    assert not [e for e in fleet if e["stage"] in ("iter_1/mine", "iter_1/search")], (
        "mining/search had a fleet of its own"
    )
    assert fleet[-1]["event"] == "close" and fleet[-1]["stage"] == "end"

    # A second run finds everything done and redoes nothing.
    run_pipeline(cfg)
    again = _manifest(run_dir)
    assert {n: s["ended"] for n, s in again["stages"].items()} == {
        n: s["ended"] for n, s in manifest["stages"].items()
    }

    # `itool iterate --stage search` redoes the search; everything built on the old trees is forgotten, and
    # the next run rebuilds it (pairs, training, evaluations, the control, the report) and nothing before.
    run_pipeline(cfg, until="iter_1/search", redo=True)
    redone = _manifest(run_dir)["stages"]
    after_search = names[names.index("iter_1/search") + 1 :]
    assert not [n for n in after_search if n in redone], "stages built on the old trees are still recorded"
    run_pipeline(cfg)
    final = _manifest(run_dir)["stages"]
    assert all(final[n]["status"] == "done" for n in names)
    before_search = names[: names.index("iter_1/search")]
    assert all(final[n]["ended"] == manifest["stages"][n]["ended"] for n in before_search)
    assert all(final[n]["ended"] > manifest["stages"][n]["ended"] for n in after_search)

    # The run directory copied (`cp -r`: new modification times) and the original gone: the copy resumes
    # with nothing redone, and a redone evaluation loads the copy's own checkpoint.
    moved = tmp_path / "moved"
    shutil.copytree(run_dir, moved, copy_function=shutil.copyfile)
    shutil.rmtree(run_dir)
    moved_cfg = _cfg(tmp_path, data_dir, "moved")
    moved_cfg.run.controls, moved_cfg.distributed.num_workers = cfg.run.controls, 0
    run_pipeline(moved_cfg, restart_from="eval_control_targeted")
    relocated = _manifest(moved)["stages"]
    kept = names[: names.index("eval_control_targeted")]
    assert {n: relocated[n]["ended"] for n in kept} == {n: final[n]["ended"] for n in kept}
    assert relocated["eval_control_targeted"]["ended"] > final["eval_control_targeted"]["ended"]
    evaluated = json.loads((moved / "control_targeted" / "eval.json").read_text())["model"]
    assert evaluated == str(moved / "control_targeted" / "ckpt")

    # The copy uploaded to an object store (a local run keeps its base model on the driver's disk, where
    # other nodes cannot read it): the model stage is redone and uploads the base model into the run; every
    # other stage before the report is kept.
    import fsspec

    fs = fsspec.filesystem("s3", skip_instance_cache=True)
    root = s3_server() + "/runs"
    fs.put(str(moved) + "/", root[len("s3://") :] + "/moved/", recursive=True)
    s3_cfg = load_config("tiny", ["--run.root", root, "--run.data_dir", data_dir, "--run.name", "moved"])
    s3_cfg.run.controls, s3_cfg.distributed.num_workers = cfg.run.controls, 0
    run_pipeline(s3_cfg, restart_from="report")
    on_s3 = root[len("s3://") :] + "/moved"
    uploaded = json.loads(fs.cat_file(f"{on_s3}/manifest.json"))["stages"]
    assert fs.cat_file(f"{on_s3}/model/base_path.txt").decode().strip() == "./model/base"
    assert fs.exists(f"{on_s3}/model/base/config.json")
    assert uploaded["model"]["ended"] > relocated["model"]["ended"]
    assert uploaded["model"]["outputs"] == [RunLayout.BASE_UPLOAD, RunLayout.BASE_MODEL]
    kept = [n for n in names[: names.index("report")] if n != "model"]
    assert {n: uploaded[n]["ended"] for n in kept} == {n: relocated[n]["ended"] for n in kept}


def test_restart_from_redoes_that_stage_and_later_ones_only(tmp_path, data_dir, ray_session):
    cfg = _cfg(tmp_path, data_dir)
    cfg.run.iterations = 0  # data → model → eval → warm-up → eval → control → report
    cfg.eval.bfcl_categories = ["simple", "irrelevance"]  # BFCL's data and checker, 3 entries each
    cfg.eval.bfcl_limit = 3
    cfg.distributed.cpus_per_worker = 2  # training needs the replica's CPU too: the fleet closes for it
    run = run_pipeline(cfg)
    before = _manifest(Path(run.root))["stages"]
    events = [(e["stage"], e["event"]) for e in _manifest(Path(run.root))["fleet"]]
    assert events == [
        ("eval_base", "start"),
        ("warmup", "close"),
        ("eval_warmup", "start"),
        ("control", "close"),
        ("eval_control", "start"),
        ("end", "close"),
    ]
    bfcl = json.loads((Path(run.root) / "results.json").read_text())["bfcl"]
    assert set(bfcl) == {"base", "warmup", "control"}
    for acc in bfcl.values():
        assert set(acc) == {"simple", "irrelevance", "overall"}
    evaluated = json.loads((Path(run.root) / "warmup" / "eval.json").read_text())["bfcl"]
    assert len(evaluated["records"]) == 6
    assert "## BFCL" in (Path(run.root) / "report.md").read_text()
    assert before["report"]["summary"]["bfcl_overall"] == {k: v["overall"] for k, v in bfcl.items()}
    run_pipeline(cfg, restart_from="eval_warmup")
    after = _manifest(Path(run.root))["stages"]
    for name in ("data", "model", "eval_base", "warmup"):
        assert after[name]["ended"] == before[name]["ended"]
    for name in ("eval_warmup", "control", "eval_control", "report"):
        assert after[name]["ended"] > before[name]["ended"]


@pytest.fixture(scope="module")
def ray_head():
    """A `ray start --head` node (token auth, its own ports and temp dir), as `ray job submit` users run it."""
    cluster = start_head(num_cpus=2)
    try:
        yield {
            "address": cluster.address,
            "dashboard": cluster.dashboard,
            "env": cluster.env,
            "token": cluster.token,
        }
    finally:
        cluster.stop()


# Tests about the runner (stages, resume, kills, shared prefixes) train in the driver: Ray Train's worker start
# is most of a tiny training stage, and the pipeline on Ray Train has tests of its own (this module's
# restart-from, mid-training kill, object store, console and job submission tests; the 3-node cluster test;
# tests/integration/test_train.py).
IN_DRIVER = ["--distributed.num_workers", "0"]


def _driver_args(tmp_path: Path, data_dir: str, name: str, *extra: str, root: str | None = None) -> list[str]:
    """The tiny pipeline's job entry script, as `ray job submit` would run it; ``root`` a run root relative
    to the driver's working directory (``tmp_path``), as the README's default ``runs`` is."""
    args = [sys.executable, str(ROOT / "jobs" / "pipeline.py"), "--config", "tiny"]
    root = str(tmp_path) if root is None else root
    return args + ["--run.root", root, "--run.data_dir", data_dir, "--run.name", name, *extra]


def _driver_env(head: dict) -> dict:
    return {**head["env"], "RAY_ADDRESS": head["address"], "PYTHONUNBUFFERED": "1"}


@pytest.mark.slow
def test_driver_killed_during_search_resumes_with_no_stage_done_twice(tmp_path, data_dir, ray_head):
    args = _driver_args(tmp_path, data_dir, "crash", *IN_DRIVER)
    run_dir = tmp_path / "crash"
    log = open(tmp_path / "first.log", "w")
    proc = subprocess.Popen(
        args, env=_driver_env(ray_head), stdout=log, stderr=subprocess.STDOUT, cwd=tmp_path
    )
    deadline = time.time() + 600
    while time.time() < deadline and proc.poll() is None:
        m = run_dir / "manifest.json"
        if m.exists():
            try:
                if _manifest(run_dir)["stages"].get("iter_1/search", {}).get("status") == "running":
                    break
            except json.JSONDecodeError:
                pass  # never happens with atomic writes; tolerated so the test reports the real failure
        time.sleep(0.2)
    assert proc.poll() is None, (
        f"the driver ended before the search stage:\n{(tmp_path / 'first.log').read_text()[-3000:]}"
    )
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    before = _manifest(run_dir)["stages"]
    assert before["iter_1/search"]["status"] == "running"
    assert not (run_dir / "iter_1" / "trees.jsonl").exists(), "a partial trees file must not look complete"

    rerun = subprocess.run(
        args, env=_driver_env(ray_head), capture_output=True, text=True, cwd=tmp_path, timeout=900
    )
    assert rerun.returncode == 0, rerun.stdout[-3000:] + rerun.stderr[-3000:]
    after = _manifest(run_dir)["stages"]
    done_before = [n for n, s in before.items() if s["status"] == "done"]
    assert done_before, "nothing had finished before the kill"
    for name in done_before:
        assert after[name]["ended"] == before[name]["ended"], f"{name} was done twice"
    assert all(s["status"] == "done" for s in after.values())
    assert (run_dir / "results.json").exists()


@pytest.mark.slow
def test_driver_killed_at_every_stage_boundary_loses_and_redoes_nothing(tmp_path, data_dir, ray_head):
    """SIGKILL the driver right after each stage in turn; every re-run does exactly the next stage."""
    cfg = _cfg(tmp_path, data_dir, "boundaries")
    names = [entry.name for entry in plan(cfg)]
    args = _driver_args(tmp_path, data_dir, "boundaries", *IN_DRIVER)
    run_dir = tmp_path / "boundaries"
    ended: dict[str, float] = {}
    for name in names[:-1]:
        env = {**_driver_env(ray_head), KILL_AFTER_STAGE_ENV: name}
        proc = subprocess.run(args, env=env, capture_output=True, text=True, cwd=tmp_path, timeout=600)
        assert proc.returncode == -signal.SIGKILL, (name, proc.returncode, proc.stderr[-3000:])
        stages_now = _manifest(run_dir)["stages"]
        done = {n: s["ended"] for n, s in stages_now.items() if s["status"] == "done"}
        assert set(done) == set(ended) | {name}, f"after the kill at {name}: done {sorted(done)}"
        for n, t in ended.items():
            assert done[n] == t, f"{n} was redone by the run that was killed after {name}"
        ended = done
        # Outputs of a completed stage are there and match the recorded checksums.
        for rel, digest in stages_now[name].get("checksums", {}).items():
            assert digest, f"{name}: no checksum for {rel}"
            assert (run_dir / rel).exists(), f"{name}: output {rel} is missing"
    final = subprocess.run(
        args, env=_driver_env(ray_head), capture_output=True, text=True, cwd=tmp_path, timeout=600
    )
    assert final.returncode == 0, final.stdout[-3000:] + final.stderr[-3000:]
    after = _manifest(run_dir)["stages"]
    assert [n for n in names if after[n]["status"] != "done"] == []
    assert {n: after[n]["ended"] for n in ended} == ended
    assert not list(run_dir.rglob("*.tmp-*")), "a temporary file was left behind"
    results = json.loads((run_dir / "results.json").read_text())
    assert {"base", "warmup", "iter_1", "control"} <= set(results)


@pytest.mark.slow
def test_ray_job_submit_runs_the_tiny_pipeline(tmp_path, data_dir, ray_head):
    cmd = [
        str(VENV_BIN / "ray"),
        "job",
        "submit",
        "--address",
        ray_head["dashboard"],
        "--working-dir",
        str(ROOT),
        "--",
        "python",
        "jobs/pipeline.py",
        "--config",
        "tiny",
        "--run.root",
        str(tmp_path),
        "--run.data_dir",
        data_dir,
        "--run.name",
        "job",
        "--run.iterations",
        "1",
    ]
    # The head's job agent can lag behind its dashboard: Ray then answers 500 "please try again later".
    for _ in range(12):
        out = subprocess.run(cmd, env=ray_head["env"], capture_output=True, text=True, timeout=900)
        if "No available agent to submit job" not in out.stdout + out.stderr:
            break
        time.sleep(5)
    assert out.returncode == 0, out.stdout[-4000:] + out.stderr[-2000:]
    assert "succeeded" in (out.stdout + out.stderr).lower()
    for table in (
        "Held-out accuracy",
        "Paired differences, held-out",
        "Training cost",
    ):  # the driver's console
        assert table in out.stdout, (table, out.stdout[-3000:])
    results = json.loads((tmp_path / "job" / "results.json").read_text())
    assert {"base", "warmup", "iter_1", "control"} <= set(results)


def _job(ray_head: dict, *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    cmd = [str(VENV_BIN / "ray"), "job", args[0], "--address", ray_head["dashboard"], *args[1:]]
    # The head's job agent can lag behind its dashboard: Ray then answers 500 "please try again later".
    for _ in range(12):
        out = subprocess.run(cmd, env=ray_head["env"], capture_output=True, text=True, timeout=timeout)
        if "No available agent to submit job" not in out.stdout + out.stderr:
            return out
        time.sleep(5)
    return out


@pytest.mark.slow
def test_ray_job_stop_ends_the_driver_cleanly_and_the_rerun_redoes_only_the_stopped_stage(
    tmp_path, data_dir, ray_head
):
    """`ray job stop` SIGTERMs the driver mid-stage: it releases the fleet, says how to resume and exits 143
    (before: Ray's crash handler printed a C++ stack trace and the driver aborted, exit 134); the stopped
    stage is recorded as failed, not done, and the same command re-run finishes with no completed stage redone."""
    entry = ["python", "jobs/pipeline.py", *_driver_args(tmp_path, data_dir, "stopped", *IN_DRIVER)[2:]]
    entry += ["--run.iterations", "1"]
    job_id = f"stop-{int(time.time())}"
    sub = _job(
        ray_head, "submit", "--no-wait", "--submission-id", job_id, "--working-dir", str(ROOT), "--", *entry
    )
    assert sub.returncode == 0, sub.stdout[-3000:] + sub.stderr[-2000:]
    run_dir = tmp_path / "stopped"
    deadline = time.time() + 600
    while time.time() < deadline:
        m = run_dir / "manifest.json"
        if m.exists() and _manifest(run_dir)["stages"].get("iter_1/mine", {}).get("status") == "running":
            break
        assert "failed" not in _job(ray_head, "status", job_id).stdout.lower()
        time.sleep(0.2)
    else:
        pytest.fail("the job never reached iter_1/mine")
    stop = _job(ray_head, "stop", job_id)
    assert stop.returncode == 0, stop.stdout[-2000:] + stop.stderr[-2000:]
    assert "stopped" in _job(ray_head, "status", job_id).stdout.lower()
    logs_out = _job(ray_head, "logs", job_id).stdout
    assert "itool: stopped (SIGTERM)" in logs_out and "re-run the same command" in logs_out, logs_out[-3000:]
    assert "SIGTERM received" not in logs_out and "Aborted" not in logs_out, logs_out[-3000:]
    assert "fleet: 1 replica(s) closed" in logs_out, "the fleet was not released on the way out"
    before = _manifest(run_dir)["stages"]
    assert before["iter_1/mine"]["status"] == "failed" and "iter_1/search" not in before
    assert before["iter_1/mine"]["error"].startswith("Terminated: SIGTERM")
    assert not (run_dir / "iter_1" / "deficient.parquet").exists(), (
        "a stopped stage's output must not look complete"
    )

    rerun = subprocess.run(
        _driver_args(tmp_path, data_dir, "stopped", *IN_DRIVER) + ["--run.iterations", "1"],
        env=_driver_env(ray_head),
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=600,
    )
    assert rerun.returncode == 0, rerun.stdout[-3000:] + rerun.stderr[-3000:]
    after = _manifest(run_dir)["stages"]
    assert all(s["status"] == "done" for s in after.values())
    done_before = [n for n, s in before.items() if s["status"] == "done"]
    assert done_before and {n: after[n]["ended"] for n in done_before} == {
        n: before[n]["ended"] for n in done_before
    }


@pytest.mark.slow
def test_object_store_run_root_survives_a_driver_kill(tmp_path, data_dir, ray_head, s3_server):
    """run.root on a real S3 server: the driver is killed mid-run, the re-run finishes with no stage redone,
    and nothing of the run is written to the local disk."""
    import fsspec

    root = s3_server() + "/runs"
    args = [sys.executable, str(ROOT / "jobs" / "pipeline.py"), "--config", "tiny"]
    args += ["--run.root", root, "--run.data_dir", data_dir, "--run.name", "s3"]
    env = {**_driver_env(ray_head), "ITOOL_CACHE_DIR": str(tmp_path / "cache")}
    # The first run also loses a training worker once, after the warm-up's first checkpoint (in the bucket).
    killed = subprocess.run(
        args,
        env={**env, KILL_AFTER_STAGE_ENV: "iter_1/search", CRASH_AFTER_STEP_ENV: "1"},
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=600,
    )
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-3000:]
    fs = fsspec.filesystem("s3", skip_instance_cache=True)
    run = root[len("s3://") :] + "/s3"
    before = json.loads(fs.cat_file(f"{run}/manifest.json"))["stages"]
    assert before["iter_1/search"]["status"] == "done" and "iter_1/pairs" not in before
    assert fs.exists(f"{run}/warmup/ckpt/model.safetensors")
    warmup = json.loads(fs.cat_file(f"{run}/warmup/ckpt/metrics.json"))["summary"]
    assert warmup["resumed_from_step"] is not None, "the crashed worker did not resume from the bucket"
    assert not fs.exists(f"{run}/warmup/ckpt/train_state"), "training state left after the stage"
    assert fs.cat_file(f"{run}/model/base_path.txt").decode().strip() == "./model/base"  # in the run

    final = subprocess.run(args, env=env, capture_output=True, text=True, cwd=tmp_path, timeout=600)
    assert final.returncode == 0, final.stdout[-3000:] + final.stderr[-3000:]
    after = json.loads(fs.cat_file(f"{run}/manifest.json"))["stages"]
    assert all(s["status"] == "done" for s in after.values())
    assert {n: after[n]["ended"] for n in before} == {n: s["ended"] for n, s in before.items()}
    assert {"base", "warmup", "iter_1", "control"} <= set(json.loads(fs.cat_file(f"{run}/results.json")))
    assert fs.exists(f"{run}/plots/accuracy.png")
    assert not list(tmp_path.rglob("manifest.json")), "the run wrote a manifest to the local disk"
    # What the stages loaded came from the bucket into the node cache, not from the driver's model build.
    cache = [p for p in (tmp_path / "cache").iterdir() if not p.name.startswith(".") and p.name != "logs"]
    assert {"base", "ckpt"} <= {p.name.split("-", 1)[1] for p in cache}
    # The driver spools its log file locally (kept across the kill) and uploads it when the run ends.
    uploaded = fs.cat_file(f"{run}/logs/itool.log").decode()
    assert "[1/" in uploaded and "report: finished" in uploaded, uploaded[-2000:]
    assert "iter_1/search: finished" in uploaded, "the killed run's lines were lost from the log"

    # The run copied to another prefix and the original deleted: the copy resumes with nothing redone, and a
    # redone evaluation loads the copy's checkpoint (and base model, for the tokenizer) from the copy.
    fs.copy(run, f"{run}-moved", recursive=True)
    fs.rm(run, recursive=True)
    args[args.index("--run.name") + 1] = "s3-moved"
    moved = subprocess.run(
        [*args, "--restart-from", "eval_control"],
        env=env,
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=600,
    )
    assert moved.returncode == 0, moved.stdout[-3000:] + moved.stderr[-3000:]
    relocated = json.loads(fs.cat_file(f"{run}-moved/manifest.json"))["stages"]
    kept = [n for n in after if n not in ("eval_control", "report")]
    assert {n: relocated[n]["ended"] for n in kept} == {n: after[n]["ended"] for n in kept}
    assert relocated["eval_control"]["ended"] > after["eval_control"]["ended"]
    evaluated = json.loads(fs.cat_file(f"{run}-moved/control/eval.json"))["model"]
    assert evaluated == f"{root}/s3-moved/control/ckpt"


def test_perplexity_buckets_score_the_train_set_with_the_base_model_then_warm_up(
    tmp_path, data_dir, ray_session
):
    cfg = _cfg(tmp_path, data_dir, "ppl")
    cfg.warmup.bucket_by = "perplexity"
    cfg.distributed.num_workers = 0  # training in the driver (IN_DRIVER)
    run = run_pipeline(cfg, until="warmup")
    run_dir = Path(run.root)
    st = _manifest(run_dir)["stages"]
    assert [n for n in st] == ["data", "model", "eval_base", "difficulty", "warmup"]
    scores = json.loads((run_dir / "data" / "difficulty.json").read_text())
    train = [json.loads(line)["id"] for line in (run_dir / "data" / "train.jsonl").read_text().splitlines()]
    assert sorted(scores) == sorted(train) and all(v >= 1.0 for v in scores.values())
    metrics = json.loads((run_dir / "warmup" / "ckpt" / "metrics.json").read_text())["summary"]
    assert metrics["bucket_by"] == "perplexity" and [p["name"] for p in metrics["phases"]] == [
        "easy",
        "medium",
        "hard",
    ]
    # The difficulty stage used the fleet eval_base had started: no second start for the base model.
    assert [e["event"] for e in _manifest(run_dir)["fleet"]].count("start") == 1


@pytest.mark.slow
@pytest.mark.parametrize(
    ("stage", "policy", "extra"),
    [
        ("warmup", "warmup", ["--warmup.epochs", "4", "--run.iterations", "0"]),
        ("iter_1/train", "iter_1", ["--train.epochs", "8", "--run.controls", "[]"]),
    ],
    ids=["warmup", "dpo"],
)
def test_driver_killed_mid_training_resumes_from_the_last_checkpoint(
    tmp_path, data_dir, ray_head, stage, policy, extra
):
    """SIGKILL the driver while a training stage (the warm-up's SFT, an iteration's DPO) runs, after a
    checkpoint; the re-run's stage resumes from it instead of starting over. The run root is relative, as
    the README's is: the training workers, whose working directory is not the driver's, still find the
    models it names."""
    args = _driver_args(tmp_path, data_dir, "midtrain", root="runs")
    args += ["--distributed.checkpoint_every_steps", "1", *extra]
    run_dir = tmp_path / "runs" / "midtrain"
    log = open(tmp_path / "first.log", "w")
    proc = subprocess.Popen(
        args, env=_driver_env(ray_head), stdout=log, stderr=subprocess.STDOUT, cwd=tmp_path
    )
    train_dir = run_dir / policy / "ckpt" / "train_state" / "train"
    deadline = time.time() + 600
    while time.time() < deadline and proc.poll() is None:
        if len(list(train_dir.glob("checkpoint_*"))) >= 2:
            break
        time.sleep(0.2)
    assert proc.poll() is None, f"the driver ended first:\n{(tmp_path / 'first.log').read_text()[-3000:]}"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert _manifest(run_dir)["stages"][stage]["status"] == "running"

    rerun = subprocess.run(
        args, env=_driver_env(ray_head), capture_output=True, text=True, cwd=tmp_path, timeout=900
    )
    assert rerun.returncode == 0, rerun.stdout[-3000:] + rerun.stderr[-3000:]
    metrics = json.loads((run_dir / policy / "ckpt" / "metrics.json").read_text())["summary"]
    assert metrics["resumed_from_step"] and metrics["resumed_from_step"] >= 1, metrics
    assert not (run_dir / policy / "ckpt" / "train_state").exists()  # removed once the stage is done


@pytest.mark.slow
def test_console_keeps_the_projects_lines_and_the_log_file_keeps_the_libraries(tmp_path, data_dir):
    """vLLM in the replicas, Ray Train for the warm-up, Ray Data for mining: the console shows stages,
    progress and training steps; the engine configuration, Ray Data's executor lines and the libraries'
    warnings and progress bars are in <run>/logs/itool.log only.

    A head of its own: Ray forwards worker output on a best-effort basis, and a head that has served many
    jobs (the module's) tails so many worker log files that a short job's lines can arrive after it ended."""
    args = [sys.executable, str(ROOT / "jobs" / "iterate.py"), "--stage", "mine", "--iteration", "1"]
    args += ["--config", "tiny", "--engine.kind", "vllm", "--run.root", str(tmp_path)]
    args += ["--run.data_dir", data_dir, "--run.name", "console"]
    cluster = start_head(num_cpus=2)
    try:
        env = {**cluster.env, "RAY_ADDRESS": cluster.address, "PYTHONUNBUFFERED": "1"}
        proc = subprocess.run(args, env=env, capture_output=True, text=True, cwd=tmp_path, timeout=600)
    finally:
        cluster.stop()
    console = proc.stdout + proc.stderr
    assert proc.returncode == 0, console[-4000:]
    log_file = (tmp_path / "console" / "logs" / "itool.log").read_text()
    for library_line in (
        "Initializing a V1 LLM engine",  # vLLM's engine configuration, INFO
        "libtcmalloc is not found",  # a vLLM WARNING at every engine start on CPU
        "Starting execution of Dataset",  # Ray Data's executor
        "Loading safetensors checkpoint shards",  # vLLM's progress bar
        "INFO autoscaler.py",  # Ray's autoscaler, forwarded from its process
    ):
        assert library_line not in console, f"{library_line!r} reached the console"
    # The file has the driver's library records and the library lines forwarded from the workers. (vLLM's
    # own lines: in a test session whose process already ran vLLM in-process, the replicas printed none,
    # for a reason not found yet; the line filter is tested on real vLLM lines in tests/unit/test_logs.py.)
    assert "Starting execution of Dataset" in log_file, log_file[-6000:]
    forwarded = [line for line in log_file.splitlines() if line.startswith("(") and "pid=" in line]
    assert any(logs.is_library_output(line.split(") ", 1)[1]) for line in forwarded), log_file[-6000:]
    for own in ("[6/6] iter_1/mine ...", "sft: step 6/6", "fleet: 1 replica(s) started", "log file: "):
        assert own in console, f"{own!r} is missing from the console"


@pytest.mark.slow
def test_compare_runs_each_variant_on_the_base_runs_prefix_and_recomputes_nothing(
    tmp_path, data_dir, ray_session
):
    from itool_ray.driver.compare import run_compare

    cfg = _cfg(tmp_path, data_dir, "cmp")
    cfg.distributed.num_workers = 0  # training in the driver (IN_DRIVER)
    cfg.run.controls = []  # the rows of the controls are the base run's own: tested above
    variants = {"no_mcts": {"mcts": {"search": False}}, "response_level": {"pairs": {"level": "response"}}}
    out = run_compare(cfg, variants)

    base_dir = tmp_path / "cmp"
    base = _manifest(base_dir)["stages"]
    shared = ("data", "model", "eval_base", "warmup", "eval_warmup", "iter_1/mine")
    # response_level changes only the pair rule: it reads the full method's own trees (no second search).
    searched = {"no_mcts": shared, "response_level": (*shared, "iter_1/search")}
    for name in variants:
        stages_v = _manifest(base_dir / "compare" / name)["stages"]
        for stage in searched[name]:
            assert stages_v[stage]["adopted_from"] == str(base_dir), (name, stage)
            assert stages_v[stage]["ended"] == base[stage]["ended"], (name, stage)
        for stage in ("iter_1/search", "iter_1/pairs", "iter_1/train", "iter_1/eval"):
            if stage in searched[name]:
                continue
            assert stages_v[stage]["status"] == "done" and "adopted_from" not in stages_v[stage], (
                name,
                stage,
            )
        assert not [s for s in stages_v if s.startswith("control")], "a variant trained a control"
    no_mcts = _manifest(base_dir / "compare" / "no_mcts")["stages"]
    assert no_mcts["iter_1/search"]["summary"]["trees_total"] == 0
    assert (
        no_mcts["iter_1/pairs"]["summary"]["ground_truth_pairs"]
        > 0
        == no_mcts["iter_1/pairs"]["summary"]["mcts_pairs"]
    )
    trees = (base_dir / "compare" / "response_level" / "iter_1" / "trees.jsonl").read_bytes()
    assert trees == (base_dir / "iter_1" / "trees.jsonl").read_bytes()
    response = (base_dir / "compare" / "response_level" / "iter_1" / "pairs.jsonl").read_text().splitlines()
    assert {json.loads(p)["meta"]["origin"] for p in response} <= {"mcts_response", "ground_truth"}

    rows = out["rows"]
    assert set(rows) == {"warmup", "full", "no_mcts", "response_level"}
    n = len((base_dir / "data" / "heldout.jsonl").read_text().splitlines())
    for row, cell in rows.items():
        held = cell["heldout"]
        if row != "full":
            iv = held["vs full"]
            assert iv["n"] == n and iv["lo"] <= iv["diff"] <= iv["hi"], (row, iv)
    assert "| no_mcts |" in (base_dir / "compare" / "compare.md").read_text()
    assert json.loads((base_dir / "compare" / "results.json").read_text())["rows"] == json.loads(
        json.dumps(rows)
    )

    # Run again: everything is done, nothing is recomputed.
    ended = {n: _manifest(base_dir / "compare" / n)["stages"]["iter_1/train"]["ended"] for n in variants}
    run_compare(cfg, variants)
    assert {
        n: _manifest(base_dir / "compare" / n)["stages"]["iter_1/train"]["ended"] for n in variants
    } == ended
