"""The deficiency-mining UDF: a Ray Data callable class that scores through the policy fleet (DESIGN §4).

    ds.map_batches(MiningScorer, fn_constructor_args=(pool.handle(), model_dir, cfg), batch_format="pyarrow",
                   compute=ray.data.ActorPoolStrategy(size=cfg.mining.concurrency), num_cpus=0, ...)

The UDF hosts no engine: it routes each batch over the fleet's replicas (``ReplicaPool.attach``: least
load, retry on a replica that died), so mining, search and evaluation of one policy share one fleet.
Each batch holds ``{"id", "sample"}`` rows (the Sample as JSON text). For every sample the policy
answers once greedily and ``samples_per_prompt`` times at the mining temperature, all in one engine
call; the ground-truth answer (+ end of turn) is scored in one more. ``itool_ray.mining.mine_record``
turns that into a row.
"""

from __future__ import annotations

import zlib
from typing import Any

from actors.pool import FleetHandle, ReplicaPool
from itool_ray.config import Config
from itool_ray.data.schema import Sample
from itool_ray.engines.base import EngineError, GenerationRequest
from itool_ray.mining import arrow_schema, mine_record
from itool_ray.storage import local_copy


def sample_seed(run_seed: int, sample_id: str) -> int:
    """A per-sample sampling seed: the same answers whichever batch, actor or retry serves the sample."""
    return (run_seed * 1_000_003 + zlib.crc32(sample_id.encode())) % 2**31


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

        from itool_ray.prompts import render_answer, render_prompt

        samples = [Sample.model_validate_json(s) for s in batch.column("sample").to_pylist()]
        style, max_tokens = self.cfg.data.prompt_style, self.cfg.data.max_answer_tokens
        k, temperature = self.cfg.mining.samples_per_prompt, self.cfg.mining.temperature
        prompts = [render_prompt(self.tokenizer, s.tools, s.messages, style=style) for s in samples]
        requests = [GenerationRequest(p, n=1, max_tokens=max_tokens, stop=[self.stop]) for p in prompts]
        if k:
            requests += [
                GenerationRequest(
                    p,
                    n=k,
                    max_tokens=max_tokens,
                    temperature=temperature,
                    stop=[self.stop],
                    seed=sample_seed(self.cfg.run.seed, s.id),
                )
                for p, s in zip(prompts, samples, strict=True)
            ]
        pairs = [(p, render_answer(s.answer) + self.stop) for p, s in zip(prompts, samples, strict=True)]
        try:
            results = self.fleet.generate(requests)
            gt = self.fleet.score_many(pairs)
        except EngineError as e:
            raise EngineError(f"mining samples {samples[0].id} … {samples[-1].id}: {e}") from e
        n = len(samples)
        rows = [
            mine_record(
                s,
                results[i].completions[0].text,
                [c.text for c in results[n + i].completions] if k else [],
                gt[i],
            )
            for i, s in enumerate(samples)
        ]
        return pa.Table.from_pylist(rows, schema=self.schema)
