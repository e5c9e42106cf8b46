"""The single-controller loop (DESIGN §1): stages over a run directory, resumable.

    data → model → eval base → warm-up SFT → eval
         → K × (mine → search → pairs → train → eval)
         → equal-compute SFT control → eval → report

Each stage reads and writes the run directory and is recorded in ``manifest.json``; re-running the same
command after a crash skips every stage whose outputs are complete (``--restart-from STAGE`` redoes a
stage and all after it).

Each plan entry declares what it needs (DESIGN §4, placement is data): the policy fleet (evaluation,
mining, search), the training workers, or nothing. The runner owns the fleet: one fleet serves every
generation stage of a policy version; after training the new weights are reloaded into the running
replicas in place, unless the training workers need the replicas' CPUs/GPUs, in which case the fleet is
closed before training and started again from the new checkpoint. Fleet starts, reloads and closes are
logged and recorded in ``manifest.json`` (``fleet``).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from itool_ray import logs, storage
from itool_ray.config import Config
from itool_ray.rundir import RunDir, RunDirError

log = logging.getLogger("itool")

# Fault injection for the crash tests (tests/integration/test_pipeline.py): the driver SIGKILLs itself right
# after this stage is recorded as done, as a lost head node or an OOM kill would stop it at a stage boundary.
KILL_AFTER_STAGE_ENV = "ITOOL_KILL_AFTER_STAGE"


class StageFailed(RuntimeError):
    """A stage stopped for a reason the user can act on (the message says which stage and why)."""


class PlanError(ValueError):
    """A stage name the run's plan does not have (``--restart-from``, ``itool iterate``)."""


def _expected_failures() -> tuple[type[BaseException], ...]:
    """Errors that mean "this input/config cannot work", reported without a traceback. Anything else (a
    bare ValueError or KeyError included) is a bug and keeps its traceback."""
    from itool_ray.config import ConfigError
    from itool_ray.data.io import DatasetError
    from itool_ray.data.schema import SampleError
    from itool_ray.mcts.search import SearchFailedError
    from itool_ray.mining_stage import MiningError
    from itool_ray.models import ModelError
    from itool_ray.prompts import PromptError
    from itool_ray.storage import StorageError
    from itool_ray.train.common import TrainError
    from itool_ray.train.deepspeed import DeepSpeedConfigError

    return (
        TrainError,
        MiningError,
        SearchFailedError,
        ModelError,
        DatasetError,
        SampleError,
        PromptError,
        ConfigError,
        DeepSpeedConfigError,
        StorageError,
    )


def _bar(total: int, desc: str):
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, unit="it", dynamic_ncols=True, leave=False)


