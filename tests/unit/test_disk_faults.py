"""A full disk or an unwritable run directory: a clear error naming the path, no traceback, nothing partial.

"Disk full" is real here, not mocked: the child process runs under RLIMIT_FSIZE with SIGXFSZ ignored, so
a write past the limit fails in the kernel with EFBIG, as a write to a full filesystem fails with ENOSPC.
"""

from __future__ import annotations

import json
import os
import resource
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from itool_ray.driver.rundir import RunDir, RunDirError

LIMIT = 64 * 1024


def _limited():
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (LIMIT, LIMIT))


def _run_limited(args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        args, preexec_fn=_limited, capture_output=True, text=True, cwd=cwd, timeout=300, check=False
    )


def test_run_dir_write_on_a_full_disk_names_the_path_and_keeps_the_old_file(tmp_path):
    script = textwrap.dedent(
        f"""
        from itool_ray.driver.rundir import RunDir, RunDirError
        run = RunDir({str(tmp_path / "run")!r})
        run.write_text("data/train.jsonl", "old\\n")
        try:
            run.write_text("data/train.jsonl", "x" * {4 * LIMIT})
        except RunDirError as e:
            print("ERROR", e)
        """
    )
    proc = _run_limited([sys.executable, "-c", script], tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert f"ERROR cannot write {tmp_path / 'run'}/data/train.jsonl: File too large" in proc.stdout
    files = sorted(p.name for p in (tmp_path / "run" / "data").iterdir())
    assert files == ["train.jsonl"], f"a temporary file was left behind: {files}"
    assert (tmp_path / "run" / "data" / "train.jsonl").read_text() == "old\n"


def test_a_stage_that_fails_on_a_full_disk_reports_its_own_error(tmp_path):
    """The manifest cannot record the failure either; the stage's error still comes through."""
    script = textwrap.dedent(
        f"""
        from itool_ray.driver.rundir import RunDir, RunDirError
        run = RunDir({str(tmp_path / "run")!r})
        try:
            with run.stage("data"):
                run.write_text("pad", "p" * {LIMIT // 2})  # the manifest rewrite no longer fits either
                run.write_text("data/train.jsonl", "x" * {4 * LIMIT})
        except RunDirError as e:
            print("ERROR", e)
        """
    )
    proc = _run_limited([sys.executable, "-c", script], tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "ERROR cannot write" in proc.stdout and "data/train.jsonl" in proc.stdout, proc.stdout
    manifest = json.loads((tmp_path / "run" / "manifest.json").read_text())
    assert manifest["stages"]["data"]["status"] in ("running", "failed")  # never "done"


def test_cli_writing_a_dataset_on_a_full_disk_is_a_clean_error(tmp_path):
    out = tmp_path / "big.jsonl"
    cmd = [sys.executable, "-m", "itool_ray.cli", "data", "synth", "--n", "2000", "--out", str(out)]
    proc = _run_limited(cmd, tmp_path)
    assert proc.returncode != 0
    assert f"cannot write {out}: File too large" in proc.stderr
    assert "Traceback" not in proc.stderr, proc.stderr[-2000:]
    assert sorted(os.listdir(tmp_path)) == [], "a partial file was left behind"


def test_run_directory_below_a_regular_file_is_refused_naming_it(tmp_path):
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("")
    with pytest.raises(RunDirError, match=f"cannot create run directory {blocker}/runs/x"):
        RunDir(str(blocker / "runs" / "x"))


def test_itool_run_into_an_unusable_run_directory_fails_before_starting_anything(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("")
    cmd = [sys.executable, "-m", "itool_ray.cli", "run", "--config", "tiny", "--run.root", str(blocker)]
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=tmp_path, timeout=120, check=False)
    assert proc.returncode != 0
    assert f"cannot create run directory {blocker}/tiny" in proc.stderr
    assert "Traceback" not in proc.stderr, proc.stderr[-2000:]


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes through directory permissions")
def test_read_only_run_directory_names_the_file(tmp_path):
    run = RunDir(str(tmp_path / "run"))
    os.chmod(tmp_path / "run", 0o500)
    try:
        with pytest.raises(RunDirError, match=f"cannot write {tmp_path / 'run'}/manifest.json"):
            run.write_json("manifest.json", {})
    finally:
        os.chmod(tmp_path / "run", 0o700)


def test_mining_output_on_a_full_disk_names_the_path_and_leaves_nothing_partial(tmp_path):
    script = textwrap.dedent(
        f"""
        import os
        from itool_ray.driver.mining import MiningError, _write_parquet
        rows = [dict(id=str(i), category="simple", difficulty="easy", has_call=True, greedy_text="",
                     greedy_score=0.0, greedy_exact=False, sampled_texts=[], sampled_scores=[], sampled_exact=[],
                     gt_tokens=1, gt_logprob=-1.0, gt_perplexity=1.0, wrong=True, hard=False, deficient=True,
                     reason="wrong", sample=os.urandom(1000).hex()) for i in range(200)]
        try:
            _write_parquet(rows, {str(tmp_path / "iter_1" / "deficient.parquet")!r})
        except MiningError as e:
            print("ERROR", e)
        """
    )
    proc = _run_limited([sys.executable, "-c", script], tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert f"ERROR cannot write {tmp_path / 'iter_1' / 'deficient.parquet'}: File too large" in proc.stdout, (
        proc.stdout
    )
    assert not list((tmp_path / "iter_1").iterdir()), "a partial file was left behind"


@pytest.mark.skipif(not os.path.isdir("/dev/shm"), reason="needs a second filesystem (/dev/shm)")
@pytest.mark.parametrize("place", ["publish_dir", "upload_dir"])  # a model export; the base model's upload
def test_publishing_a_model_across_filesystems_on_a_full_disk_leaves_no_part_of_it(tmp_path, place):
    """The export is written in node scratch space (here tmpfs) and copied into the run directory on another
    filesystem; the copy of the weights fails: the files already placed are taken back."""
    import shutil
    import tempfile

    src = Path(tempfile.mkdtemp(prefix="itool-publish-", dir="/dev/shm"))
    try:
        (src / "config.json").write_text("{}")
        (src / "tokenizer.json").write_text("{}")
        (src / "model.safetensors").write_bytes(os.urandom(4 * LIMIT))
        target = tmp_path / "run" / "warmup"
        target.mkdir(parents=True)
        (target / "metrics.json").write_text("{}")  # written before: kept
        script = textwrap.dedent(
            f"""
            from itool_ray.storage import StorageError, {place}
            try:
                {place}({str(src)!r}, {str(target)!r})
            except StorageError as e:
                print("ERROR", e)
            """
        )
        proc = _run_limited([sys.executable, "-c", script], tmp_path)
        assert proc.returncode == 0, proc.stderr[-2000:]
        assert f"ERROR cannot write {target}: File too large" in proc.stdout, proc.stdout
        assert sorted(p.name for p in target.iterdir()) == ["metrics.json"]
    finally:
        shutil.rmtree(src, ignore_errors=True)
