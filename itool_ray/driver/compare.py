"""``itool compare``: which parts of the method pay, as one command.

The base run (the config as given: the full method and its SFT controls) runs to completion, or is reused
when it has. Each variant is that config plus overrides; it shares the base run's completed prefix
(data, base evaluation, warm-up, the first mining: never recomputed; the first search too when the
variant leaves ``mcts`` and ``replicas`` alone, so a variant of the pair rule or the training reads the
same trees as the full method) and runs the rest in its own run directory ``<run>/compare/<variant>/``.
The table compares every variant's final policy with the full method and with the warm-up on the same
evaluation samples, with paired 95% bootstrap intervals.

Variants may change only what comes after the shared prefix (``mcts``, ``pairs``, ``train``,
``distributed``, ``replicas``, ``run.iterations``); anything else would make the prefix not theirs.
"""

from __future__ import annotations

import logging
from typing import Any

import yaml

from itool_ray.config import Config, ConfigError, build_config, deep_merge
from itool_ray.driver.report import format_interval
from itool_ray.driver.rundir import WARMUP, RunDir, RunLayout
from itool_ray.eval.stats import compare_records

log = logging.getLogger("itool")

DEFAULT_VARIANTS: dict[str, dict[str, Any]] = {
    # No search: preference pairs from the deficient answers against their ground truths only.
    "no_mcts": {"mcts": {"search": False}},
    # The same search, pairs of whole answers instead of pairs at the tree's forks.
    "response_level": {"pairs": {"level": "response"}},
}
ALLOWED_SECTIONS = ("mcts", "pairs", "train", "distributed", "replicas")
SHARED_PREFIX_END = RunLayout.step(1, "mine")  # the first mining, included
SEARCH_SECTIONS = ("mcts", "replicas")  # a variant that changes neither shares the first search as well


class CompareError(ValueError):
    """A variant that cannot share the base run's prefix, or a bad variants file."""


def load_variants(path: str | None) -> dict[str, dict[str, Any]]:
    """The variants of a YAML file (``name: {section: {key: value}}``), or the default ablations."""
    if path is None:
        return dict(DEFAULT_VARIANTS)
    try:
        with open(path) as f:
            data = yaml.safe_load(f)
    except OSError as e:
        raise CompareError(f"variants file {path}: {e.strerror or e}") from None
    except yaml.YAMLError as e:
        raise CompareError(f"variants file {path}: not valid YAML: {e}") from None
    if not isinstance(data, dict) or not data or not all(isinstance(v, dict) for v in data.values()):
        raise CompareError(f"{path}: expected a mapping of variant name -> {{section: {{key: value}}}}")
    return data


def variant_config(base: Config, name: str, overrides: dict[str, Any]) -> Config:
    """The base config with ``overrides``, run in ``<base run>/compare/<name>`` without controls."""
    if not name.replace("_", "").replace("-", "").isalnum():
        raise CompareError(f"variant name {name!r}: use letters, digits, '_' and '-' only")
    for section, values in overrides.items():
        keys = list(values) if isinstance(values, dict) else []
        if section == "run" and keys == ["iterations"]:
            continue
        if section not in ALLOWED_SECTIONS:
            raise CompareError(
                f"variant {name!r} changes {section}, which the shared prefix (data, warm-up, first mining, "
                f"evaluation) was built with: variants may change {', '.join(ALLOWED_SECTIONS)} and "
                "run.iterations"
            )
    data = deep_merge(base.model_dump(mode="json"), overrides)
    data["run"] = {
        **data["run"],
        "root": f"{base.run.dir}/{RunLayout.COMPARE_DIR}",
        "name": name,
        "controls": [],
    }
    try:
        return build_config(data)
    except ConfigError as e:
        raise CompareError(f"variant {name!r}: " + " ".join(x.strip() for x in str(e).splitlines())) from None