# ---------------------------------------------------------------------------------------------------------
@dataclass
class Context:
    """What the stages share: the config, the run directory, and the policy pool while it is up."""

    cfg: Config
    run: RunDir
    _pool: Any = None
    _pool_model: str | None = None
    _tokenizer: Any = None
    _samples: dict[str, list] = field(default_factory=dict)
    stage: str = ""  # the stage running now (for the fleet's records)

    # -- data ---------------------------------------------------------------------------------------------
    def samples(self, split: str) -> list:
        if split not in self._samples:
            from itool_ray.data.loaders import load_samples

            samples, report = load_samples(self.run.url("data", f"{split}.jsonl"), strict=True)
            self._samples[split] = samples
        return self._samples[split]

    def base_model(self) -> str:
        return self.run.read_text("model/base_path.txt").strip()

    def policy_dir(self, stage_dir: str) -> str:
        """The checkpoint a training stage left (its ``policy.txt``), as a local directory."""
        return self.run.read_text(f"{stage_dir}/policy.txt").strip()

    def tokenizer(self) -> Any:
        if self._tokenizer is None:
            from itool_ray.models import load_tokenizer

            self._tokenizer = load_tokenizer(self.base_model(), data_dir=self.cfg.run.data_dir)
        return self._tokenizer

    # -- the policy fleet ---------------------------------------------------------------------------------
    def pool(self, model_dir: str) -> Any:
        """The fleet serving ``model_dir``: started on first use, reloaded in place when the model changes."""
        from actors.pool import ReplicaPool

        t = time.time()
        if self._pool is None:
            self._pool = ReplicaPool.from_config(self.cfg, model_dir)
            event = "start"
        elif self._pool_model != model_dir:
            self._pool.load_weights(model_dir, version=model_dir)
            event = "reload"
        else:
            return self._pool
        self._pool_model = model_dir
        self._fleet_event(event, model_dir, time.time() - t)
        return self._pool

    def release_pool(self, reason: str = "") -> None:
        """Close the fleet: every replica's engine shut down, its CPUs/GPUs free."""
        if self._pool is not None:
            t = time.time()
            model = self._pool_model
            self._pool.close()
            self._pool, self._pool_model = None, None
            self._fleet_event("close", model or "", time.time() - t, reason=reason)

    def _fleet_event(self, event: str, model: str, seconds: float, reason: str = "") -> None:
        n = self.cfg.replicas.num_replicas
        verb = {"start": "started", "reload": "reloaded in place", "close": "closed"}[event]
        log.info(
            "fleet: %d replica(s) %s in %.1f s (%s)%s",
            n,
            verb,
            seconds,
            model,
            f": {reason}" if reason else "",
        )
        self.run.record_fleet(
            {"event": event, "stage": self.stage, "model": model, "replicas": n, "seconds": round(seconds, 2)}
            | ({"reason": reason} if reason else {})
        )

    def held_after_stage(self, settle_s: float = 10.0) -> dict[str, float]:
        """Cluster resources still held once a stage is over: the fleet's, while the runner keeps it, and
        nothing else. Waits up to ``settle_s`` for Ray to see released actors go."""
        import ray

        allowed = fleet_resources(self.cfg) if self._pool is not None else {}
        deadline = time.time() + settle_s
        while True:
            total, free = ray.cluster_resources(), ray.available_resources()
            held = {
                k: round(v - free.get(k, 0.0), 3)
                for k, v in total.items()
                if not k.startswith("node:")
                and k not in ("memory", "object_store_memory")
                and v - free.get(k, 0.0) > 1e-6
            }
            if all(v <= allowed.get(k, 0) for k, v in held.items()) or time.time() > deadline:
                return held
            time.sleep(0.2)

    def prepare(self, needs: str | None) -> None:
        """Before a stage: training that needs the fleet's resources gets them."""
        if needs == TRAIN and self._pool is not None and not fits_beside_fleet(self.cfg):
            self.release_pool("training needs its CPUs/GPUs")


Stage = Callable[[Context], None]
FLEET, TRAIN = "fleet", "train"  # what a plan entry needs (None: nothing but the driver)


class PlanEntry(NamedTuple):
    name: str
    run: Stage
    needs: str | None


def replica_demand(cfg: Config) -> dict[str, float]:
    """What one replica of the fleet asks Ray for."""
    r = cfg.replicas
    gpus = max(r.num_gpus, r.tensor_parallel_size) if r.num_gpus > 0 else 0
    return {k: v for k, v in {"CPU": r.num_cpus, "GPU": gpus, **r.resources}.items() if v}


def worker_demand(cfg: Config) -> dict[str, float]:
    """What one training worker asks Ray for (nothing when training runs in the driver: num_workers 0)."""
    d = cfg.distributed
    if d.num_workers == 0:
        return {}
    per = {"CPU": d.cpus_per_worker, "GPU": d.gpus_per_worker if d.use_gpu else 0, **d.resources_per_worker}
    return {k: v for k, v in per.items() if v}


def fleet_resources(cfg: Config) -> dict[str, float]:
    return {k: v * cfg.replicas.num_replicas for k, v in replica_demand(cfg).items()}


def training_resources(cfg: Config) -> dict[str, float]:
    return {k: v * cfg.distributed.num_workers for k, v in worker_demand(cfg).items()}


