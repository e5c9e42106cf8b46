"""The batched search loop: many trees advance together, one engine call per wave (DESIGN §4).

    result = run_search([SearchTask(sample, prompt), ...], engine, cfg.mcts)
    result.trees   # one Tree per task, in task order: status "done" or "failed", never dropped
    result.stats   # trees done/failed/retried, engine calls, requests, tokens, wall time

A wave selects up to ``leaves_per_tree`` leaves in every live tree (virtual loss spreads them) and sends
every request of the wave — expansions and depth-cap rollouts of all trees — as ONE ``generate`` call.

- Expansion: one request per leaf with ``n = num_children`` for prompt + the leaf's prefix. Each
  continuation is cut at its first step boundary (``toolcall.first_step``); identical steps merge into
  one child (``count`` records how many samples produced it).
- Prior: the geometric mean of the step's token probabilities, exp(mean logprob), normalised over the
  siblings. Merged duplicates share one text, so their probabilities agree up to tokenisation; the mean
  is used, and the duplicate count does not raise the prior (the sampling frequency already estimates
  the same probability, counting both would double it). No logprobs from the engine: uniform priors.
- Rollout reuse: the sampled continuation that created a child already continues it to the end of the
  answer under the policy, so it is scored as that child's first rollout; a duplicate adds one more.
  Only leaves at the depth cap need a separate rollout request (n = 1), sent in the same wave.
  A continuation that completes no step (cut by the token budget) is a rollout of the leaf itself.
- Terminal nodes (the step ends the answer, or the answer's token budget is spent) are scored directly
  with the AST reward and re-scored, without the engine, when selected again.
- Backup: every rollout reward is added to each node on its path; Q = mean rollout reward in the subtree.

Budgets per tree: ``simulations`` selected leaves, ``max_depth`` steps beyond the root (deeper leaves are
rolled out, not expanded), ``max_tokens`` generated tokens per answer, ``tree_timeout_s`` wall time
(checked between waves). A tree that fails (EngineError, malformed engine reply, timeout) is retried once
from scratch, then recorded as failed; above ``max_failed_fraction`` failed trees the stage raises
``SearchFailedError``.

The engine is either an ``Engine`` (local, routing ignored) or a ``GenerateFn`` taking a routing key per
request: ``"<sample_id>/<attempt>"``, so a replica pool can keep one tree on one replica (prefix-cache
reuse) and send a retry elsewhere. A pool may return an exception in place of a result to fail only the
trees of the replica that broke; an ``EngineError`` raised by the whole call fails every tree in the wave.
Only EngineError counts as a tree failure: any other exception is a bug and propagates.
"""

from __future__ import annotations

import math
import time
from collections import Counter, deque
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field

from itool_ray.config import MCTSConfig
from itool_ray.data.schema import Sample
from itool_ray.engines.base import Completion, Engine, EngineError, GenerationRequest, GenerationResult
from itool_ray.mcts.tree import DONE, FAILED, Node, Tree
from itool_ray.toolcall import first_step

GenerateFn = Callable[[list[GenerationRequest], list[str]], Sequence["GenerationResult | BaseException"]]
ScoreFn = Callable[[str, Sample], float]


@dataclass
class SearchTask:
    sample: Sample
    prompt: str  # the rendered conversation; ends exactly where the answer begins


@dataclass
class SearchStats:
    trees_total: int = 0
    trees_done: int = 0
    trees_failed: int = 0
    trees_retried: int = 0
    waves: int = 0
    engine_calls: int = 0
    requests: int = 0
    completions: int = 0
    generated_tokens: int = 0
    simulations: int = 0
    wall_s: float = 0.0

    def to_dict(self) -> dict[str, float]:
        return asdict(self)


@dataclass
class SearchResult:
    trees: list[Tree]
    stats: SearchStats


class SearchFailedError(RuntimeError):
    """More trees failed than ``mcts.max_failed_fraction`` allows; ``trees`` holds those finished so far."""

    def __init__(self, message: str, trees: list[Tree], stats: SearchStats):
        super().__init__(message)
        self.trees = trees
        self.stats = stats


