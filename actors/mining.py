"""The deficiency-mining UDF: a Ray Data callable class that scores through the policy fleet (DESIGN §4).

    ds.map_batches(MiningScorer, fn_constructor_args=(pool.handle(), model_dir, cfg), batch_format="pyarrow",
                   compute=ray.data.ActorPoolStrategy(size=cfg.mining.concurrency), num_cpus=0, ...)

The UDF hosts no engine: it routes each batch over the fleet's replicas (``ReplicaPool.attach``: least
load, retry on a replica that died), so mining, search and evaluation of one policy share one fleet.
Each batch holds ``{"id", "sample"}`` rows (the Sample as JSON text). What is asked of the policy and the
row that comes out are ``itool_ray.mining``'s (``mining_requests``, ``mined_rows``); this class only
renders prompts and routes.
"""

from __future__ import annotations

from typing import Any

from actors.pool import FleetHandle, ReplicaPool
from itool_ray.config import Config
from itool_ray.data.io import sample_from_row
from itool_ray.engines.base import EngineError
from itool_ray.mining import arrow_schema, mined_rows, mining_requests
from itool_ray.storage import local_copy


class MiningScorer:
    """Ray Data UDF: Sample rows in, mined rows (answers, rewards, ground-truth perplexity) out."""

    def __init__(self, fleet: FleetHandle, model_dir: str, cfg: Config):
        from transformers import AutoTokenizer

        from itool_ray.prompts import end_of_turn

        self.cfg = cfg
        self.fleet = ReplicaPool.attach(fleet)
        self.tokenizer = AutoTokenizer.from_pretrained(local_copy(model_dir))
        self.stop = end_of_turn(self.tokenizer)
        self.schema = arrow_schema()

    def __call__(self, batch: Any) -> Any:  # pyarrow.Table -> pyarrow.Table
        import pyarrow as pa

        from itool_ray.prompts import render_prompt

        samples = [sample_from_row(s) for s in batch.column("sample").to_pylist()]
        style = self.cfg.data.prompt_style
        prompts = [render_prompt(self.tokenizer, s.tools, s.messages, style=style) for s in samples]
        requests, gt_pairs = mining_requests(samples, prompts, stop=self.stop, cfg=self.cfg)
        try:
            results = self.fleet.generate(requests)
            gt = self.fleet.score_batch(gt_pairs)
        except EngineError as e:
            raise EngineError(f"mining samples {samples[0].id} … {samples[-1].id}: {e}") from e
        return pa.Table.from_pylist(mined_rows(samples, results, gt, self.cfg), schema=self.schema)