def fits_beside_fleet(cfg: Config, total: dict[str, float] | None = None) -> bool:
    """True when the cluster (``ray.cluster_resources()`` now) holds the fleet and the training workers at
    once, so the fleet can stay up through training and take the new weights in place."""
    if total is None:
        import ray

        total = ray.cluster_resources()
    fleet, train = fleet_resources(cfg), training_resources(cfg)
    return all(fleet.get(k, 0) + train.get(k, 0) <= total.get(k, 0) for k in set(fleet) | set(train))


# ---------------------------------------------------------------------------------------------------------
def load_split(cfg: Config, split: str) -> tuple[list, str]:
    """The samples of one split (train | heldout) as configured, and a one-line load summary."""
    from itool_ray.data.loaders import load_samples
    from itool_ray.data.synth import generate

    spec = cfg.data.train if split == "train" else cfg.data.heldout
    n = cfg.data.n_train if split == "train" else cfg.data.n_heldout
    if spec == "synthetic":
        samples = generate(n, seed=cfg.run.seed, split=split, categories=cfg.data.categories)
        return samples, f"{len(samples)} synthetic samples ({split} tools and phrasings)"
    samples, report = load_samples(spec, strict=cfg.data.strict, limit=n)
    return samples, report.summary()


def stage_data(ctx: Context) -> None:
    """Load (or synthesise) the train and held-out splits into ``data/``."""
    from itool_ray.data.io import DatasetError, write_samples

    with ctx.run.stage("data") as st:
        for split in ("train", "heldout"):
            samples, summary = load_split(ctx.cfg, split)
            if not samples:
                raise DatasetError(f"data.{split}: no usable samples ({summary})")
            write_samples(samples, ctx.run.url("data", f"{split}.jsonl"))
            st.outputs.append(f"data/{split}.jsonl")
            st.summary[split] = summary
            log.info("data: %s: %s", split, summary)


def stage_model(ctx: Context) -> None:
    """Resolve the base model into a Hugging Face directory (imports the embedded GGUF once).

    With a remote run root the directory is uploaded into ``model/base/``: nodes that share no disk with
    the driver fetch it from there (a hub id stays a hub id: each node resolves it, with its own token).
    """
    from itool_ray import storage
    from itool_ray.models import resolve_model

    cfg = ctx.cfg
    with ctx.run.stage("model") as st:
        path = resolve_model(
            cfg.model.name_or_path,
            data_dir=cfg.run.data_dir,
            tiny_hidden_size=cfg.model.tiny_hidden_size,
            tiny_layers=cfg.model.tiny_layers,
            tiny_vocab_size=cfg.model.tiny_vocab_size,
        )
        if not ctx.run.local and storage.is_local(path) and os.path.isdir(path):
            storage.upload_dir(path, ctx.run.url("model", "base"))
            path = ctx.run.url("model", "base")
            st.outputs.append("model/base")
        ctx.run.write_text("model/base_path.txt", path + "\n")
        st.outputs.append("model/base_path.txt")
        st.summary["base_model"] = path


def _evaluate(ctx: Context, name: str, model_dir: str, out_rel: str) -> None:
    from itool_ray.eval.heldout import evaluate_samples

    cfg = ctx.cfg
    with ctx.run.stage(name) as st:
        pool = ctx.pool(model_dir)
        heldout = ctx.samples("heldout")
        bar = _bar(len(heldout), f"{name}: held-out")
        try:
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
        finally:
            bar.close()
        out: dict[str, Any] = {"model": model_dir, "heldout": res.to_dict(with_records=True)}
        if cfg.eval.bfcl_categories:
            from itool_ray.eval.bfcl import evaluate_bfcl

            bres = evaluate_bfcl(
                cfg.eval.bfcl_categories,
                pool,
                ctx.tokenizer(),
                max_tokens=cfg.eval.max_tokens,
                batch_size=cfg.eval.batch_size,
                limit=cfg.eval.bfcl_limit,
                max_model_len=cfg.engine.max_model_len,
            )
            out["bfcl"] = bres.to_dict(with_records=True)
            st.summary["bfcl"] = bres.accuracy
        ctx.run.write_json(out_rel, out)
        st.outputs.append(out_rel)
        st.summary["accuracy"] = res.accuracy
        if res.too_long:
            st.summary["too_long"] = res.too_long
            log.warning("%s: %d prompt(s) longer than the context counted as wrong", name, res.too_long)
        log.info("%s: held-out accuracy %s", name, _fmt_acc(res.accuracy))


