"""The run's report: accuracies per stage and paired intervals, in results.json and report.md."""

from __future__ import annotations

import json

import numpy as np
import pytest

from itool_ray.config import load_config
from itool_ray.driver.report import collect_results, comparisons, write_report
from itool_ray.driver.rundir import RunDir
from itool_ray.eval.stats import StatsError

CATS = ["simple", "parallel"]


def _eval(correct: np.ndarray) -> dict:
    records = [
        {"id": f"s{i}", "category": CATS[i % 2], "exact": bool(c), "score": float(c)}
        for i, c in enumerate(correct)
    ]
    acc = {cat: float(np.mean([r["exact"] for r in records if r["category"] == cat])) for cat in CATS}
    acc["overall"] = float(np.mean(correct))
    return {"model": "m", "heldout": {"accuracy": acc, "records": records}}


@pytest.fixture()
def run(tmp_path):
    rng = np.random.default_rng(0)
    base = (rng.random(200) < 0.2).astype(int)
    warm = np.where(rng.random(200) < 0.3, 1, base)  # clearly better than base
    it1 = np.where(rng.random(200) < 0.02, 1 - warm, warm)  # about the same as the warm-up
    control = warm.copy()
    r = RunDir(str(tmp_path / "run"))
    for rel, arr in [
        ("evals/base.json", base),
        ("warmup/eval.json", warm),
        ("iter_1/eval.json", it1),
        ("control/eval.json", control),
    ]:
        r.write_json(rel, _eval(arr))
    r.write_json("manifest.json", {"stages": {"data": {"status": "done", "seconds": 3.0}}})
    return r


def test_comparisons_cover_warmup_every_iteration_and_the_final_one_against_each_control():
    stages = ["base", "warmup", "iter_1", "iter_2", "control", "control_targeted"]
    assert comparisons(stages) == [
        ("base", "warmup"),
        ("warmup", "iter_1"),
        ("warmup", "iter_2"),
        ("control", "iter_2"),
        ("control_targeted", "iter_2"),
        ("base", "iter_2"),
    ]
    assert comparisons(["base"]) == []


def test_results_json_and_report_carry_paired_intervals(run, tmp_path):
    cfg = load_config("tiny", ["--run.root", str(tmp_path), "--run.name", "run"])
    results = write_report(run, cfg)
    ivs = results["intervals"]["heldout"]
    assert list(ivs) == ["warmup vs base", "iter_1 vs warmup", "iter_1 vs control", "iter_1 vs base"]
    warm = ivs["warmup vs base"]["overall"]
    assert warm["n"] == 200 and warm["lo"] > 0, warm
    assert warm["diff"] == pytest.approx(results["warmup"]["overall"] - results["base"]["overall"], abs=1e-4)
    same = ivs["iter_1 vs warmup"]["overall"]
    assert same["lo"] < 0 < same["hi"] or same["diff"] == 0, same
    assert set(ivs["iter_1 vs control"]) == {"overall", *CATS}
    assert json.loads(run.read_text("results.json"))["intervals"] == results["intervals"]
    md = run.read_text("report.md")
    assert "Paired differences, held-out" in md
    assert "| warmup vs base | **+" in md and "]*" in md  # a significant row is marked
    assert run.exists("plots/benchmarks.png")


def test_evaluations_of_different_samples_are_not_compared(run, tmp_path):
    cfg = load_config("tiny", ["--run.root", str(tmp_path), "--run.name", "run"])
    short = _eval(np.ones(100, dtype=int))
    run.write_json("iter_1/eval.json", short)
    with pytest.raises(StatsError, match="different samples"):
        collect_results(run, cfg)


class _RecordingRun(RunDir):
    """A run directory that notes every path read or written through it."""

    def __init__(self, uri: str):
        super().__init__(uri)
        self.touched: set[str] = set()

    def exists(self, *parts: str) -> bool:
        self.touched.add("/".join(parts))
        return super().exists(*parts)

    def read_text(self, rel: str) -> str:
        self.touched.add(rel)
        return super().read_text(rel)

    def write_bytes(self, rel: str, data: bytes) -> str:
        self.touched.add(rel)
        return super().write_bytes(rel, data)


def test_every_path_the_report_reads_or_writes_comes_from_the_run_layout(run, tmp_path):
    from itool_ray.driver.rundir import RunLayout

    cfg = load_config("tiny", ["--run.root", str(tmp_path), "--run.name", "run", "--run.iterations", "2"])
    cfg.run.controls = ["random", "targeted"]
    recording = _RecordingRun(run.uri)
    # A DPO checkpoint with metrics, so the report also reads a policy file and draws the training plot.
    ckpt = tmp_path / "ckpt"
    ckpt.mkdir()
    (ckpt / "metrics.json").write_text(json.dumps({"steps": [{"loss": 0.7, "rewards/margins": 0.1}]}))
    run.write_text("iter_1/policy.txt", f"{ckpt}\n")
    write_report(recording, cfg)
    layout = RunLayout.of(cfg)
    assert recording.touched <= set(layout.files()), sorted(recording.touched - set(layout.files()))
    # It asked for every evaluation the layout names, the controls and the second iteration included.
    assert {layout.eval_file(p) for p in layout.policies()} <= recording.touched
    assert {
        "iter_1/policy.txt",
        "plots/preference_training.png",
        "results.json",
        "report.md",
    } <= recording.touched


def test_the_cost_table_shows_what_the_method_adds_to_training(run, tmp_path):
    """Issue 14 §1: for the iterations the reference forwards and the tokens mining and search generated,
    next to every training stage's trained tokens, steps, samples or pairs and learning rate."""
    cfg = load_config("tiny", ["--run.root", str(tmp_path), "--run.name", "run"])
    done = {"status": "done", "seconds": 1.0}
    stages = {
        "warmup": {**done, "summary": {"trained_tokens": 900, "global_steps": 9, "samples": 30}},
        "iter_1/mine": {**done, "summary": {"n": 30, "generated_tokens": 4100, "scored_tokens": 310}},
        "iter_1/search": {**done, "summary": {"generated_tokens": 5200}},
        "iter_1/train": {
            **done,
            "summary": {"pairs": 7, "trained_tokens": 600, "reference_tokens": 600, "global_steps": 2},
        },
        "control": {**done, "summary": {"trained_tokens": 610, "global_steps": 3, "samples": 30}},
    }
    run.write_json("manifest.json", {"stages": stages})
    write_report(run, cfg)
    md = run.read_text("report.md")
    table = md[md.index("## Training cost") :].split("\n\n")[1].splitlines()
    head = [c.strip() for c in table[0].strip("|").split("|")]
    rows = {r.split("|")[1].strip(): [c.strip() for c in r.strip("|").split("|")] for r in table[2:]}
    assert set(rows) == {"warmup", "iter_1", "control"}
    it = dict(zip(head, rows["iter_1"], strict=True))
    assert it["trained tokens"] == "600" and it["samples / pairs"] == "7"
    assert it["reference forward tokens"] == "600"
    assert it["mining generated tokens"] == "4100" and it["search generated tokens"] == "5200"
    assert it["mining scored tokens"] == "310"
    control = dict(zip(head, rows["control"], strict=True))
    assert control["trained tokens"] == "610" and control["mining generated tokens"] == "–"
