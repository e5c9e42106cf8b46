"""The run directory's manifest: a finished stage is trusted by its outputs' listing, not re-hashed."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

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


def test_a_copied_run_directory_is_done_by_its_checksums_and_its_new_listing_is_kept(tmp_path, monkeypatch):
    run = _finished(tmp_path)
    # `cp -r` (no -p): the same bytes with new modification times; a stage must not be redone for that.
    shutil.copytree(tmp_path / "run", tmp_path / "copy", copy_function=shutil.copyfile)
    os.utime(tmp_path / "copy" / "warmup" / "ckpt" / "config.json", ns=(1, 1))
    copy = RunDir(str(tmp_path / "copy"))
    assert copy.listing_key("warmup/ckpt") != run.listing_key("warmup/ckpt")
    assert copy.stage_done("warmup")
    monkeypatch.setattr(RunDir, "checksum", lambda self, rel: pytest.fail("re-hashed " + rel))
    assert copy.stage_done("warmup")  # the copy's listing was recorded: no second hashing
    monkeypatch.undo()
    # A copy whose bytes differ is not done, whatever its listing.
    (tmp_path / "copy" / "warmup" / "ckpt" / "config.json").write_text("{ }")
    assert not copy.stage_done("warmup")


@pytest.mark.parametrize("root", ["local", "memory://runs/a"])
def test_a_model_inside_the_run_is_referenced_relative_to_it(tmp_path, root):
    run = RunDir(str(tmp_path / "a") if root == "local" else root)
    inside = run.url("warmup", "ckpt")
    run.write_text("warmup/ckpt/config.json", "{}")
    assert run.model_ref(inside) == "./warmup/ckpt"
    assert run.model_at("./warmup/ckpt") == inside
    for elsewhere in ("HuggingFaceTB/SmolLM2-135M-Instruct", str(tmp_path / "models" / "m"), "s3://b/m"):
        assert run.model_ref(elsewhere) == elsewhere
        assert run.model_at(elsewhere) == elsewhere
    assert run.model_ref(run.uri + "x/ckpt") == run.uri + "x/ckpt"  # a sibling that shares a prefix


def test_a_relative_run_root_resolves_references_to_absolute_paths(tmp_path, monkeypatch):
    """The default run.root is "runs": the models it names go to training workers and replicas, which do
    not share the driver's working directory (the README's quickstart failed at its first DPO on this)."""
    monkeypatch.chdir(tmp_path)
    run = RunDir("runs/quickstart")
    run.write_text("warmup/ckpt/config.json", "{}")
    run.write_model("warmup/policy.txt", run.url("warmup", "ckpt"))
    assert run.read_text("warmup/policy.txt").strip() == "./warmup/ckpt"
    assert run.read_model("warmup/policy.txt") == str(tmp_path / "runs" / "quickstart" / "warmup" / "ckpt")
    assert run.url("data") == str(tmp_path / "runs" / "quickstart" / "data")


def test_a_hub_id_that_looks_like_a_path_inside_the_run_stays_a_hub_id(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    run = RunDir("HuggingFaceTB")  # run.root "." and run.name "HuggingFaceTB"
    assert run.model_ref("HuggingFaceTB/SmolLM2-135M-Instruct") == "HuggingFaceTB/SmolLM2-135M-Instruct"


def _base_run(tmp_path) -> RunDir:
    base = RunDir(str(tmp_path / "base"))
    with base.stage("warmup") as st:
        (tmp_path / "base" / "warmup" / "ckpt").mkdir(parents=True)
        (tmp_path / "base" / "warmup" / "ckpt" / "model.safetensors").write_bytes(b"w" * 1000)
        base.write_model("warmup/policy.txt", base.url("warmup", "ckpt"))
        st.outputs += ["warmup/policy.txt", "warmup/ckpt"]
        st.summary["trained_tokens"] = 7
    return base


def test_a_variant_adopts_a_done_stage_copying_its_files_and_referencing_its_directories(tmp_path):
    base = _base_run(tmp_path)
    variant = RunDir(str(tmp_path / "base" / "compare" / "v"))
    variant.adopt("warmup", base)
    assert variant.stage_done("warmup")
    entry = variant.manifest()["stages"]["warmup"]
    assert entry["outputs"] == ["warmup/policy.txt"] and entry["adopted_from"] == base.uri
    assert entry["summary"] == {"trained_tokens": 7}
    # The variant's reference is rebased: it names the base run's checkpoint from the variant's directory.
    assert variant.read_text("warmup/policy.txt") == "../../warmup/ckpt\n"
    assert variant.model_at("../../warmup/ckpt") == base.url("warmup", "ckpt")
    assert not (tmp_path / "base" / "compare" / "v" / "warmup" / "ckpt").exists()  # not copied
    with pytest.raises(RunDirError, match="cannot share stage eval_warmup .*not done there"):
        variant.adopt("eval_warmup", base)

    # The whole run copied (variants included) and the original gone: every reference names the copy.
    shutil.copytree(tmp_path / "base", tmp_path / "moved", copy_function=shutil.copyfile)
    shutil.rmtree(tmp_path / "base")
    moved, moved_variant = RunDir(str(tmp_path / "moved")), RunDir(str(tmp_path / "moved" / "compare" / "v"))
    assert moved.stage_done("warmup") and moved_variant.stage_done("warmup")
    for run in (moved, moved_variant):
        ckpt = run.model_at(run.read_text("warmup/policy.txt").strip())
        assert (Path(ckpt) / "model.safetensors").read_bytes() == b"w" * 1000


def test_a_reference_outside_the_base_run_is_adopted_as_it_is(tmp_path):
    base = RunDir(str(tmp_path / "base"))
    with base.stage("model") as st:
        base.write_text("model/base_path.txt", str(tmp_path / "models" / "m") + "\n")
        st.outputs.append("model/base_path.txt")
    variant = RunDir(str(tmp_path / "elsewhere" / "v"))  # not under the base run: a relative path would break
    variant.adopt("model", base)
    assert variant.read_text("model/base_path.txt").strip() == str(tmp_path / "models" / "m")
    _base_run(tmp_path)
    variant.adopt("warmup", base)
    assert variant.read_text("warmup/policy.txt").strip() == base.url("warmup", "ckpt")
