"""Deficiency mining on Ray Data (DESIGN §4): read Samples → map_batches(MiningScorer, scoring through the
policy fleet) → collect → the deficiency rule (global: needs every perplexity) → one Parquet file, plus a
summary.

    summary = run_mining("runs/x/data/train.jsonl", fleet=pool, model_dir=ckpt,
                         out_path="runs/x/iter_1/deficient.parquet", cfg=cfg)

The Ray Data operators are light (read, parse, route, reward): they ask for no CPU, since the fleet's
replicas hold the cores and do the generation; streaming and backpressure are Ray Data's.

The output holds every sample (``deficient`` and ``reason`` say which are kept); ``itool_ray.mining``
(the rule, the row format, ``deficient_samples``) is the pure half of this stage. The scorer actors restart when they die
(``replicas.max_restarts``) and Ray Data retries the batch they held (``replicas.max_request_retries``);
a replica that dies mid-batch is retried on another one by the fleet's router. A crash costs time, not
samples; the stage still checks that every input sample came out
exactly once and raises otherwise.
"""

from __future__ import annotations

import logging
import time
import warnings
from collections.abc import Callable
from typing import Any

from itool_ray import storage
from itool_ray.config import Config
from itool_ray.data.io import sample_from_row, suffix
from itool_ray.data.schema import SampleError
from itool_ray.mining import apply_rule, arrow_schema, summarize

log = logging.getLogger(__name__)


class MiningError(RuntimeError):
    """The mining stage could not account for every sample, or its input is unusable."""


def _normalise(batch: Any, *, jsonl: bool) -> dict[str, list[str]]:
    """Ray Data map: JSONL lines (``text``) or Parquet Sample rows -> ``{"id", "sample"}`` rows."""
    out: dict[str, list[str]] = {"id": [], "sample": []}
    for rec in batch.to_pylist():
        try:
            s = sample_from_row(rec["text"] if jsonl else rec)
        except (ValueError, SampleError) as e:  # JSONDecodeError is a ValueError
            raise MiningError(f"mining input: a record is not a Sample: {e}") from e
        out["id"].append(s.id)
        out["sample"].append(s.to_json())
    return out


def read_samples(samples_path: str) -> Any:  # -> ray.data.Dataset of {"id", "sample"}
    """Samples from a .jsonl or .parquet file (or a directory of them), local or any fsspec URI.

    JSONL is read as text lines and parsed per row: Arrow's JSON reader would infer one schema across
    rows, and tool schemas differ from row to row.
    """
    import ray

    ext = suffix(samples_path)
    filesystem, path = storage.pyarrow_filesystem(samples_path)
    light = {"num_cpus": 0}  # the fleet's replicas may hold every core; reading and parsing are cheap
    if ext == ".parquet":
        ds = ray.data.read_parquet(path, filesystem=filesystem, **light)
    elif ext in (".jsonl", ".json"):
        ds = ray.data.read_text(path, filesystem=filesystem, **light)
    else:
        raise MiningError(f"mining input {samples_path}: expected a .jsonl or .parquet file of Samples")
    return ds.map_batches(_normalise, batch_format="pyarrow", fn_kwargs={"jsonl": ext != ".parquet"}, **light)


