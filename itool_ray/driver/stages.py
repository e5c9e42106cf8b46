"""The plan and its stages (DESIGN §1): what each stage does over the run directory.

    data → model → eval base → [difficulty] → warm-up SFT → eval
         → K × (mine → search → pairs → train → eval)
         → SFT controls (random, targeted) → eval → report

``plan(cfg)`` lists one entry a stage: its name (``RunLayout``'s), its function, and what it needs from
the runner (the fleet serving a policy, the training workers, or nothing). Adding a stage is one entry
here plus its function; its paths come from ``ctx.layout``.
"""

from __future__ import annotations

import json
import logging
import os
from functools import partial
from typing import Any

from itool_ray.config import Config
from itool_ray.driver.context import NOTHING, TRAIN, Context, PlanEntry, fleet_of
from itool_ray.driver.rundir import BASE, WARMUP, RunDir, RunLayout
from itool_ray.logs import progress_bar

log = logging.getLogger("itool")


# -- data and model ------------------------------------------------------------------------------------------
def load_split(cfg: Config, split: str) -> tuple[list, str]:
    """The samples of one split (train | heldout) as configured, and a one-line load summary."""
    from itool_ray.data.loaders import load_samples
    from itool_ray.data.synth import generate

    spec = cfg.data.train if split == "train" else cfg.data.heldout
    n = cfg.data.n_train if split == "train" else cfg.data.n_heldout
    if spec == "synthetic":
        samples = generate(
            n, seed=cfg.run.seed, split=split, categories=cfg.data.categories, tools=cfg.data.tools
        )
        return samples, f"{len(samples)} synthetic samples ({split} tools and phrasings)"
    samples, report = load_samples(spec, strict=cfg.data.strict, limit=n)
    return samples, report.summary()


def stage_data(ctx: Context) -> None:
    """Load (or synthesise) the train and held-out splits into ``data/``."""
    from itool_ray.data.io import DatasetError, write_samples

    with ctx.run.stage(ctx.layout.DATA_STAGE) as st:
        for split in ("train", "heldout"):
            samples, summary = load_split(ctx.cfg, split)
            if not samples:
                raise DatasetError(f"data.{split}: no usable samples ({summary})")
            rel = ctx.layout.split(split)
            write_samples(samples, ctx.run.url(rel))
            st.outputs.append(rel)
            st.summary[split] = summary
            log.info("data: %s: %s", split, summary)


def stage_model(ctx: Context) -> None:
    """Resolve the base model into a Hugging Face directory (imports the embedded GGUF once).

    With a remote run root the directory is uploaded into ``model/base/``: nodes that share no disk with
    the driver fetch it from there (a hub id stays a hub id: each node resolves it, with its own token).
    """
    from itool_ray import storage
    from itool_ray.models import resolve_model

    cfg, layout = ctx.cfg, ctx.layout
    with ctx.run.stage(layout.MODEL_STAGE) as st:
        path = resolve_model(
            cfg.model.name_or_path,
            data_dir=cfg.run.data_dir,
            tiny_hidden_size=cfg.model.tiny_hidden_size,
            tiny_layers=cfg.model.tiny_layers,
            tiny_vocab_size=cfg.model.tiny_vocab_size,
        )
        if not ctx.run.local and storage.is_local(path) and os.path.isdir(path):
            storage.upload_dir(path, ctx.run.url(layout.BASE_UPLOAD))
            path = ctx.run.url(layout.BASE_UPLOAD)
            st.outputs.append(layout.BASE_UPLOAD)
        ctx.run.write_model(layout.BASE_MODEL, path)
        st.outputs.append(layout.BASE_MODEL)
        st.summary["base_model"] = path


