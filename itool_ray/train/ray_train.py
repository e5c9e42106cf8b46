"""Ray Train glue: one TorchTrainer run of one TRL trainer, from tokenized rows to a Hugging Face directory.

    result = run_job(job, rows, summary=counts)   # sft.py and preference.py build the job and rows

``out_dir`` is a local path, a shared filesystem path, or an object-store URI (``s3://…``): the run
directory's. Layout while training, and after::

    out_dir/train_state/            while training (removed on success)
        job.json                    fingerprint of the job; a different job wipes the folder, the same job
                                    resumes from its last checkpoint (Ray Train V2 restores the run snapshot)
        dataset/                    the tokenized rows (Arrow); each worker reads a node-local copy
        train/                      Ray Train run (its own storage handling, any fsspec location):
                                    checkpoint_000002/ … (HF Trainer checkpoints, all ranks merged)
    out_dir/                        after: config.json, model.safetensors, tokenizer files, metrics.json

No worker reads the driver's disk: the starting weights and the dataset are fetched into each node's cache
(``itool_ray.storage.local_copy``); rank 0 finishes the export (LoRA merged there, on the worker's device)
and publishes it into ``out_dir``.

In each worker (``_train_loop``): ``deepspeed.init_distributed`` first when DeepSpeed is on (the ZeRO-3
fix, see deepspeed.py), restore the latest Ray checkpoint if this is a restart, build the trainer, train,
``save_model`` (gathers ZeRO-3 shards), report. Checkpoints are reported by every rank (DeepSpeed writes
one optimizer shard per rank; Ray merges them) after the steps the job names; a restarted worker group
(``FailureConfig(max_failures)``) resumes the HF Trainer from the merged checkpoint: weights, optimizer,
scheduler, RNG and data position. ``num_workers: 0`` runs the same loop in the driver process (Ray Train
V2 local mode; no DeepSpeed there).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from itool_ray import logs, storage
from itool_ray.config import DistributedConfig, LoraConfig
from itool_ray.train.common import METRICS_FILE, DPOLoss, SimPOLoss, TrainError, TrainResult
from itool_ray.train.deepspeed import GRADIENT_CLIPPING, build_deepspeed_config, init_deepspeed_comm

log = logging.getLogger(__name__)

STATE_DIR = "train_state"
# Files save_model() writes that are not part of a Hugging Face model directory.
NOT_EXPORTED = ("training_args.bin", "README.md")
# Env for fault-injection tests: a worker raises once after saving the checkpoint at this step.
CRASH_AFTER_STEP_ENV = "ITOOL_TRAIN_CRASH_AFTER_STEP"


@dataclass
class TrainJob:
    """Everything a worker needs; plain data plus the module-level ``build`` function (pickled by name)."""

    kind: str  # "sft" | "dpo" | "simpo": names the run in messages and metrics
    build: Callable[..., Any]  # build(job, *, output_dir, callbacks) -> transformers.Trainer
    model_dir: str
    out_dir: str
    dist: DistributedConfig
    micro_batch_size: int
    grad_accum: int
    lr: float
    scheduler: str
    warmup_steps: int
    seed: int
    loss: DPOLoss | SimPOLoss | None = None  # the preference loss; None for SFT
    lora: LoraConfig | None = None
    checkpoint_steps: list[int] = field(default_factory=list)  # save a checkpoint after these steps
    crash_after_step: int | None = None  # fault injection (tests); see CRASH_AFTER_STEP_ENV
    dataset_dir: str = ""  # set by run_job

    @property
    def world_size(self) -> int:
        return max(1, self.dist.num_workers)

    @property
    def deepspeed(self) -> dict[str, Any] | None:
        return build_deepspeed_config(
            self.dist,
            micro_batch_size=self.micro_batch_size,
            grad_accum=self.grad_accum,
            world_size=self.world_size,
        )

    def fingerprint(self, rows_digest: str) -> str:
        skip = ("build", "dist", "lora", "loss", "crash_after_step", "dataset_dir")
        data = {f.name: getattr(self, f.name) for f in fields(self) if f.name not in skip}
        data["build"] = f"{self.build.__module__}.{self.build.__qualname__}"
        data["dist"] = self.dist.model_dump()
        data["lora"] = self.lora.model_dump() if self.lora else None
        data["loss"] = self.loss.trl_kwargs() if self.loss is not None else None
        data["rows"] = rows_digest
        # The starting weights too: a stage rerun may rewrite the same model_dir with new weights.
        data["weights"] = (
            [f for f in storage.listing(self.model_dir) if f[0].endswith(".safetensors")]
            if storage.exists(self.model_dir)
            else []  # a hub id
        )
        return hashlib.sha256(json.dumps(data, sort_keys=True, default=str).encode()).hexdigest()

    def training_arguments(self, output_dir: str) -> dict[str, Any]:
        """TrainingArguments fields shared by every TRL config we build (SFTConfig, DPOConfig, CPOConfig)."""
        d = self.dist
        return {
            "output_dir": output_dir,
            "per_device_train_batch_size": self.micro_batch_size,
            "gradient_accumulation_steps": self.grad_accum,
            "learning_rate": self.lr,
            "lr_scheduler_type": self.scheduler,
            "warmup_steps": self.warmup_steps,
            "weight_decay": 0.0,
            "max_grad_norm": GRADIENT_CLIPPING,
            # Rows arrive in training order (epochs, phases and shuffling done by schedule_rows).
            "num_train_epochs": 1,
            "train_sampling_strategy": "sequential",
            "seed": self.seed,
            "data_seed": self.seed,
            "logging_strategy": "steps",
            "logging_steps": 1,
            "save_strategy": "no",  # the _Progress callback decides when to checkpoint
            "save_total_limit": 1,
            "report_to": "none",
            "disable_tqdm": True,
            "bf16": d.precision == "bf16",
            "fp16": d.precision == "fp16",
            "use_cpu": not d.use_gpu,
            # TRL turns it on by default; on CPU at these sizes it only costs time (~20 %).
            "gradient_checkpointing": d.use_gpu,
            "dataloader_num_workers": 0,
            "deepspeed": self.deepspeed,
        }


def run_job(job: TrainJob, rows: list[dict[str, Any]], *, summary: dict[str, Any]) -> TrainResult:
    """Train on ``rows`` (tokenized, in order) with Ray Train and export a HF directory to ``job.out_dir``.

    ``summary`` holds the caller's counts (trained_tokens, skipped …); the run's figures are added.
    """
    if not rows:
        raise TrainError(f"{job.kind}: no training rows (every example was skipped or the input was empty)")
    if job.dist.num_workers == 0 and job.dist.zero_stage > 0:
        raise TrainError(
            "distributed.num_workers: 0 runs training in the driver process without DeepSpeed; "
            "set distributed.zero_stage: 0, or num_workers >= 1 for ZeRO"
        )
    build_deepspeed_config(  # raises DeepSpeedConfigError here, in the driver, before any worker starts
        job.dist, micro_batch_size=job.micro_batch_size, grad_accum=job.grad_accum, world_size=job.world_size
    )
    out = (
        job.out_dir
        if not storage.is_local(job.out_dir)
        else str(Path(storage.local_path(job.out_dir)).resolve())
    )
    state = storage.join(out, STATE_DIR)
    digest = hashlib.sha256(json.dumps(rows, sort_keys=True).encode()).hexdigest()
    fingerprint = job.fingerprint(digest)
    marker = storage.join(state, "job.json")
    if storage.exists(state) and (
        not storage.exists(marker) or json.loads(storage.read_bytes(marker)).get("fingerprint") != fingerprint
    ):
        log.info("%s: %s holds another job's state; starting afresh", job.kind, state)
        storage.remove(state)
    if not storage.exists(marker):
        storage.write_atomic(
            marker, (json.dumps({"fingerprint": fingerprint, "kind": job.kind}) + "\n").encode()
        )
    job.out_dir = out
    job.dataset_dir = storage.join(state, "dataset")
    if not storage.exists(storage.join(job.dataset_dir, "state.json")):
        _save_dataset(rows, job.dataset_dir)
    crash = os.environ.get(CRASH_AFTER_STEP_ENV)
    if crash:
        job.crash_after_step = int(crash)

    start = time.perf_counter()
    value = _fit(job, state)
    wall = time.perf_counter() - start
    if not isinstance(value, dict) or "log_history" not in value:
        raise TrainError(
            f"{job.kind}: the training function returned no log history (got {type(value).__name__})"
        )

    if not storage.exists(storage.join(out, "config.json")):
        raise TrainError(f"{job.kind}: the training workers published no model to {out}")
    steps, final = _split_log(value["log_history"])
    phases = summary.get("phases")
    if phases:
        _tag_phases(steps, phases)
    _step_throughput(steps)
    # Seconds in optimizer steps, summed from the log history (it survives restarts, train_runtime does not).
    step_seconds = sum(e.get("step_time_s", 0.0) for e in steps)
    summary = dict(summary)
    summary.update(
        kind=job.kind,
        global_steps=value["global_step"],
        world_size=job.world_size,
        zero_stage=job.dist.zero_stage,
        precision=value.get("precision", job.dist.precision),  # "auto" as the workers resolved it
        resumed_from_step=value["resumed_from_step"],
        train_loss=final.get("train_loss"),
        step_seconds=round(step_seconds, 3),
        wall_s=round(wall, 3),
    )
    if summary.get("trained_tokens") and step_seconds > 0:
        summary["tokens_per_s"] = round(summary["trained_tokens"] / step_seconds, 2)
    result = TrainResult(model_dir=out, steps=steps, summary=summary)
    metrics = json.dumps({"steps": steps, "summary": summary}, indent=1) + "\n"
    storage.write_atomic(storage.join(out, METRICS_FILE), metrics.encode())
    storage.remove(state)
    return result


def _save_dataset(rows: list[dict[str, Any]], uri: str) -> None:
    """The tokenized rows as an Arrow dataset directory at ``uri`` (written locally, then published)."""
    from datasets import Dataset

    if storage.is_local(uri):
        Dataset.from_list(rows).save_to_disk(storage.local_path(uri))
        return
    with tempfile.TemporaryDirectory(prefix="itool-dataset-") as tmp:
        Dataset.from_list(rows).save_to_disk(tmp)
        storage.upload_dir(tmp, uri)


def _fit(job: TrainJob, state: str) -> Any:
    from ray.train import CheckpointConfig, FailureConfig, LoggingConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchConfig, TorchTrainer

    # Ray Train patches print() in its workers to log every call, even one made while a library has swapped
    # sys.stdout to capture output: dill (datasets' fingerprinting, inside TRL) captures dis.dis() that way,
    # so hundreds of lines of bytecode and a second copy of each progress line reached the console. Ray
    # propagates this variable from the driver to the controller and the workers.
    os.environ.setdefault("RAY_TRAIN_ENABLE_PRINT_PATCH", "0")
    d = job.dist
    if d.num_workers == 0:
        scaling = ScalingConfig(num_workers=0)
    else:
        resources = (
            {"CPU": d.cpus_per_worker}
            | ({"GPU": d.gpus_per_worker} if d.use_gpu else {})
            | dict(d.resources_per_worker)
        )
        scaling = ScalingConfig(num_workers=d.num_workers, use_gpu=d.use_gpu, resources_per_worker=resources)
    storage_fs, storage_path = storage.pyarrow_filesystem(state)
    trainer = TorchTrainer(
        _train_loop,
        train_loop_config={"job": job},
        torch_config=TorchConfig(backend="nccl" if d.use_gpu else "gloo"),
        scaling_config=scaling,
        run_config=RunConfig(
            name="train",
            storage_path=storage_path,
            storage_filesystem=storage_fs,
            failure_config=FailureConfig(max_failures=d.max_failures),
            checkpoint_config=CheckpointConfig(num_to_keep=2),
            # Ray Train's own notices (worker group started, checkpoint reported) only with -v; its log
            # files in the Ray session directory keep them all.
            logging_config=LoggingConfig(log_level="INFO" if logs.verbose() else "WARNING"),
        ),
    )
    if d.num_workers == 0:
        _reset_accelerate()  # the driver may have trained before with other settings
        try:
            return trainer.fit().return_value
        finally:
            _reset_accelerate()
    from ray.train import WorkerGroupError

    try:
        return trainer.fit().return_value
    except WorkerGroupError as e:
        expected = worker_user_error(e)
        if expected is None:
            raise
        raise expected from None


def worker_user_error(e: BaseException) -> TrainError | None:
    """The project's own error (a TrainError, a StorageError: one line a user can act on) behind a failed
    worker group, as a TrainError; None when a worker failed otherwise (a bug keeps its traceback)."""
    from ray.exceptions import RayError

    for failure in getattr(e, "worker_failures", {}).values():
        cur: BaseException | None = failure
        seen: set[int] = set()
        while cur is not None and id(cur) not in seen:
            seen.add(id(cur))
            if isinstance(cur, TrainError | storage.StorageError) and not isinstance(cur, RayError):
                return cur if isinstance(cur, TrainError) else TrainError(f"{cur}")
            # RayTaskError keeps the original as .cause; Ray Train's user-code wrapper as ._base_exc.
            cur = getattr(cur, "cause", None) or getattr(cur, "_base_exc", None) or cur.__cause__
    return None


def _reset_accelerate() -> None:
    from accelerate.state import AcceleratorState

    AcceleratorState._reset_state(reset_partial_state=True)


# ---------------------------------------------------------------------------------------------- worker
def _train_loop(config: dict[str, Any]) -> dict[str, Any] | None:
    import ray.train
    from ray.train.huggingface.transformers import prepare_trainer
    from transformers.trainer_callback import PrinterCallback

    from itool_ray.precision import resolve_precision

    job: TrainJob = config["job"]
    os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
    # "auto" precision: this worker's hardware decides (bf16 only where it is native).
    precision = resolve_precision(job.dist.precision, on_gpu=job.dist.use_gpu)
    job = replace(job, dist=job.dist.model_copy(update={"precision": precision}))
    if job.dist.use_gpu:
        import torch

        if not torch.cuda.is_available():  # else the HF Trainer would quietly train on the CPU
            raise TrainError(
                f"{job.kind}: distributed.use_gpu is set but torch {torch.__version__} cannot use CUDA on this "
                "node (driver too old for this torch build?)"
            )
    if job.deepspeed is not None:
        init_deepspeed_comm(use_gpu=job.dist.use_gpu)
    rank = ray.train.get_context().get_world_rank()
    scratch = tempfile.mkdtemp(prefix=f"itool-{job.kind}-rank{rank}-")
    # This node's copies of the starting weights and the dataset (the paths themselves when local).
    job = replace(
        job, model_dir=storage.local_copy(job.model_dir), dataset_dir=storage.local_copy(job.dataset_dir)
    )
    export_dir = os.path.join(scratch, "export")
    try:
        checkpoint = ray.train.get_checkpoint()
        resume_dir = _checkpoint_dir(checkpoint) if checkpoint is not None else None
        resumed_from = _checkpoint_step(resume_dir) if resume_dir else None
        progress = _progress_callback(job, resumed=resume_dir is not None)
        trainer = prepare_trainer(
            job.build(job, output_dir=os.path.join(scratch, "hf"), callbacks=[progress])
        )
        trainer.remove_callback(PrinterCallback)  # prints every log dict; metrics.json has them all
        trainer.train(resume_from_checkpoint=resume_dir)
        _export(job, trainer, export_dir, rank)
        last = _numeric(next((e for e in reversed(trainer.state.log_history) if "loss" in e), {}))
        ray.train.report({**last, "step": trainer.state.global_step, "done": 1})
        if rank != 0:
            return None
        return {
            "log_history": trainer.state.log_history,
            "global_step": trainer.state.global_step,
            "resumed_from_step": resumed_from,
            "precision": job.dist.precision,
        }
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def _checkpoint_dir(checkpoint: Any) -> str:
    """The restored checkpoint as a local directory, read in place: the storage path itself when the run
    directory is on a local or shared filesystem, else one copy per node in the node cache (every rank reads
    its own optimizer shard from it), never one copy per rank."""
    from pyarrow.fs import LocalFileSystem, PyFileSystem

    fs = checkpoint.filesystem
    if isinstance(fs, LocalFileSystem):
        return checkpoint.path
    if isinstance(fs, PyFileSystem):  # an fsspec filesystem (storage.pyarrow_filesystem)
        return storage.local_copy(fs.handler.fs.unstrip_protocol(checkpoint.path))
    raise TrainError(f"checkpoint on an unexpected filesystem {type(fs).__name__}: {checkpoint.path}")


def _checkpoint_step(path: str) -> int | None:
    state = Path(path) / "trainer_state.json"
    return json.loads(state.read_text()).get("global_step") if state.is_file() else None


def _numeric(d: dict[str, Any]) -> dict[str, float]:
    return {k: v for k, v in d.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}


def _progress_callback(job: TrainJob, *, resumed: bool) -> Any:
    """A TrainerCallback: per-step wall time into the log history; checkpoints at the job's steps,
    reported to Ray Train by every rank."""
    from transformers import TrainerCallback

    class Progress(_Progress, TrainerCallback):
        pass

    return Progress(job, resumed=resumed)


class _Progress:
    def __init__(self, job: TrainJob, *, resumed: bool):
        self.kind = job.kind
        self.checkpoint_steps = set(job.checkpoint_steps)
        self.crash_after_step = job.crash_after_step
        self.resumed = resumed
        self._t = time.perf_counter()
        self._step_time: float | None = None

    def on_train_begin(self, args, state, control, **kwargs):
        self._t = time.perf_counter()

    def on_step_end(self, args, state, control, **kwargs):
        now = time.perf_counter()
        self._step_time, self._t = now - self._t, now
        if state.global_step in self.checkpoint_steps and state.global_step < state.max_steps:
            control.should_save = True

    def on_log(self, args, state, control, logs=None, **kwargs):
        entry = state.log_history[-1] if state.log_history else {}
        if "loss" in entry and self._step_time is not None:
            entry["step_time_s"] = round(self._step_time, 4)
        if "loss" in entry and state.is_world_process_zero:
            # One progress line per step; Ray forwards worker output to the driver's terminal.
            extra = f"  margin {entry['rewards/margins']:.3f}" if "rewards/margins" in entry else ""
            print(
                f"{self.kind}: step {state.global_step}/{state.max_steps}  loss {entry['loss']:.4f}{extra}  "
                f"{entry.get('step_time_s', 0):.1f} s/step",
                flush=True,
            )

    def on_save(self, args, state, control, **kwargs):
        import ray.train
        from ray.train import Checkpoint

        path = os.path.join(args.output_dir, f"checkpoint-{state.global_step}")
        last = _numeric(next((e for e in reversed(state.log_history) if "loss" in e), {}))
        ray.train.report(
            {**last, "step": state.global_step},
            checkpoint=Checkpoint.from_directory(path),
            checkpoint_dir_name=f"checkpoint_{state.global_step:06d}",
        )
        self._t = time.perf_counter()  # the save is not part of the next step's time
        if (
            self.crash_after_step is not None
            and not self.resumed
            and state.global_step >= self.crash_after_step
        ):
            raise RuntimeError(
                f"injected failure after the checkpoint of step {state.global_step} ({CRASH_AFTER_STEP_ENV})"
            )


# ---------------------------------------------------------------------------------------------- export
def _export(job: TrainJob, trainer: Any, export_dir: str, rank: int) -> None:
    """Save the trained model (every rank: ZeRO-3 gathers shards; rank 0 writes), finish it and publish it
    into ``job.out_dir``. A write that fails (a full disk) is a TrainError naming what could not be written;
    nothing partial is left in the run directory."""
    try:
        trainer.save_model(export_dir)
        if rank == 0:
            _finish_export(job, Path(export_dir))
            storage.publish_dir(export_dir, job.out_dir)
    except storage.StorageError as e:
        raise TrainError(f"{job.kind}: {e}") from None
    except Exception as e:
        why = _write_failure(e)
        if why is None:
            raise
        where = getattr(e, "filename", None) or export_dir
        raise TrainError(
            f"{job.kind}: cannot write the exported model to {where} (this node's scratch space): {why}"
        ) from None


def _write_failure(e: BaseException) -> str | None:
    """Why a write failed, for an OSError or safetensors' own error for one (its Rust I/O error); None when
    ``e`` is not a failed write."""
    if isinstance(e, OSError):
        return e.strerror or str(e)
    from safetensors import SafetensorError

    if isinstance(e, SafetensorError) and "I/O error: " in str(e):
        return str(e).split("I/O error: ", 1)[1]
    return None


def _finish_export(job: TrainJob, export: Path) -> None:
    """Make rank 0's export a plain HF directory in place: LoRA merged, no trainer files, inference config."""
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    if not (export / "config.json").is_file() and not (export / "adapter_config.json").is_file():
        raise TrainError(f"{job.kind}: the trainer wrote no model to {export}")
    for name in NOT_EXPORTED:
        (export / name).unlink(missing_ok=True)
    base_config = AutoConfig.from_pretrained(job.model_dir)
    if (export / "adapter_config.json").is_file():
        import torch
        from peft import PeftModel

        device = "cuda" if job.dist.use_gpu and torch.cuda.is_available() else "cpu"
        dtype = torch.bfloat16 if job.dist.precision == "bf16" else torch.float32
        base = AutoModelForCausalLM.from_pretrained(job.model_dir, dtype=dtype).to(device)
        merged = PeftModel.from_pretrained(base, str(export)).merge_and_unload()
        adapter = [p for p in export.iterdir() if p.name.startswith("adapter_")]
        merged.save_pretrained(export, safe_serialization=True)
        AutoTokenizer.from_pretrained(job.model_dir).save_pretrained(export)
        for p in adapter:
            p.unlink()
    # The Trainer sets use_cache=False for training; inference wants the base model's setting back.
    config = AutoConfig.from_pretrained(export)
    config.use_cache = getattr(base_config, "use_cache", True)
    config.save_pretrained(export)


