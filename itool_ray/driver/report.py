"""The run's report: ``results.json`` (the learning table), ``report.md`` and ``plots/*.png``.

Every file it reads or writes is named by the run's ``RunLayout``.
"""

from __future__ import annotations

import io
import json
from typing import Any

from itool_ray import storage
from itool_ray.config import Config
from itool_ray.driver.rundir import BASE, WARMUP, RunDir, RunLayout
from itool_ray.eval.stats import compare_records


def collect_results(run: RunDir, cfg: Config) -> dict[str, Any]:
    """``{stage: {category: accuracy, "overall": accuracy}, "wall_s": seconds}`` from the eval files.

    With ``eval.bfcl_categories`` the BFCL accuracies are under ``"bfcl"``: ``{stage: {category: ...}}``.
    ``"intervals"`` holds the paired comparisons (:func:`comparisons`) of each benchmark:
    ``{"heldout"|"bfcl": {"B vs A": {category: {diff, lo, hi, n, detectable}}}}``, ``B − A`` in accuracy
    (fractions) with a 95% paired bootstrap interval over the same samples.
    """
    results: dict[str, Any] = {}
    bfcl: dict[str, Any] = {}
    records: dict[str, dict[str, list[dict[str, Any]]]] = {"heldout": {}, "bfcl": {}}
    layout = RunLayout.of(cfg)
    for stage in layout.policies():
        rel = layout.eval_file(stage)
        if run.exists(rel):
            data = run.read_json(rel)
            results[stage] = data["heldout"]["accuracy"]
            records["heldout"][stage] = data["heldout"].get("records", [])
            if "bfcl" in data:
                bfcl[stage] = data["bfcl"]["accuracy"]
                records["bfcl"][stage] = data["bfcl"].get("records", [])
    if bfcl:
        results["bfcl"] = bfcl
    intervals = {bench: paired_intervals(recs, seed=cfg.run.seed) for bench, recs in records.items() if recs}
    if any(intervals.values()):
        results["intervals"] = {k: v for k, v in intervals.items() if v}
    stages = run.manifest()["stages"]
    results["wall_s"] = round(sum(float(s.get("seconds", 0)) for s in stages.values()), 1)
    return results


def comparisons(stages: list[str]) -> list[tuple[str, str]]:
    """The comparisons a run reports, as ``(a, b)`` for ``b − a``: warm-up vs base, every iteration vs the
    warm-up, and the final iteration vs each control and vs base."""
    iters = [s for s in stages if s.startswith("iter_")]
    controls = [s for s in stages if s.startswith("control")]
    pairs = [(BASE, WARMUP)] if {BASE, WARMUP} <= set(stages) else []
    pairs += [(WARMUP, it) for it in iters if WARMUP in stages]
    if iters:
        pairs += [(c, iters[-1]) for c in controls]
        pairs += [(BASE, iters[-1])] if BASE in stages else []
    return pairs


def paired_intervals(
    records: dict[str, list[dict[str, Any]]], *, seed: int = 0
) -> dict[str, dict[str, dict[str, Any]]]:
    """``{"B vs A": {category: interval dict}}`` for :func:`comparisons` of the stages with records."""
    out: dict[str, dict[str, dict[str, Any]]] = {}
    for a, b in comparisons([s for s, r in records.items() if r]):
        ivs = compare_records(records[a], records[b], seed=seed)
        out[f"{b} vs {a}"] = {cat: iv.to_dict() for cat, iv in ivs.items()}
    return out


def stage_rows(results: dict[str, Any]) -> dict[str, dict[str, float]]:
    """The held-out rows of ``collect_results``' output: stage -> accuracies."""
    return {k: v for k, v in results.items() if isinstance(v, dict) and k not in ("bfcl", "intervals")}


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


def format_interval(iv: dict[str, Any]) -> str:
    """``+5.0 [+1.0, +9.0]*`` in points; ``*``: the interval excludes zero."""
    mark = "*" if iv["lo"] > 0 or iv["hi"] < 0 else ""
    return f"{100 * iv['diff']:+.1f} [{100 * iv['lo']:+.1f}, {100 * iv['hi']:+.1f}]{mark}"


def intervals_table(intervals: dict[str, dict[str, dict[str, Any]]]) -> str:
    """A markdown table of paired differences in points with their 95% intervals (``*``: excludes zero),
    and the difference each comparison could detect."""
    cats = sorted({c for v in intervals.values() for c in v if c != "overall"})
    head = "| comparison | overall Δ [95% CI] | " + " | ".join(cats) + " | n | detectable |"
    sep = "|---|---:|" + "---:|" * len(cats) + "---:|---:|"
    lines = [head, sep]
    for name, ivs in intervals.items():
        cells = " | ".join(format_interval(ivs[c]) if c in ivs else "–" for c in cats)
        ov = ivs["overall"]
        lines.append(
            f"| {name} | **{format_interval(ov)}** | {cells} | {ov['n']} | ±{100 * ov['detectable']:.1f} |"
        )
    return "\n".join(lines)


def _plot(run: RunDir, name: str, draw) -> str:
    assert name in RunLayout.PLOTS, name
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4))
    draw(ax)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    plt.close(fig)
    rel = RunLayout.plot(name)
    run.write_bytes(rel, buf.getvalue())
    return rel