def base_model_on_driver_disk(run: RunDir) -> str | None:
    """The base model's path when a run on an object store names one on this machine's disk: a local run
    (which does not upload its base model) copied or moved to the store. Nodes that share no disk with the
    driver cannot read it, so the model stage is redone and uploads it. None otherwise."""
    from itool_ray import storage

    if run.local or not run.stage_done(RunLayout.MODEL_STAGE):
        return None
    base = run.read_model(RunLayout.BASE_MODEL)
    if not storage.is_local(base):
        return None
    path = storage.local_path(base)
    # A hub id ("org/name") is neither absolute nor a directory here: each node resolves it itself.
    return base if os.path.isabs(path) or os.path.isdir(path) else None


# -- evaluation ----------------------------------------------------------------------------------------------
def stage_evaluate(ctx: Context, policy: str) -> None:
    """Score ``policy`` on the held-out split (and BFCL, when configured) through the fleet."""
    from itool_ray.eval.heldout import evaluate_samples

    cfg, name = ctx.cfg, ctx.layout.eval_stage(policy)
    with ctx.run.stage(name) as st:
        pool = ctx.fleet
        heldout = ctx.samples("heldout")
        with progress_bar(len(heldout), f"{name}: held-out") as bar:
            res = evaluate_samples(
                heldout,
                pool,
                ctx.tokenizer(),
                style=cfg.data.prompt_style,
                max_tokens=cfg.eval.max_tokens,
                batch_size=cfg.eval.batch_size,
                progress=bar.update,
                max_model_len=cfg.engine.max_model_len,
            )
        out: dict[str, Any] = {"model": ctx.policy_model(policy), "heldout": res.to_dict(with_records=True)}
        if cfg.eval.bfcl_categories:
            from itool_ray.eval.bfcl import evaluate_bfcl

            with progress_bar(None, f"{name}: BFCL") as bar:
                bres = evaluate_bfcl(
                    cfg.eval.bfcl_categories,
                    pool,
                    ctx.tokenizer(),
                    max_tokens=cfg.eval.max_tokens,
                    batch_size=cfg.eval.batch_size,
                    limit=cfg.eval.bfcl_limit,
                    progress=bar.update,
                    max_model_len=cfg.engine.max_model_len,
                )
            out["bfcl"] = bres.to_dict(with_records=True)
            st.summary["bfcl"] = bres.accuracy
        rel = ctx.layout.eval_file(policy)
        ctx.run.write_json(rel, out)
        st.outputs.append(rel)
        st.summary["accuracy"] = res.accuracy
        if res.too_long:
            st.summary["too_long"] = res.too_long
            log.warning("%s: %d prompt(s) longer than the context counted as wrong", name, res.too_long)
        log.info("%s: held-out accuracy %s", name, ", ".join(f"{k} {v:.1%}" for k, v in res.accuracy.items()))


