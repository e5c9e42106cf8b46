"""The run's report: ``results.json`` (the learning table), ``report.md`` and ``plots/*.png``."""

from __future__ import annotations

import io
import json
from typing import Any

from itool_ray import storage
from itool_ray.config import Config
from itool_ray.rundir import RunDir


def _eval_files(cfg: Config) -> list[tuple[str, str]]:
    files = [("base", "evals/base.json"), ("warmup", "warmup/eval.json")]
    files += [(f"iter_{k}", f"iter_{k}/eval.json") for k in range(1, cfg.run.iterations + 1)]
    files.append(("control", "control/eval.json"))
    return files


def collect_results(run: RunDir, cfg: Config) -> dict[str, Any]:
    """``{stage: {category: accuracy, "overall": accuracy}, "wall_s": seconds}`` from the eval files.

    With ``eval.bfcl_categories`` the BFCL accuracies are under ``"bfcl"``: ``{stage: {category: ...}}``.
    """
    results: dict[str, Any] = {}
    bfcl: dict[str, Any] = {}
    for stage, rel in _eval_files(cfg):
        if run.exists(rel):
            data = run.read_json(rel)
            results[stage] = data["heldout"]["accuracy"]
            if "bfcl" in data:
                bfcl[stage] = data["bfcl"]["accuracy"]
    if bfcl:
        results["bfcl"] = bfcl
    stages = run.manifest()["stages"]
    results["wall_s"] = round(sum(float(s.get("seconds", 0)) for s in stages.values()), 1)
    return results


def stage_rows(results: dict[str, Any]) -> dict[str, dict[str, float]]:
    """The held-out rows of ``collect_results``' output: stage -> accuracies."""
    return {k: v for k, v in results.items() if isinstance(v, dict) and k != "bfcl"}


def results_table(results: dict[str, Any]) -> str:
    """A markdown table: one row per stage, one column per category (BFCL-exact accuracy)."""
    rows = stage_rows(results)
    cats = sorted({c for v in rows.values() for c in v if c != "overall"})
    head = "| stage | overall | " + " | ".join(cats) + " |"
    sep = "|---|---:|" + "---:|" * len(cats)
    lines = [head, sep]
    for stage, acc in rows.items():
        cells = " | ".join(f"{acc[c]:.1%}" if c in acc else "–" for c in cats)
        lines.append(f"| {stage} | **{acc['overall']:.1%}** | {cells} |")
    return "\n".join(lines)


def _plot(run: RunDir, name: str, draw) -> str:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4))
    draw(ax)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    plt.close(fig)
    rel = f"plots/{name}.png"
    run.write_bytes(rel, buf.getvalue())
    return rel


def _train_steps(run: RunDir, stage_dir: str) -> list[dict[str, Any]]:
    policy = (
        run.read_text(f"{stage_dir}/policy.txt").strip() if run.exists(f"{stage_dir}/policy.txt") else None
    )
    if not policy:
        return []
    try:
        return json.loads(storage.read_bytes(storage.join(policy, "metrics.json"))).get("steps", [])
    except OSError:
        return []


def write_report(run: RunDir, cfg: Config) -> dict[str, Any]:
    results = collect_results(run, cfg)
    run.write_json("results.json", results)
    stages = run.manifest()["stages"]
    rows = stage_rows(results)
    plots = []
    if rows:
        cats = sorted({c for v in rows.values() for c in v})

        def draw_acc(ax):
            names = list(rows)
            for c in cats:
                ax.plot(
                    names,
                    [rows[n].get(c, float("nan")) for n in names],
                    marker="o",
                    label=c,
                    linewidth=2.5 if c == "overall" else 1.2,
                )
            ax.set_ylabel("held-out accuracy (BFCL-exact)")
            ax.set_ylim(0, 1)
            ax.legend(fontsize=8)
            ax.set_title("accuracy per category per stage")

        plots.append(_plot(run, "accuracy", draw_acc))
    iters = range(1, cfg.run.iterations + 1)
    dpo = {k: _train_steps(run, f"iter_{k}") for k in iters}
    if any(dpo.values()):

        def draw_dpo(ax):
            for k, steps in dpo.items():
                xs = range(len(steps))
                ax.plot(xs, [s.get("loss", float("nan")) for s in steps], label=f"iter {k} loss")
                if any("rewards/margins" in s for s in steps):
                    ax.plot(
                        xs,
                        [s.get("rewards/margins", float("nan")) for s in steps],
                        "--",
                        label=f"iter {k} reward margin",
                    )
            ax.set_xlabel("step")
            ax.legend(fontsize=8)
            ax.set_title("preference training: loss and reward margins")

        plots.append(_plot(run, "preference_training", draw_dpo))

    lines = [
        f"# itool-ray run `{cfg.run.name}`",
        "",
        f"Model: `{cfg.model.name_or_path}`; iterations: "
        f"{cfg.run.iterations}; loss: {cfg.train.loss}; wall time: {results['wall_s'] / 60:.1f} min.",
        "",
        "## Held-out accuracy (BFCL-exact)",
        "",
        results_table(results) if rows else "(no evaluations yet)",
        "",
        *(
            ["## BFCL (its data, judged by its own AST checker)", "", results_table(results["bfcl"]), ""]
            if results.get("bfcl")
            else []
        ),
        "`control` = the warm-up model trained further with plain SFT on the same samples for as many training "
        "tokens as the preference iterations used.",
        "",
        "## Iterations",
        "",
        "| iteration | mined | deficient | trees | failed trees | pairs | trained tokens | search tok/s |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for k in iters:
        mine = stages.get(f"iter_{k}/mine", {}).get("summary", {})
        search = stages.get(f"iter_{k}/search", {}).get("summary", {})
        pairs = stages.get(f"iter_{k}/pairs", {}).get("summary", {})
        train = stages.get(f"iter_{k}/train", {}).get("summary", {})
        wall = search.get("wall_s") or 0
        tps = f"{search.get('generated_tokens', 0) / wall:.0f}" if wall else "–"
        lines.append(
            f"| {k} | {mine.get('n', '–')} | {mine.get('deficient', '–')} | {search.get('trees_total', '–')} "
            f"| {search.get('trees_failed', '–')} | {train.get('pairs', pairs.get('kept', '–'))} "
            f"| {train.get('trained_tokens', '–')} | {tps} |"
        )
    lines += ["", "## Stages", "", "| stage | status | seconds |", "|---|---|---:|"]
    lines += [
        f"| {n} | {s.get('status')} | {s.get('seconds', 0):.1f} |" for n, s in stages.items() if n != "report"
    ]
    lines += [""] + [f"![{p}]({p})" for p in plots] + [""]
    run.write_text("report.md", "\n".join(lines))
    return results