def as_generate_fn(engine: Engine | GenerateFn) -> GenerateFn:
    """A local Engine as a GenerateFn (routing keys ignored); a GenerateFn is returned as is."""
    generate = getattr(engine, "generate", None)
    if callable(generate):
        return lambda requests, keys: generate(requests)
    if callable(engine):
        return engine
    raise TypeError(
        f"engine must be an Engine or a generate(requests, keys) callable, got {type(engine).__name__}"
    )


def default_score(text: str, sample: Sample) -> float:
    from itool_ray.reward import match

    return match(text, sample).score


def run_search(
    tasks: Sequence[SearchTask],
    engine: Engine | GenerateFn,
    cfg: MCTSConfig,
    *,
    score: ScoreFn | None = None,
    progress: Callable[[Tree], None] | None = None,
    on_work: Callable[[int, int], None] | None = None,
    clock: Callable[[], float] = time.monotonic,
) -> SearchResult:
    """Search one tree per task; ``progress(tree)`` is called once per tree when it is done or failed.

    ``on_work(done, total)`` is called after every wave with the simulations done out of all the search's
    simulations (trees x ``cfg.simulations``): trees advance together, so counting finished trees alone
    gives a progress (and an ETA) that stands still until the first wave of trees ends at once.
    """
    dup = next((sid for sid, n in Counter(t.sample.id for t in tasks).items() if n > 1), None)
    if dup is not None:
        raise ValueError(f"sample id {dup!r} appears more than once in the search tasks; ids must be unique")
    search = _Search(tasks, as_generate_fn(engine), cfg, score or default_score, progress, clock)
    search.on_work = on_work
    return search.run()


@dataclass
class _Live:
    index: int  # position in tasks
    task: SearchTask
    tree: Tree
    started: float
    scores: dict[str, float] = field(default_factory=dict)  # answer text -> reward, per tree
    error: str | None = None

    @property
    def key(self) -> str:
        return f"{self.task.sample.id}/{self.tree.attempts}"


@dataclass
class _Job:
    live: _Live
    leaf: Node
    expand: bool  # False: a rollout of a depth-cap leaf
    request: GenerationRequest