# -- warm-up -------------------------------------------------------------------------------------------------
def stage_difficulty(ctx: Context) -> None:
    """The paper's difficulty (``warmup.bucket_by: perplexity``): each train sample's ground-truth
    perplexity under the base model, scored through the fleet, into ``data/difficulty.json``."""
    from itool_ray.mining import perplexity
    from itool_ray.prompts import end_of_turn, render_answer, render_prompt

    with ctx.run.stage(ctx.layout.DIFFICULTY_STAGE) as st:
        samples, tok = ctx.samples("train"), ctx.tokenizer()
        eot, style = end_of_turn(tok), ctx.cfg.data.prompt_style
        pairs = [
            (render_prompt(tok, s.tools, s.messages, style=style), render_answer(s.answer) + eot)
            for s in samples
        ]
        logprobs = ctx.fleet.score_batch(pairs)
        scores = {s.id: perplexity(lp) for s, lp in zip(samples, logprobs, strict=True)}
        ctx.run.write_json(ctx.layout.DIFFICULTY, scores)
        st.outputs.append(ctx.layout.DIFFICULTY)
        st.summary["median_perplexity"] = sorted(scores.values())[len(scores) // 2] if scores else None


def _train_summary(res: Any) -> dict[str, Any]:
    keep = (
        "trained_tokens",
        "loss_tokens",
        "reference_tokens",
        "tokens_per_s",
        "runtime_s",
        "train_loss",
        "global_steps",
    )
    return {k: res.summary[k] for k in keep if k in res.summary}


def _record_policy(ctx: Context, st: Any, policy: str, model_dir: str, *, checkpoint: bool = True) -> None:
    """A training stage's outputs: the file naming its model (and its checkpoint directory)."""
    ctx.run.write_model(ctx.layout.policy_file(policy), model_dir)
    st.outputs.append(ctx.layout.policy_file(policy))
    if checkpoint:
        st.outputs.append(ctx.layout.checkpoint(policy))


def stage_warmup(ctx: Context) -> None:
    from itool_ray.train.sft import run_warmup

    layout = ctx.layout
    with ctx.run.stage(layout.train_stage(WARMUP)) as st:
        scores = ctx.run.read_json(layout.DIFFICULTY) if layout.difficulty else None
        res = run_warmup(
            ctx.samples("train"),
            model_dir=ctx.base_model(),
            out_dir=ctx.run.url(layout.checkpoint(WARMUP)),
            cfg=ctx.cfg,
            scores=scores,
            checkpoint_every_steps=ctx.cfg.distributed.checkpoint_every_steps,
        )
        _record_policy(ctx, st, WARMUP, res.model_dir)
        st.summary.update({"samples": len(ctx.samples("train")), **_train_summary(res)})


# -- an iteration --------------------------------------------------------------------------------------------
def stage_mine(ctx: Context, k: int) -> None:
    from itool_ray.driver.mining import run_mining

    layout = ctx.layout
    name = layout.step(k, "mine")
    with ctx.run.stage(name) as st:
        with progress_bar(len(ctx.samples("train")), f"{name}: samples") as bar:
            summary = run_mining(
                ctx.run.url(layout.split("train")),
                fleet=ctx.fleet,
                model_dir=ctx.policy_model(layout.previous(k)),
                out_path=ctx.run.url(layout.mined(k)),
                cfg=ctx.cfg,
                on_batch=lambda done, total: bar.update(done - bar.n),
            )
        ctx.run.write_json(layout.mining_summary(k), summary)
        st.outputs += [layout.mined(k), layout.mining_summary(k)]
        st.summary.update(
            {
                key: summary[key]
                for key in ("n", "deficient", "greedy_accuracy", "generated_tokens", "scored_tokens")
                if key in summary
            }
        )


def _mined(ctx: Context, k: int) -> list[dict[str, Any]]:
    from itool_ray.driver.mining import read_mined

    return read_mined(ctx.run.url(ctx.layout.mined(k)))


def _search_samples(ctx: Context, mined: list[dict[str, Any]]) -> list[Any]:
    """The deficient samples an iteration searches (or, with ``mcts.search: false``, would have), from its
    mined rows."""
    from itool_ray.mining import deficient_samples

    return deficient_samples(
        mined,
        limit=ctx.cfg.mcts.max_trees,
        per_category=ctx.cfg.mcts.trees_per_category,
        priority=ctx.cfg.mcts.tree_priority,
    )


def stage_search(ctx: Context, k: int) -> None:
    from itool_ray.mcts import SearchTask, run_search
    from itool_ray.prompts import render_prompt

    layout = ctx.layout
    name = layout.step(k, "search")
    with ctx.run.stage(name) as st:
        samples = _search_samples(ctx, _mined(ctx, k)) if ctx.cfg.mcts.search else []
        tok = ctx.tokenizer()
        tasks = [
            SearchTask(s, render_prompt(tok, s.tools, s.messages, style=ctx.cfg.data.prompt_style))
            for s in samples
        ]
        lines: list[str] = []
        stats: dict[str, Any] = {"trees_total": 0}
        if tasks:
            pool = ctx.fleet
            # Trees advance together: the bar counts simulations, so its rate and ETA mean something
            # from the first wave on; the postfix counts finished trees.
            with progress_bar(len(tasks) * ctx.cfg.mcts.simulations, f"{name}: simulations") as bar:
                trees_finished = [0]

                def tree_done(tree: Any) -> None:
                    trees_finished[0] += 1
                    bar.set_postfix_str(f"trees {trees_finished[0]}/{len(tasks)}", refresh=False)

                def work(done: int, total: int) -> None:
                    bar.update(done - bar.n)

                result = run_search(tasks, pool.generate, ctx.cfg.mcts, progress=tree_done, on_work=work)
            lines = [json.dumps(t.to_dict(), ensure_ascii=False) for t in result.trees]
            stats = result.stats.to_dict()
        ctx.run.write_text(layout.trees(k), "".join(line + "\n" for line in lines))
        ctx.run.write_json(layout.search_stats(k), stats)
        st.outputs += [layout.trees(k), layout.search_stats(k)]
        st.summary.update(
            {
                key: stats.get(key)
                for key in ("trees_total", "trees_done", "trees_failed", "generated_tokens", "wall_s")
            }
        )
        log.info("%s: %s", name, stats)


def _jsonl(ctx: Context, rel: str) -> list[Any]:
    return [json.loads(line) for line in ctx.run.read_text(rel).splitlines() if line.strip()]


def stage_pairs(ctx: Context, k: int) -> None:
    from itool_ray.mcts import Tree, build_pairs
    from itool_ray.mining import deficient_answer, row_sample

    layout = ctx.layout
    name = layout.step(k, "pairs")
    with ctx.run.stage(name) as st:
        mined = _mined(ctx, k)
        rows = [r for r in mined if r["deficient"]]
        samples = {r["id"]: row_sample(r) for r in rows}
        trees = [Tree.from_dict(d) for d in _jsonl(ctx, layout.trees(k))]
        # Ground-truth pairs for the samples this iteration searched (all deficient ones without
        # mcts.max_trees), or would have searched (mcts.search: false).
        searched = {t.sample_id for t in trees} | {s.id for s in _search_samples(ctx, mined)}
        deficient = [
            (samples[r["id"]], a)
            for r in rows
            if r["id"] in searched and (a := deficient_answer(r)) is not None
        ]
        pairs, stats = build_pairs(trees, samples, ctx.cfg.pairs, iteration=k, deficient=deficient)
        ctx.run.write_text(layout.pairs(k), "".join(json.dumps(p, ensure_ascii=False) + "\n" for p in pairs))
        ctx.run.write_json(layout.pair_stats(k), stats.to_dict())
        st.outputs += [layout.pairs(k), layout.pair_stats(k)]
        st.summary.update(stats.to_dict())
        log.info("%s: %d pairs (%s)", name, len(pairs), stats.to_dict())


def stage_train(ctx: Context, k: int) -> None:
    from itool_ray.train.preference import run_preference

    layout = ctx.layout
    policy, previous = layout.iteration(k), ctx.policy_model(layout.previous(k))
    with ctx.run.stage(layout.train_stage(policy)) as st:
        pairs = _jsonl(ctx, layout.pairs(k))
        if not pairs:
            # Nothing to learn from: the policy carries over unchanged, and the control gets no tokens for it.
            _record_policy(ctx, st, policy, previous, checkpoint=False)
            st.summary.update({"pairs": 0, "trained_tokens": 0, "skipped": "no pairs"})
            log.warning("%s: no pairs, the policy carries over", layout.train_stage(policy))
            return
        res = run_preference(
            pairs,
            model_dir=previous,
            out_dir=ctx.run.url(layout.checkpoint(policy)),
            cfg=ctx.cfg,
            checkpoint_every_steps=ctx.cfg.distributed.checkpoint_every_steps,
        )
        _record_policy(ctx, st, policy, res.model_dir)
        st.summary.update({"pairs": len(pairs), **_train_summary(res)})


# -- controls ------------------------------------------------------------------------------------------------
def _iteration_tokens(ctx: Context) -> int:
    layout, stages = ctx.layout, ctx.run.manifest()["stages"]
    return sum(
        int(stages[layout.step(k, "train")]["summary"].get("trained_tokens", 0))
        for k in range(1, layout.iterations + 1)
    )


def _trained_sample_ids(ctx: Context) -> set[str]:
    ids: set[str] = set()
    for k in range(1, ctx.layout.iterations + 1):
        if ctx.run.exists(ctx.layout.pairs(k)):
            ids |= {str(p["meta"]["sample_id"]) for p in _jsonl(ctx, ctx.layout.pairs(k))}
    return ids


def stage_control(ctx: Context, policy: str) -> None:
    """An SFT control from the warm-up, for as many training tokens as the preference iterations used:
    ``control`` on random train samples, ``control_targeted`` on the ground truths of exactly the samples
    the iterations' pairs came from."""
    from itool_ray.train.sft import run_sft

    samples = ctx.samples("train")
    if policy == "control_targeted":
        ids = _trained_sample_ids(ctx)
        samples = [s for s in samples if s.id in ids]
    layout = ctx.layout
    with ctx.run.stage(layout.train_stage(policy)) as st:
        budget = _iteration_tokens(ctx)
        if budget == 0 or not samples:
            _record_policy(ctx, st, policy, ctx.policy_model(WARMUP), checkpoint=False)
            st.summary.update({"token_budget": budget, "trained_tokens": 0, "samples": len(samples)})
            return
        res = run_sft(
            samples,
            model_dir=ctx.policy_model(WARMUP),
            out_dir=ctx.run.url(layout.checkpoint(policy)),
            cfg=ctx.cfg,
            token_budget=budget,
            checkpoint_every_steps=ctx.cfg.distributed.checkpoint_every_steps,
        )
        _record_policy(ctx, st, policy, res.model_dir)
        st.summary.update({"token_budget": budget, "samples": len(samples), **_train_summary(res)})


# -- report --------------------------------------------------------------------------------------------------
def stage_report(ctx: Context) -> None:
    from itool_ray.driver.report import stage_rows, write_report

    with ctx.run.stage(ctx.layout.REPORT_STAGE) as st:
        results = write_report(ctx.run, ctx.cfg)
        st.outputs += [ctx.layout.RESULTS, ctx.layout.REPORT]
        st.summary["overall"] = {k: v["overall"] for k, v in stage_rows(results).items()}
        if results.get("bfcl"):
            st.summary["bfcl_overall"] = {k: v["overall"] for k, v in results["bfcl"].items()}


# ---------------------------------------------------------------------------------------------------------
def plan(cfg: Config) -> list[PlanEntry]:
    """The plan: one entry a stage, with what it needs (the runner provides it)."""
    layout = RunLayout.of(cfg)

    def evaluate(policy: str) -> PlanEntry:
        return PlanEntry(layout.eval_stage(policy), partial(stage_evaluate, policy=policy), fleet_of(policy))

    entries = [PlanEntry(layout.DATA_STAGE, stage_data), PlanEntry(layout.MODEL_STAGE, stage_model)]
    entries.append(evaluate(BASE))
    if layout.difficulty:
        entries.append(PlanEntry(layout.DIFFICULTY_STAGE, stage_difficulty, fleet_of(BASE)))
    entries += [PlanEntry(layout.train_stage(WARMUP), stage_warmup, TRAIN), evaluate(WARMUP)]
    for k in range(1, layout.iterations + 1):
        previous = fleet_of(layout.previous(k))
        entries += [
            PlanEntry(layout.step(k, "mine"), partial(stage_mine, k=k), previous),
            PlanEntry(layout.step(k, "search"), partial(stage_search, k=k), previous),
            PlanEntry(layout.step(k, "pairs"), partial(stage_pairs, k=k), NOTHING),
            PlanEntry(layout.step(k, "train"), partial(stage_train, k=k), TRAIN),
            evaluate(layout.iteration(k)),
        ]
    for control in layout.controls:
        entries += [
            PlanEntry(layout.train_stage(control), partial(stage_control, policy=control), TRAIN),
            evaluate(control),
        ]
    entries.append(PlanEntry(layout.REPORT_STAGE, stage_report))
    return entries