def _tag_phases(steps: list[dict[str, Any]], phases: list[dict[str, Any]]) -> None:
    """Label each step with its phase; add each phase's first and last loss to the phase record."""
    for phase in phases:
        if phase["first_step"] is None:
            continue
        mine = [s for s in steps if phase["first_step"] <= s["step"] <= phase["last_step"]]
        for s in mine:
            s["phase"] = phase["name"]
        if mine:
            phase["first_loss"], phase["last_loss"] = mine[0]["loss"], mine[-1]["loss"]


def _step_throughput(steps: list[dict[str, Any]]) -> None:
    """tokens_per_s per step from the trainers' cumulative num_tokens (all ranks, padding excluded)."""
    previous = 0.0
    for s in steps:
        if "num_tokens" in s and s.get("step_time_s"):
            # TRL's counter restarts at 0 after a resume: a drop means a new count began.
            delta = s["num_tokens"] - previous if s["num_tokens"] >= previous else s["num_tokens"]
            s["tokens_per_s"] = round(delta / s["step_time_s"], 1)
            previous = s["num_tokens"]


def _split_log(history: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    steps = [dict(e) for e in history if "loss" in e and "train_runtime" not in e]
    final = next((e for e in reversed(history) if "train_runtime" in e), {})
    return steps, final
