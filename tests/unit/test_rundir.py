"""The run directory's manifest: a finished stage is trusted by its outputs' listing, not re-hashed."""

from __future__ import annotations

import os

import pytest

from itool_ray.driver.rundir import RunDir, RunDirError


def _finished(tmp_path) -> RunDir:
    run = RunDir(str(tmp_path / "run"))
    with run.stage("warmup") as st:
        run.write_bytes("warmup/ckpt/model.safetensors", b"w" * 4096)
        run.write_text("warmup/ckpt/config.json", "{}")
        st.outputs.append("warmup/ckpt")
    return run


def test_a_finished_stage_is_checked_without_reading_its_outputs(tmp_path, monkeypatch):
    run = _finished(tmp_path)
    assert run.manifest()["stages"]["warmup"]["checksums"]["warmup/ckpt"]  # hashed once, at the end
    monkeypatch.setattr(RunDir, "checksum", lambda self, rel: pytest.fail("re-hashed " + rel))
    assert run.stage_done("warmup")


@pytest.mark.parametrize("change", ["rewrite", "remove", "add"])
def test_a_changed_output_makes_the_stage_not_done(tmp_path, change):
    run = _finished(tmp_path)
    ckpt = tmp_path / "run" / "warmup" / "ckpt"
    if change == "rewrite":
        (ckpt / "model.safetensors").write_bytes(b"x" * 4096)  # same size, new content and mtime
        os.utime(ckpt / "model.safetensors", ns=(1, 1))
    elif change == "remove":
        (ckpt / "config.json").unlink()
    else:
        (ckpt / "extra.bin").write_bytes(b"1")
    assert not run.stage_done("warmup")


def test_manifests_without_listings_fall_back_to_checksums(tmp_path):
    run = _finished(tmp_path)
    m = run.manifest()
    del m["stages"]["warmup"]["listings"]
    run.write_json("manifest.json", m)
    assert run.stage_done("warmup")
    (tmp_path / "run" / "warmup" / "ckpt" / "config.json").write_text("{ }")
    assert not run.stage_done("warmup")


def test_a_variant_adopts_a_done_stage_copying_its_files_and_referencing_its_directories(tmp_path):
    base = RunDir(str(tmp_path / "base"))
    with base.stage("warmup") as st:
        base.write_text("warmup/policy.txt", str(tmp_path / "base" / "warmup" / "ckpt") + "\n")
        (tmp_path / "base" / "warmup" / "ckpt").mkdir()
        (tmp_path / "base" / "warmup" / "ckpt" / "model.safetensors").write_bytes(b"w" * 1000)
        st.outputs += ["warmup/policy.txt", "warmup/ckpt"]
        st.summary["trained_tokens"] = 7
    variant = RunDir(str(tmp_path / "base" / "compare" / "v"))
    variant.adopt("warmup", base)
    assert variant.stage_done("warmup")
    entry = variant.manifest()["stages"]["warmup"]
    assert entry["outputs"] == ["warmup/policy.txt"] and entry["adopted_from"] == base.uri
    assert entry["summary"] == {"trained_tokens": 7}
    assert variant.read_text("warmup/policy.txt") == base.read_text("warmup/policy.txt")
    assert not (tmp_path / "base" / "compare" / "v" / "warmup" / "ckpt").exists()  # not copied
    with pytest.raises(RunDirError, match="cannot share stage eval_warmup .*not done there"):
        variant.adopt("eval_warmup", base)