def run_compare(cfg: Config, variants: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """Run (or reuse) the base run and every variant; return and write the comparison."""
    from itool_ray.driver.pipeline import run_pipeline
    from itool_ray.driver.stages import plan

    configs = {name: variant_config(cfg, name, over) for name, over in variants.items()}  # all checked first
    base = run_pipeline(cfg)
    names = [e.name for e in plan(cfg)]
    for name, vcfg in configs.items():
        vrun = RunDir(vcfg.run.dir)
        for stage in shared_prefix(names, variants[name]):
            if not vrun.stage_done(stage):
                vrun.adopt(stage, base)
        log.info("compare: variant %s (%s)", name, variants[name] or "no overrides")
        run_pipeline(vcfg)
    out = comparison(base, cfg, {name: RunDir(c.run.dir) for name, c in configs.items()}, configs)
    base.write_json(RunLayout.COMPARE_RESULTS, out)
    base.write_text(RunLayout.COMPARE_TABLE, comparison_table(out) + "\n")
    return out


def shared_prefix(names: list[str], overrides: dict[str, Any]) -> list[str]:
    """The base run's stages a variant adopts: through the first mining, or through the first search when
    the overrides leave the search's settings alone."""
    end = SHARED_PREFIX_END if set(overrides) & set(SEARCH_SECTIONS) else RunLayout.step(1, "search")
    return names[: names.index(end) + 1] if end in names else names


def _final(cfg: Config) -> str:
    """The policy a run ends with: its last iteration, or the warm-up."""
    return RunLayout.iteration(cfg.run.iterations) if cfg.run.iterations else WARMUP


def _records(run: Any, policy: str) -> dict[str, list[dict[str, Any]]]:
    rel = RunLayout.eval_file(policy)
    if not run.exists(rel):
        return {}
    data = run.read_json(rel)
    return {bench: data[bench].get("records", []) for bench in ("heldout", "bfcl") if bench in data}


def comparison(
    base: Any, cfg: Config, variant_runs: dict[str, Any], configs: dict[str, Config]
) -> dict[str, Any]:
    """``{"rows": {row: {bench: {"accuracy": …, "vs full": interval, "vs warmup": interval}}}}``."""
    rows: dict[str, dict[str, list[dict[str, Any]]]] = {
        WARMUP: _records(base, WARMUP),
        "full": _records(base, _final(cfg)),
    }
    for name, run in variant_runs.items():
        rows[name] = _records(run, _final(configs[name]))
    for control in RunLayout.of(cfg).controls:
        rows[control] = _records(base, control)
    out: dict[str, Any] = {"rows": {}, "variants": {n: c.run.dir for n, c in configs.items()}}
    for row, benches in rows.items():
        entry: dict[str, Any] = {}
        for bench, recs in benches.items():
            if not recs:
                continue
            cell: dict[str, Any] = {"accuracy": sum(bool(r["exact"]) for r in recs) / len(recs)}
            for ref in ("full", "warmup"):
                ref_recs = rows[ref].get(bench)
                if ref != row and ref_recs:
                    iv = compare_records(ref_recs, recs, seed=cfg.run.seed)["overall"]
                    cell[f"vs {ref}"] = iv.to_dict()
            entry[bench] = cell
        out["rows"][row] = entry
    return out


def _iv(cell: dict[str, Any], key: str) -> str:
    return format_interval(cell[key]) if key in cell else "–"


def comparison_table(out: dict[str, Any]) -> str:
    """One markdown table a benchmark: accuracy, and the paired difference to the full method and to the
    warm-up (points, 95% interval, ``*``: excludes zero)."""
    parts = []
    benches = sorted({b for entry in out["rows"].values() for b in entry}, key=lambda b: b != "heldout")
    for bench in benches:
        title = "held-out" if bench == "heldout" else "BFCL"
        lines = [
            f"### {title}",
            "",
            "| variant | accuracy | vs full method | vs warm-up |",
            "|---|---:|---:|---:|",
        ]
        for row, entry in out["rows"].items():
            cell = entry.get(bench)
            if cell is not None:
                lines.append(
                    f"| {row} | {100 * cell['accuracy']:.1f}% | {_iv(cell, 'vs full')} | {_iv(cell, 'vs warmup')} |"
                )
        parts.append("\n".join(lines))
    return "\n\n".join(parts)