class _Search:
    def __init__(self, tasks, generate: GenerateFn, cfg: MCTSConfig, score: ScoreFn, progress, clock):
        self.tasks, self.generate, self.cfg, self.score_fn = tasks, generate, cfg, score
        self.progress, self.clock = progress, clock
        self.stats = SearchStats(trees_total=len(tasks))
        self.results: list[Tree | None] = [None] * len(tasks)
        self.queue: deque[tuple[int, int]] = deque((i, 1) for i in range(len(tasks)))  # (index, attempt)
        self.on_work: Callable[[int, int], None] | None = None
        self.work_reported = 0

    def run(self) -> SearchResult:
        t0 = self.clock()
        live: list[_Live] = []
        while self.queue or live:
            while self.queue and len(live) < self.cfg.concurrent_trees:
                i, attempt = self.queue.popleft()
                tree = Tree(sample_id=self.tasks[i].sample.id, attempts=attempt)
                if attempt > 1:
                    tree.error = self.results[i].error if self.results[i] else None
                    self.results[i] = None
                live.append(_Live(i, self.tasks[i], tree, started=self.clock()))
            jobs = [job for lv in live for job in self._select(lv)]
            self.stats.waves += 1
            if jobs:
                self._call(jobs)
            still: list[_Live] = []
            for lv in live:
                if lv.error is None and self.clock() - lv.started > self.cfg.tree_timeout_s:
                    lv.error = f"timed out after {self.clock() - lv.started:.1f} s (mcts.tree_timeout_s={self.cfg.tree_timeout_s})"
                if lv.error is not None:
                    self._fail(lv, t0)
                elif lv.tree.simulations >= self.cfg.simulations and not lv.tree.root.pending:
                    self._finish(lv, DONE)
                else:
                    still.append(lv)
            live = still
            self._report_work(live)
        self.stats.wall_s = self.clock() - t0
        return SearchResult(trees=list(self.results), stats=self.stats)

    def _report_work(self, live: list[_Live]) -> None:
        """Simulations done so far: a finished tree counts in full, a live one by its simulations (never
        moving backwards when a failed attempt starts over)."""
        if self.on_work is None:
            return
        full = self.stats.trees_done + self.stats.trees_failed
        done = full * self.cfg.simulations + sum(
            min(lv.tree.simulations, self.cfg.simulations) for lv in live
        )
        self.work_reported = max(self.work_reported, done)
        self.on_work(self.work_reported, len(self.tasks) * self.cfg.simulations)

    # -- one wave ---------------------------------------------------------------------------------
    def _select(self, lv: _Live) -> list[_Job]:
        tree, cfg, jobs = lv.tree, self.cfg, []
        for _ in range(cfg.leaves_per_tree):
            if tree.simulations >= cfg.simulations:
                break
            leaf = tree.select(cfg.c_puct, cfg.virtual_loss)
            if leaf is None:  # every leaf is in flight
                break
            tree.simulations += 1
            self.stats.simulations += 1
            if leaf.terminal:
                tree.backup(leaf, leaf.reward or 0.0)  # its answer is already its best rollout
                tree.release(leaf)
            elif leaf.expanded:  # expanded before but no continuation completed a step: a dead end
                tree.backup(leaf, leaf.value)
                tree.release(leaf)
            else:
                leaf.busy = True
                expand = leaf.depth < cfg.max_depth
                request = GenerationRequest(
                    prompt=lv.task.prompt + tree.prefix(leaf),
                    n=cfg.num_children if expand else 1,
                    max_tokens=max(1, cfg.max_tokens - leaf.prefix_tokens),
                    temperature=cfg.temperature,
                    logprobs=expand,
                )
                jobs.append(_Job(lv, leaf, expand, request))
        return jobs

    def _call(self, jobs: list[_Job]) -> None:
        requests = [j.request for j in jobs]
        self.stats.engine_calls += 1
        self.stats.requests += len(requests)
        try:
            outcomes: Sequence[GenerationResult | BaseException] = self.generate(
                requests, [j.live.key for j in jobs]
            )
        except EngineError as e:
            outcomes = [e] * len(jobs)
        if len(outcomes) != len(jobs):
            raise RuntimeError(f"the engine returned {len(outcomes)} results for {len(jobs)} requests")
        for out in outcomes:
            if isinstance(out, GenerationResult):
                self.stats.completions += len(out.completions)
                self.stats.generated_tokens += sum(len(c.token_ids) for c in out.completions)
        for job, out in zip(jobs, outcomes, strict=True):
            lv = job.live
            if lv.error is not None:
                continue  # this tree already failed in this wave
            if isinstance(out, BaseException):
                if not isinstance(out, EngineError):
                    raise out
                lv.error = f"engine error: {out}"
            elif not isinstance(out, GenerationResult) or len(out.completions) != job.request.n:
                got = len(out.completions) if isinstance(out, GenerationResult) else type(out).__name__
                lv.error = f"malformed engine reply: {got} completions for a request with n={job.request.n}"
            elif job.expand:
                self._expand(lv, job.leaf, out.completions)
            else:
                c = out.completions[0]
                self._rollout(lv, job.leaf, lv.tree.prefix(job.leaf) + c.text, c.finish_reason == "stop")
            if lv.error is None:
                job.leaf.busy = False
                lv.tree.release(job.leaf)

    def _expand(self, lv: _Live, leaf: Node, completions: list[Completion]) -> None:
        tree, prefix = lv.tree, lv.tree.prefix(leaf)
        leaf.expanded = True
        groups: dict[str, list[tuple[Completion, bool, int]]] = {}  # step -> [(completion, ends, tokens)]
        orphans: list[Completion] = []
        for c in completions:
            cut = first_step(prefix, c.text, complete=c.finish_reason == "stop")
            if cut is None or not cut[0]:
                orphans.append(c)
                continue
            step, ends = cut
            groups.setdefault(step, []).append((c, ends, _step_tokens(c, step)))
        probs = {step: _step_prob(members) for step, members in groups.items()}
        known = [p for p in probs.values() if p is not None]
        if len(known) != len(probs):  # no logprobs from the engine: uniform priors
            probs = dict.fromkeys(probs, 1.0)
        total = sum(probs.values()) or 1.0
        for step, members in groups.items():
            tokens = leaf.prefix_tokens + max(k for _, _, k in members)
            ends = any(e for _, e, _ in members)
            child = tree.add_child(
                leaf, step, prior=probs[step] / total, count=len(members), prefix_tokens=tokens
            )
            if ends or tokens >= self.cfg.max_tokens:
                child.terminal = True
                child.reward = self._score(lv, prefix + step)
                answer = prefix + step if ends else None
                for _ in members:
                    tree.backup(child, child.reward, answer)
            else:
                for c, _, _ in members:
                    self._rollout(lv, child, prefix + c.text, c.finish_reason == "stop")
        for c in orphans:
            self._rollout(lv, leaf, prefix + c.text, c.finish_reason == "stop")

    def _rollout(self, lv: _Live, node: Node, answer: str, complete: bool) -> None:
        lv.tree.backup(node, self._score(lv, answer), answer if complete else None)

    def _score(self, lv: _Live, answer: str) -> float:
        if answer not in lv.scores:
            lv.scores[answer] = float(self.score_fn(answer, lv.task.sample))
        return lv.scores[answer]

    # -- tree outcomes --------------------------------------------------------------------------
    def _finish(self, lv: _Live, status: str) -> None:
        lv.tree.status = status
        lv.tree.wall_s = self.clock() - lv.started
        self.results[lv.index] = lv.tree
        if status == DONE:
            self.stats.trees_done += 1
        else:
            self.stats.trees_failed += 1
        if self.progress is not None:
            self.progress(lv.tree)

    def _fail(self, lv: _Live, t0: float) -> None:
        tree = lv.tree
        prev = f"{tree.error}; " if tree.error else ""
        tree.error = f"{prev}attempt {tree.attempts}: {lv.error}"
        for n in tree.nodes:  # what was in flight is abandoned with the attempt
            n.busy, n.pending = False, 0
        if tree.attempts < 2:
            self.stats.trees_retried += 1
            tree.wall_s = self.clock() - lv.started
            self.results[lv.index] = tree  # kept until the retry starts, so a stage abort still shows it
            self.queue.append((lv.index, tree.attempts + 1))
            return
        self._finish(lv, FAILED)
        allowed = self.cfg.max_failed_fraction * self.stats.trees_total
        if self.stats.trees_failed > allowed:
            self.stats.wall_s = self.clock() - t0
            failed = [t for t in self.results if t is not None and t.status == FAILED]
            examples = "; ".join(f"{t.sample_id}: {t.error}" for t in failed[:3])
            raise SearchFailedError(
                f"MCTS: {self.stats.trees_failed} of {self.stats.trees_total} trees failed after a retry, more than "
                f"mcts.max_failed_fraction={self.cfg.max_failed_fraction} allows; first failures: {examples}. "
                "Check the policy replicas (engine errors) or raise mcts.tree_timeout_s (timeouts).",
                trees=[t for t in self.results if t is not None and t.status != "pending"],
                stats=self.stats,
            )


def _step_tokens(c: Completion, step: str) -> int:
    """Tokens of ``c`` inside its first ``step`` characters.

    Completions carry no token offsets, so the count is proportional to characters; the step's prior is
    a geometric mean, which one token more or less barely moves, and the count only feeds the budget.
    """
    n = len(c.token_ids) if c.token_ids else len(c.logprobs or [])
    if n == 0 or len(step) >= len(c.text):
        return n
    return min(n, max(1, round(n * len(step) / len(c.text))))


def _step_prob(members: list[tuple[Completion, bool, int]]) -> float | None:
    """Mean over the duplicates of exp(mean logprob of the step's tokens); None without logprobs."""
    probs = [math.exp(sum(c.logprobs[:k]) / k) for c, _, k in members if c.logprobs and k > 0]
    return sum(probs) / len(probs) if probs else None
