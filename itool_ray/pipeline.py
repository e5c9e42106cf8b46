"""The single-controller loop (DESIGN §1): stages over a run directory, resumable.

    warmup SFT → eval → K × (mine → search → pairs → train → reload → eval) → report

Each stage reads and writes the run directory; ``manifest.json`` records what is done, so re-running
the same command after a crash skips completed stages. Stages that are not built yet raise
``StageUnavailable`` naming what is missing — nothing pretends.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from itool_ray.config import Config
from itool_ray.rundir import RunDir

log = logging.getLogger("itool")


class StageUnavailable(RuntimeError):
    """A pipeline stage that this version of itool-ray does not provide yet."""


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


def stage_data(cfg: Config, run: RunDir) -> None:
    """Load (or synthesise) the train and held-out splits into ``data/``."""
    from itool_ray.data.io import write_samples

    with run.stage("data") as st:
        for split in ("train", "heldout"):
            samples, summary = load_split(cfg, split)
            if not samples:
                raise ValueError(f"data.{split}: no usable samples ({summary})")
            write_samples(samples, run.path("data", f"{split}.jsonl"))
            st.outputs.append(f"data/{split}.jsonl")
            st.summary[split] = summary
            log.info("data: %s: %s", split, summary)


def stage_model(cfg: Config, run: RunDir) -> None:
    """Resolve the base model into a local Hugging Face directory (imports the embedded GGUF once)."""
    from itool_ray.models import resolve_model

    with run.stage("model") as st:
        path = resolve_model(
            cfg.model.name_or_path,
            data_dir=cfg.run.data_dir,
            tiny_hidden_size=cfg.model.tiny_hidden_size,
            tiny_layers=cfg.model.tiny_layers,
            tiny_vocab_size=cfg.model.tiny_vocab_size,
        )
        run.write_text("model/base_path.txt", path + "\n")
        st.outputs.append("model/base_path.txt")
        st.summary["base_model"] = path


def _unavailable(name: str, issue: str) -> Callable[[Config, RunDir], None]:
    def stage(cfg: Config, run: RunDir) -> None:
        raise StageUnavailable(f"stage '{name}' is not built yet ({issue}); the run stopped here")

    return stage


def stages(cfg: Config) -> list[tuple[str, Callable[[Config, RunDir], None]]]:
    out = [
        ("data", stage_data),
        ("model", stage_model),
        ("warmup", _unavailable("warmup", "warm-up SFT, issue #5")),
    ]
    return out


def run_pipeline(cfg: Config, *, restart_from: str | None = None) -> RunDir:
    run = RunDir(cfg.run.dir)
    run.write_text("config.yaml", cfg.to_yaml())
    plan = stages(cfg)
    names = [n for n, _ in plan]
    if restart_from is not None:
        if restart_from not in names:
            raise ValueError(f"--restart-from {restart_from!r}: unknown stage (stages: {', '.join(names)})")
        run.forget_from(names[names.index(restart_from) :])
    t0 = time.time()
    for name, fn in plan:
        if run.stage_done(name):
            log.info("%s: done before, skipped", name)
            continue
        t = time.time()
        fn(cfg, run)
        log.info("%s: finished in %.1f s", name, time.time() - t)
    log.info("run %s finished in %.1f s", run.uri, time.time() - t0)
    return run
