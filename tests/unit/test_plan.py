"""The plan: stage names from the run layout, and what each entry declares it needs from the runner."""

from __future__ import annotations

import pytest

from itool_ray.config import load_config
from itool_ray.driver.context import NOTHING, TRAIN, Context, fleet_of
from itool_ray.driver.rundir import RunDir, RunLayout
from itool_ray.driver.stages import base_model_on_driver_disk, plan


def _cfg(tmp_path, *extra: str):
    return load_config("tiny", ["--run.root", str(tmp_path), *extra])


def test_the_plan_names_its_stages_from_the_layout_and_declares_what_each_needs(tmp_path):
    cfg = _cfg(tmp_path, "--run.iterations", "2", "--warmup.bucket_by", "perplexity")
    cfg.run.controls = ["random", "targeted"]
    layout = RunLayout.of(cfg)
    needs = {entry.name: entry.needs for entry in plan(cfg)}
    assert list(needs) == [
        "data", "model", "eval_base", "difficulty", "warmup", "eval_warmup",
        *[f"iter_{k}/{s}" for k in (1, 2) for s in ("mine", "search", "pairs", "train", "eval")],
        "control", "eval_control", "control_targeted", "eval_control_targeted", "report",
    ]  # fmt: skip
    for policy in layout.policies():
        assert needs[layout.eval_stage(policy)] == fleet_of(policy)
        if policy != "base":
            assert needs[layout.train_stage(policy)] == TRAIN
    for k in (1, 2):  # mining and search use the policy the iteration starts from
        assert (
            needs[layout.step(k, "mine")] == needs[layout.step(k, "search")] == fleet_of(layout.previous(k))
        )
        assert needs[layout.step(k, "pairs")] == NOTHING
    assert needs["difficulty"] == fleet_of("base")
    assert needs["data"] == needs["model"] == needs["report"] == NOTHING


def test_the_layout_follows_the_config(tmp_path):
    layout = RunLayout.of(_cfg(tmp_path, "--run.iterations", "3"))
    assert layout.policies() == [
        "base",
        "warmup",
        "iter_1",
        "iter_2",
        "iter_3",
        "control",
    ]  # tiny: random only
    assert [layout.previous(k) for k in (1, 2, 3)] == ["warmup", "iter_1", "iter_2"]
    assert layout.eval_file("base") == "evals/base.json" and layout.eval_file("iter_2") == "iter_2/eval.json"
    assert layout.train_stage("iter_2") == "iter_2/train" and layout.train_stage("control") == "control"
    files = list(layout.files())
    assert len(files) == len(set(files))
    assert {"iter_3/pairs.jsonl", "iter_3/deficient.parquet", "control/policy.txt"} <= set(files)


def test_a_stage_that_did_not_declare_the_fleet_cannot_use_it(tmp_path):
    cfg = _cfg(tmp_path)
    ctx = Context(cfg, RunDir(str(tmp_path / "run")))
    ctx.enter("iter_1/pairs", NOTHING)
    with pytest.raises(RuntimeError, match="does not declare"):
        _ = ctx.fleet


def _model_stage_naming(run: RunDir, model: str) -> RunDir:
    with run.stage(RunLayout.MODEL_STAGE) as st:
        run.write_model(RunLayout.BASE_MODEL, model)
        st.outputs.append(RunLayout.BASE_MODEL)
    return run


def test_a_run_on_an_object_store_naming_a_base_model_on_the_drivers_disk_redoes_the_model_stage(tmp_path):
    on_disk = tmp_path / "models" / "base"
    on_disk.mkdir(parents=True)
    # A local run copied to an object store: its base model is a directory on the driver's disk.
    moved = _model_stage_naming(RunDir("memory://plan-test/moved"), str(on_disk))
    assert base_model_on_driver_disk(moved) == str(on_disk)
    gone = _model_stage_naming(RunDir("memory://plan-test/gone"), str(tmp_path / "not-here"))
    assert base_model_on_driver_disk(gone) == str(tmp_path / "not-here")  # absolute: a path, still not shared
    # Nothing to redo: the base model inside the run, a hub id, a model on the store, a local run, no stage yet.
    inside = RunDir("memory://plan-test/inside")
    inside.write_text("model/base/config.json", "{}")
    assert base_model_on_driver_disk(_model_stage_naming(inside, inside.url("model", "base"))) is None
    assert inside.read_text(RunLayout.BASE_MODEL).strip() == "./model/base"
    for name, model in (("hub", "HuggingFaceTB/SmolLM2-135M-Instruct"), ("store", "s3://bucket/models/m")):
        assert (
            base_model_on_driver_disk(_model_stage_naming(RunDir(f"memory://plan-test/{name}"), model))
            is None
        )
    assert (
        base_model_on_driver_disk(_model_stage_naming(RunDir(str(tmp_path / "local")), str(on_disk))) is None
    )
    assert base_model_on_driver_disk(RunDir("memory://plan-test/fresh")) is None