def _fmt_acc(acc: dict[str, float]) -> str:
    return ", ".join(f"{k} {v:.1%}" for k, v in acc.items())


def stage_eval_base(ctx: Context) -> None:
    _evaluate(ctx, "eval_base", ctx.base_model(), "evals/base.json")


def stage_difficulty(ctx: Context) -> None:
    """The paper's difficulty (``warmup.bucket_by: perplexity``): each train sample's ground-truth
    perplexity under the base model, scored through the fleet, into ``data/difficulty.json``."""
    from itool_ray.mining import perplexity
    from itool_ray.prompts import end_of_turn, render_answer, render_prompt

    with ctx.run.stage("difficulty") as st:
        samples, tok = ctx.samples("train"), ctx.tokenizer()
        eot, style = end_of_turn(tok), ctx.cfg.data.prompt_style
        pairs = [
            (render_prompt(tok, s.tools, s.messages, style=style), render_answer(s.answer) + eot)
            for s in samples
        ]
        logprobs = ctx.pool(ctx.base_model()).score_many(pairs)
        scores = {s.id: perplexity(lp) for s, lp in zip(samples, logprobs, strict=True)}
        ctx.run.write_json("data/difficulty.json", scores)
        st.outputs.append("data/difficulty.json")
        st.summary["median_perplexity"] = sorted(scores.values())[len(scores) // 2] if scores else None


def stage_warmup(ctx: Context) -> None:
    from itool_ray.train.sft import run_warmup

    with ctx.run.stage("warmup") as st:
        scores = (
            ctx.run.read_json("data/difficulty.json") if ctx.cfg.warmup.bucket_by == "perplexity" else None
        )
        res = run_warmup(
            ctx.samples("train"),
            model_dir=ctx.base_model(),
            out_dir=ctx.run.url("warmup", "ckpt"),
            cfg=ctx.cfg,
            scores=scores,
            checkpoint_every_steps=ctx.cfg.distributed.checkpoint_every_steps,
        )
        ctx.run.write_text("warmup/policy.txt", res.model_dir + "\n")
        st.outputs += ["warmup/policy.txt", "warmup/ckpt"]
        st.summary.update({"samples": len(ctx.samples("train")), **_train_summary(res)})


def _train_summary(res: Any) -> dict[str, Any]:
    keep = ("trained_tokens", "loss_tokens", "tokens_per_s", "runtime_s", "train_loss", "global_steps")
    return {k: res.summary[k] for k in keep if k in res.summary}


def stage_eval_warmup(ctx: Context) -> None:
    _evaluate(ctx, "eval_warmup", ctx.policy_dir("warmup"), "warmup/eval.json")


def _prev_policy(ctx: Context, k: int) -> str:
    return ctx.policy_dir("warmup" if k == 1 else f"iter_{k - 1}")


def stage_mine(ctx: Context, k: int) -> None:
    from itool_ray.mining_stage import run_mining

    name = f"iter_{k}/mine"
    with ctx.run.stage(name) as st:
        n = len(ctx.samples("train"))
        bar = _bar(n, f"{name}: samples")
        try:
            summary = run_mining(
                ctx.run.url("data", "train.jsonl"),
                fleet=ctx.pool(_prev_policy(ctx, k)),
                model_dir=_prev_policy(ctx, k),
                out_path=ctx.run.url(f"iter_{k}", "deficient.parquet"),
                cfg=ctx.cfg,
                on_batch=lambda done, total: bar.update(done - bar.n),
            )
        finally:
            bar.close()
        ctx.run.write_json(f"iter_{k}/mining_summary.json", summary)
        st.outputs += [f"iter_{k}/deficient.parquet", f"iter_{k}/mining_summary.json"]
        st.summary.update(
            {key: summary[key] for key in ("n", "deficient", "greedy_accuracy") if key in summary}
        )


def _mined(ctx: Context, k: int) -> list[dict[str, Any]]:
    from itool_ray.mining_stage import read_mined

    return read_mined(ctx.run.url(f"iter_{k}", "deficient.parquet"))


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

    name = f"iter_{k}/search"
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
            pool = ctx.pool(_prev_policy(ctx, k))
            # Trees advance together: the bar counts simulations, so its rate and ETA mean something
            # from the first wave on; the postfix counts finished trees.
            bar = _bar(len(tasks) * ctx.cfg.mcts.simulations, f"{name}: simulations")
            trees_finished = [0]

            def tree_done(tree: Any) -> None:
                trees_finished[0] += 1
                bar.set_postfix_str(f"trees {trees_finished[0]}/{len(tasks)}", refresh=False)

            def work(done: int, total: int) -> None:
                bar.update(done - bar.n)

            try:
                result = run_search(tasks, pool.generate, ctx.cfg.mcts, progress=tree_done, on_work=work)
            finally:
                bar.close()
            lines = [json.dumps(t.to_dict(), ensure_ascii=False) for t in result.trees]
            stats = result.stats.to_dict()
        ctx.run.write_text(f"iter_{k}/trees.jsonl", "".join(line + "\n" for line in lines))
        ctx.run.write_json(f"iter_{k}/search_stats.json", stats)
        st.outputs += [f"iter_{k}/trees.jsonl", f"iter_{k}/search_stats.json"]
        st.summary.update(
            {
                key: stats.get(key)
                for key in ("trees_total", "trees_done", "trees_failed", "generated_tokens", "wall_s")
            }
        )
        log.info("%s: %s", name, stats)


def _policy_answer(row: dict[str, Any]) -> str | None:
    """The policy's deficient answer for a ground-truth pair: the greedy one if wrong, else the worst sample."""
    if not row["greedy_exact"]:
        return row["greedy_text"]
    wrong = [
        (s, t)
        for s, t, e in zip(row["sampled_scores"], row["sampled_texts"], row["sampled_exact"], strict=True)
        if not e
    ]
    return min(wrong)[1] if wrong else None


def stage_pairs(ctx: Context, k: int) -> None:
    from itool_ray.data.schema import Sample
    from itool_ray.mcts import Tree, build_pairs

    name = f"iter_{k}/pairs"
    with ctx.run.stage(name) as st:
        mined = _mined(ctx, k)
        rows = [r for r in mined if r["deficient"]]
        samples = {r["id"]: Sample.model_validate(json.loads(r["sample"])) for r in rows}
        text = ctx.run.read_text(f"iter_{k}/trees.jsonl")
        trees = [Tree.from_dict(json.loads(line)) for line in text.splitlines() if line.strip()]
        # Ground-truth pairs for the samples this iteration searched (all deficient ones without
        # mcts.max_trees), or would have searched (mcts.search: false).
        searched = {t.sample_id for t in trees} | {s.id for s in _search_samples(ctx, mined)}
        deficient = [
            (samples[r["id"]], a)
            for r in rows
            if r["id"] in searched and (a := _policy_answer(r)) is not None
        ]
        pairs, stats = build_pairs(trees, samples, ctx.cfg.pairs, iteration=k, deficient=deficient)
        ctx.run.write_text(
            f"iter_{k}/pairs.jsonl", "".join(json.dumps(p, ensure_ascii=False) + "\n" for p in pairs)
        )
        ctx.run.write_json(f"iter_{k}/pair_stats.json", stats.to_dict())
        st.outputs += [f"iter_{k}/pairs.jsonl", f"iter_{k}/pair_stats.json"]
        st.summary.update(stats.to_dict())
        log.info("%s: %d pairs (%s)", name, len(pairs), stats.to_dict())


def stage_train(ctx: Context, k: int) -> None:
    from itool_ray.train.preference import run_preference

    name = f"iter_{k}/train"
    with ctx.run.stage(name) as st:
        text = ctx.run.read_text(f"iter_{k}/pairs.jsonl")
        pairs = [json.loads(line) for line in text.splitlines() if line.strip()]
        if not pairs:
            # Nothing to learn from: the policy carries over unchanged, and the control gets no tokens for it.
            ctx.run.write_text(f"iter_{k}/policy.txt", _prev_policy(ctx, k) + "\n")
            st.outputs.append(f"iter_{k}/policy.txt")
            st.summary.update({"pairs": 0, "trained_tokens": 0, "skipped": "no pairs"})
            log.warning("%s: no pairs, the policy carries over", name)
            return
        res = run_preference(
            pairs,
            model_dir=_prev_policy(ctx, k),
            out_dir=ctx.run.url(f"iter_{k}", "ckpt"),
            cfg=ctx.cfg,
            checkpoint_every_steps=ctx.cfg.distributed.checkpoint_every_steps,
        )
        ctx.run.write_text(f"iter_{k}/policy.txt", res.model_dir + "\n")
        st.outputs += [f"iter_{k}/policy.txt", f"iter_{k}/ckpt"]
        st.summary.update({"pairs": len(pairs), **_train_summary(res)})


def stage_eval_iter(ctx: Context, k: int) -> None:
    _evaluate(ctx, f"iter_{k}/eval", ctx.policy_dir(f"iter_{k}"), f"iter_{k}/eval.json")


def _iteration_tokens(ctx: Context) -> int:
    stages = ctx.run.manifest()["stages"]
    return sum(
        int(stages[f"iter_{k}/train"]["summary"].get("trained_tokens", 0))
        for k in range(1, ctx.cfg.run.iterations + 1)
    )


def stage_control(ctx: Context) -> None:
    """The random SFT control: the warm-up model trained further with plain SFT on random train samples,
    for as many training tokens as the preference iterations used."""
    _sft_control(ctx, "control", ctx.samples("train"))


def stage_control_targeted(ctx: Context) -> None:
    """The targeted SFT control: plain SFT on the ground truths of exactly the samples the iterations'
    pairs came from, for as many training tokens as the iterations used."""
    ids = _trained_sample_ids(ctx)
    _sft_control(ctx, "control_targeted", [s for s in ctx.samples("train") if s.id in ids])


def _trained_sample_ids(ctx: Context) -> set[str]:
    ids: set[str] = set()
    for k in range(1, ctx.cfg.run.iterations + 1):
        rel = f"iter_{k}/pairs.jsonl"
        if ctx.run.exists(rel):
            for line in ctx.run.read_text(rel).splitlines():
                if line.strip():
                    ids.add(str(json.loads(line)["meta"]["sample_id"]))
    return ids


def _sft_control(ctx: Context, name: str, samples: list[Any]) -> None:
    from itool_ray.train.sft import run_sft

    with ctx.run.stage(name) as st:
        budget = _iteration_tokens(ctx)
        if budget == 0 or not samples:
            ctx.run.write_text(f"{name}/policy.txt", ctx.policy_dir("warmup") + "\n")
            st.outputs.append(f"{name}/policy.txt")
            st.summary.update({"token_budget": budget, "trained_tokens": 0, "samples": len(samples)})
            return
        res = run_sft(
            samples,
            model_dir=ctx.policy_dir("warmup"),
            out_dir=ctx.run.url(name, "ckpt"),
            cfg=ctx.cfg,
            token_budget=budget,
            checkpoint_every_steps=ctx.cfg.distributed.checkpoint_every_steps,
        )
        ctx.run.write_text(f"{name}/policy.txt", res.model_dir + "\n")
        st.outputs += [f"{name}/policy.txt", f"{name}/ckpt"]
        st.summary.update({"token_budget": budget, "samples": len(samples), **_train_summary(res)})


def stage_eval_control(ctx: Context) -> None:
    _evaluate(ctx, "eval_control", ctx.policy_dir("control"), "control/eval.json")


def stage_eval_control_targeted(ctx: Context) -> None:
    _evaluate(ctx, "eval_control_targeted", ctx.policy_dir("control_targeted"), "control_targeted/eval.json")


def stage_report(ctx: Context) -> None:
    from itool_ray.eval.report import stage_rows, write_report

    with ctx.run.stage("report") as st:
        results = write_report(ctx.run, ctx.cfg)
        st.outputs += ["results.json", "report.md"]
        st.summary["overall"] = {k: v["overall"] for k, v in stage_rows(results).items()}
        if results.get("bfcl"):
            st.summary["bfcl_overall"] = {k: v["overall"] for k, v in results["bfcl"].items()}


# ---------------------------------------------------------------------------------------------------------
def stages(cfg: Config) -> list[PlanEntry]:
    """The plan: one entry a stage, with what it needs (the runner provides it)."""
    plan = [
        PlanEntry("data", stage_data, None),
        PlanEntry("model", stage_model, None),
        PlanEntry("eval_base", stage_eval_base, FLEET),
        *([PlanEntry("difficulty", stage_difficulty, FLEET)] if cfg.warmup.bucket_by == "perplexity" else []),
        PlanEntry("warmup", stage_warmup, TRAIN),
        PlanEntry("eval_warmup", stage_eval_warmup, FLEET),
    ]
    for k in range(1, cfg.run.iterations + 1):
        plan += [
            PlanEntry(f"iter_{k}/mine", lambda ctx, k=k: stage_mine(ctx, k), FLEET),
            PlanEntry(f"iter_{k}/search", lambda ctx, k=k: stage_search(ctx, k), FLEET),
            PlanEntry(f"iter_{k}/pairs", lambda ctx, k=k: stage_pairs(ctx, k), None),
            PlanEntry(f"iter_{k}/train", lambda ctx, k=k: stage_train(ctx, k), TRAIN),
            PlanEntry(f"iter_{k}/eval", lambda ctx, k=k: stage_eval_iter(ctx, k), FLEET),
        ]
    if "random" in cfg.run.controls:
        plan += [
            PlanEntry("control", stage_control, TRAIN),
            PlanEntry("eval_control", stage_eval_control, FLEET),
        ]
    if "targeted" in cfg.run.controls:
        plan += [
            PlanEntry("control_targeted", stage_control_targeted, TRAIN),
            PlanEntry("eval_control_targeted", stage_eval_control_targeted, FLEET),
        ]
    plan.append(PlanEntry("report", stage_report, None))
    return plan


def init_ray() -> None:
    """Join the cluster a job was submitted to (RAY_ADDRESS), or start a local one."""
    import ray

    logs.quiet_library_loggers()
    if not ray.is_initialized():
        ray.init(
            address=os.environ.get("RAY_ADDRESS")
        )  # worker output (training progress) reaches the driver
    _route_worker_output()


def _route_worker_output() -> None:
    """Worker output reaches the driver's console through Ray's printer: put the log filter in front of it
    (library output goes to the log file only). Ray's and Ray Data's loggers use the driver's handlers, and
    Ray Data draws no progress bars of its own (the stages draw theirs)."""
    import ray.data
    from ray._private.ray_logging import global_worker_stdstream_dispatcher as dispatcher

    logs.quiet_library_loggers()
    if not logs.verbose():
        ray.data.DataContext.get_current().enable_progress_bars = False
    handlers = dict(dispatcher.handlers)
    if "itool_print_logs" in handlers or "ray_print_logs" not in handlers:
        return
    dispatcher.remove_handler("ray_print_logs")
    dispatcher.add_handler("itool_print_logs", logs.route_worker_lines(handlers["ray_print_logs"]))


def run_pipeline(
    cfg: Config, *, restart_from: str | None = None, until: str | None = None, redo: bool = False
) -> RunDir:
    """Run the stages in order, skipping completed ones; stop after ``until`` (``redo``: redo that one)."""
    plan = stages(cfg)
    names = [entry.name for entry in plan]
    if restart_from is not None and restart_from not in names:
        raise PlanError(f"--restart-from {restart_from!r}: unknown stage (stages: {', '.join(names)})")
    if until is not None and until not in names:
        raise PlanError(
            f"stage {until!r} is not in this run's plan: run.iterations is {cfg.run.iterations} "
            f"(stages: {', '.join(names)})"
        )
    run = RunDir(cfg.run.dir)
    log_file = _open_log_file(run)
    try:
        return _run_plan(cfg, run, plan, names, restart_from=restart_from, until=until, redo=redo)
    finally:
        _close_log_file(run, log_file)


LOG_FILE = "logs/itool.log"


def _open_log_file(run: RunDir) -> str:
    """Every log record and every worker line of this run goes to ``<run>/logs/itool.log`` (appended across
    runs). For an object-store run root the file is written on this machine and uploaded when the run ends."""
    if run.local:
        path = run.path(LOG_FILE)
    else:
        digest = hashlib.sha256(run.uri.encode()).hexdigest()[:16]
        path = str(storage.cache_dir() / "logs" / f"{digest}.log")
    logs.log_to_file(path)
    where = path if run.local else f"{run.url(LOG_FILE)} (uploaded when the run ends)"
    log.info("log file: %s (library output%s)", where, "" if logs.verbose() else "; -v shows it here too")
    return path


def _close_log_file(run: RunDir, path: str) -> None:
    logs.close_log_file()
    if not run.local:
        try:
            with open(path, "rb") as f:
                run.write_bytes(LOG_FILE, f.read())
        except (OSError, RunDirError) as e:
            log.warning("could not upload the log file %s to %s: %s", path, run.url(LOG_FILE), e)


def _run_plan(
    cfg: Config,
    run: RunDir,
    plan: list[PlanEntry],
    names: list[str],
    *,
    restart_from: str | None,
    until: str | None,
    redo: bool,
) -> RunDir:
    if run.exists("config.yaml"):
        old = run.read_text("config.yaml")
        if old != cfg.to_yaml():
            log.warning(
                "the config differs from the one this run directory was started with; completed stages "
                "are kept (use --restart-from STAGE to redo them)"
            )
    run.write_text("config.yaml", cfg.to_yaml())
    if restart_from is not None:
        run.forget_from(names[names.index(restart_from) :])
    if until is not None:
        plan = plan[: names.index(until) + 1]
        if redo:
            # Every later stage consumed what this one is about to replace: it is redone too, on the next run.
            later = [n for n in names[names.index(until) + 1 :] if run.stage_done(n)]
            if later:
                log.warning(
                    "redoing %s: %d later stage(s) built on it will be redone too: %s",
                    until,
                    len(later),
                    ", ".join(later),
                )
            run.forget_from(names[names.index(until) :])
    ctx = Context(cfg, run)
    init_ray()
    t0 = time.time()
    try:
        for i, (name, fn, needs) in enumerate(plan, 1):
            if run.stage_done(name):
                log.info("[%d/%d] %s: done before, skipped", i, len(plan), name)
                continue
            t = time.time()
            log.info("[%d/%d] %s ...", i, len(plan), name)
            ctx.stage = name
            ctx.prepare(needs)
            try:
                fn(ctx)
            except _expected_failures() as e:
                raise StageFailed(
                    f"stage {name} failed: {e}\n(fix it, then re-run the same command: completed "
                    "stages are kept)"
                ) from e
            run.note_stage(name, resources_held_after=ctx.held_after_stage())
            log.info("[%d/%d] %s: finished in %.1f s", i, len(plan), name, time.time() - t)
            if os.environ.get(KILL_AFTER_STAGE_ENV) == name:
                os.kill(os.getpid(), signal.SIGKILL)
    finally:
        ctx.stage = "end"
        ctx.release_pool("end of run")
    log.info("run %s finished in %.1f s", run.uri, time.time() - t0)
    return run