def _train_steps(run: RunDir, policy_name: str) -> list[dict[str, Any]]:
    rel = RunLayout.policy_file(policy_name)
    policy = run.read_model(rel) if run.exists(rel) else None
    if not policy:
        return []
    try:
        return json.loads(storage.read_bytes(storage.join(policy, "metrics.json"))).get("steps", [])
    except OSError:
        return []


def _interval_section(results: dict[str, Any]) -> list[str]:
    titles = {"heldout": "held-out", "bfcl": "BFCL"}
    out: list[str] = []
    for bench, ivs in results.get("intervals", {}).items():
        out += [f"## Paired differences, {titles.get(bench, bench)} (points, 95% bootstrap interval)", ""]
        out += [intervals_table(ivs), ""]
    if out:
        out += [
            "Each row compares two stages on the same samples; `*` marks an interval that excludes zero; "
            "`detectable` is the difference that comparison finds with 80% power at the 5% level.",
            "",
        ]
    return out


def _cost_section(stages: dict[str, Any], cfg: Config) -> list[str]:
    table = cost_table(stages, cfg)
    return ["## Training cost", "", table, ""] if table else []


def cost_table(stages: dict[str, Any], cfg: Config) -> str:
    """What each training stage cost (a markdown table; empty before any training): trained tokens, optimizer
    steps, samples or pairs, learning rate, and for the iterations what the method adds: the reference
    model's forward tokens (DPO), the tokens the policy generated while mining and searching, and the
    ground-truth tokens mining scored."""
    layout = RunLayout.of(cfg)
    rows: list[tuple[str, str, float, int | None]] = [
        (WARMUP, layout.train_stage(WARMUP), cfg.warmup.lr, None)
    ]
    rows += [
        (layout.iteration(k), layout.step(k, "train"), cfg.train.lr, k)
        for k in range(1, layout.iterations + 1)
    ]
    rows += [(c, layout.train_stage(c), cfg.warmup.lr, None) for c in layout.controls]
    lines = [
        "| stage | trained tokens | optimizer steps | samples / pairs | lr | reference forward tokens "
        "| mining generated tokens | search generated tokens | mining scored tokens |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for label, name, lr, k in rows:
        summ = stages.get(name, {}).get("summary")
        if summ is None:
            continue
        n = summ.get("pairs", summ.get("samples", "–"))
        mine, search = (
            stages.get(layout.step(k, step), {}).get("summary", {}) if k else {}
            for step in ("mine", "search")
        )
        ref = summ.get("reference_tokens", "–") if k else "–"
        lines.append(
            f"| {label} | {summ.get('trained_tokens', '–')} | {summ.get('global_steps', '–')} | {n} "
            f"| {lr:g} | {ref} | {mine.get('generated_tokens', '–')} | {search.get('generated_tokens', '–')} "
            f"| {mine.get('scored_tokens', '–')} |"
        )
    return "\n".join(lines) if len(lines) > 2 else ""


def write_report(run: RunDir, cfg: Config) -> dict[str, Any]:
    layout = RunLayout.of(cfg)
    results = collect_results(run, cfg)
    run.write_json(layout.RESULTS, results)
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

        def draw_benchmarks(ax):
            names = list(rows)
            ax.plot(names, [rows[n]["overall"] for n in names], marker="o", label="held-out (synthetic)")
            bfcl = results.get("bfcl", {})
            if bfcl:
                ax.plot(
                    names,
                    [bfcl[n]["overall"] if n in bfcl else float("nan") for n in names],
                    marker="s",
                    label="BFCL (its checker)",
                )
            ax.set_ylabel("overall accuracy")
            ax.set_ylim(0, 1)
            ax.legend(fontsize=8)
            ax.set_title("both benchmarks across stages")

        plots.append(_plot(run, "benchmarks", draw_benchmarks))
    iters = range(1, cfg.run.iterations + 1)
    dpo = {k: _train_steps(run, layout.iteration(k)) for k in iters}
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
        *_interval_section(results),
        "Controls start from the warm-up and train with plain SFT for as many tokens as the preference "
        "iterations trained, with the same optimiser settings as each other: `control` on random train "
        "samples, `control_targeted` on the ground truths of exactly the samples the iterations trained on.",
        "",
        *_cost_section(stages, cfg),
        "## Iterations",
        "",
        "| iteration | mined | deficient | trees | failed trees | pairs | trained tokens | search tok/s |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for k in iters:
        mine, search, pairs, train = (
            stages.get(layout.step(k, step), {}).get("summary", {})
            for step in ("mine", "search", "pairs", "train")
        )
        wall = search.get("wall_s") or 0
        tps = f"{search.get('generated_tokens', 0) / wall:.0f}" if wall else "–"
        lines.append(
            f"| {k} | {mine.get('n', '–')} | {mine.get('deficient', '–')} | {search.get('trees_total', '–')} "
            f"| {search.get('trees_failed', '–')} | {train.get('pairs', pairs.get('kept', '–'))} "
            f"| {train.get('trained_tokens', '–')} | {tps} |"
        )
    lines += ["", "## Stages", "", "| stage | status | seconds |", "|---|---|---:|"]
    lines += [
        f"| {n} | {s.get('status')} | {s.get('seconds', 0):.1f} |"
        for n, s in stages.items()
        if n != layout.REPORT_STAGE
    ]
    lines += [""] + [f"![{p}]({p})" for p in plots] + [""]
    run.write_text(layout.REPORT, "\n".join(lines))
    return results