def run_mining(
    samples_path: str,
    *,
    fleet: Any,
    model_dir: str,
    out_path: str,
    cfg: Config,
    on_batch: Callable[[int, int], None] | None = None,
) -> dict[str, Any]:
    """Mine ``samples_path`` with the policy that ``fleet`` (a ReplicaPool) serves, ``model_dir`` (its
    tokenizer); write every row to ``out_path`` (Parquet).

    Returns the summary (``itool_ray.mining.summarize`` plus the settings and timings).
    ``on_batch(rows_done, rows_total)`` is called as mined batches arrive (progress).
    """
    import ray

    from actors.mining import MiningScorer

    t0 = time.perf_counter()
    # The input's order is the output's (the rows are sorted back into it below): read with order kept,
    # since blocks read by concurrent tasks otherwise arrive in whatever order the tasks finish.
    options = ray.data.DataContext.get_current().execution_options
    keep_order, options.preserve_order = options.preserve_order, True
    try:
        samples = read_samples(samples_path).materialize()
        ids = [row["id"] for row in samples.select_columns(["id"], num_cpus=0).take_all()]
    finally:
        options.preserve_order = keep_order
    if len(set(ids)) != len(ids):
        dupes = sorted({i for i in ids if ids.count(i) > 1})[:5]
        raise MiningError(f"mining input {samples_path}: duplicate sample ids {dupes}: ids must be unique")
    if not ids:
        raise MiningError(f"mining input {samples_path}: no samples")

    with warnings.catch_warnings():
        # Ray 2.60 deprecates extra remote args (removal in 2.64) but has no named parameter for
        # max_restarts/max_task_retries yet; without them Ray Data restarts and retries forever.
        warnings.filterwarnings(
            "ignore", message="`ray_remote_args` is deprecated", category=DeprecationWarning
        )
        mined = samples.map_batches(
            MiningScorer,
            fn_constructor_args=(fleet.handle(), model_dir, cfg),
            batch_size=cfg.mining.batch_size,
            batch_format="pyarrow",
            compute=ray.data.ActorPoolStrategy(size=cfg.mining.concurrency),
            num_cpus=0,  # a router: the work is the fleet's
            **({"resources": dict(cfg.mining.resources)} if cfg.mining.resources else {}),
            # A client that dies restarts; the batch it held is retried a bounded number of times
            # (Ray Data's own default is to retry forever).
            max_restarts=cfg.replicas.max_restarts,
            max_task_retries=cfg.replicas.max_request_retries,
        )
    rows: list[dict[str, Any]] = []
    for batch in mined.iter_batches(batch_size=None, batch_format="pyarrow"):
        rows.extend(batch.to_pylist())
        log.info("mining: %d/%d samples", len(rows), len(ids))
        if on_batch is not None:
            on_batch(len(rows), len(ids))
    t_map = time.perf_counter() - t0

    got = [r["id"] for r in rows]
    missing, extra = set(ids) - set(got), len(got) - len(set(got))
    if missing or extra or len(got) != len(ids):
        raise MiningError(
            f"mining lost or duplicated samples: {len(ids)} in, {len(got)} out, {len(missing)} missing "
            f"(e.g. {sorted(missing)[:5]}), {extra} duplicated"
        )
    order = {sid: i for i, sid in enumerate(ids)}
    rows.sort(key=lambda r: order[r["id"]])
    rows = apply_rule(rows, ratio=cfg.mining.ratio, rule=cfg.mining.rule)
    _write_parquet(rows, out_path)

    summary = summarize(rows)
    summary["settings"] = {
        "rule": cfg.mining.rule,
        "ratio": cfg.mining.ratio,
        "samples_per_prompt": cfg.mining.samples_per_prompt,
        "temperature": cfg.mining.temperature,
        "concurrency": cfg.mining.concurrency,
        "model_dir": model_dir,
    }
    summary["timing"] = {"map_s": round(t_map, 2), "total_s": round(time.perf_counter() - t0, 2)}
    summary["output"] = out_path
    log.info(
        "mining: %d samples, %d deficient %s, greedy accuracy %.3f (%.1f s)",
        summary["n"],
        summary["deficient"],
        summary["deficient_by_reason"],
        summary["greedy_accuracy"],
        t_map,
    )
    return summary


def _write_parquet(rows: list[dict[str, Any]], out_path: str) -> None:
    """One Parquet file, written atomically (a reader never sees a partial file)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pa.Table.from_pylist(rows, schema=arrow_schema())
    try:
        storage.write_atomic(out_path, lambda f: pq.write_table(table, f))
    except OSError as e:  # a full disk: the same one line as every other write, nothing partial left
        raise MiningError(f"cannot write {out_path}: {e.strerror or e}") from None


def read_mined(path: str) -> list[dict[str, Any]]:
    """The rows of a mining output file (every sample, with its scores and ``deficient`` flag)."""
    import io

    import pyarrow.parquet as pq

    return pq.read_table(io.BytesIO(storage.read_bytes(path))).to_pylist()
