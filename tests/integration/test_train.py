"""Training: warm-up SFT, DPO / SimPO / LoRA in the driver process (num_workers 0), and the multi-worker
paths (ZeRO-2 with a worker failure and resume, ZeRO-3 with TRL's implicit reference model) on a local
Ray cluster with two CPU workers."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from tools import WEATHER

from itool_ray.config import load_config
from itool_ray.data.synth import generate
from itool_ray.mcts.pairs import pair_texts
from itool_ray.train import run_preference, run_sft, run_warmup
from itool_ray.train.common import encode
from itool_ray.train.ray_train import CRASH_AFTER_STEP_ENV, STATE_DIR

CITIES = ["Paris", "Berlin", "Tokyo", "Lima", "Oslo", "Cairo", "Rome", "Quito"]


def weather_pair(city: str) -> dict:
    """A step-level pair after the shared prefix ``[get_weather(city="…", unit="``: celsius over fahrenheit."""
    prefix = f'[get_weather(city="{city}", unit="'
    return {
        "prompt": [
            {"role": "user", "content": f"What is the weather in {city}?"},
            {"role": "assistant", "content": prefix},
        ],
        "chosen": [{"role": "assistant", "content": 'celsius")]'}],
        "rejected": [{"role": "assistant", "content": 'fahrenheit")]'}],
        "tools": [WEATHER],
        "meta": {
            "sample_id": f"weather-{city}",
            "iteration": 1,
            "depth": 2,
            "q_chosen": 1.0,
            "q_rejected": 0.5,
            "origin": "mcts",
            "prefix": prefix,
        },
    }


PAIRS = [weather_pair(c) for c in CITIES]


def tiny_cfg(data_dir: str, **sections):
    """The tiny preset, in-process (num_workers 0, no DeepSpeed), with section overrides."""
    over = {"run": {"data_dir": data_dir}, "distributed": {"num_workers": 0, "zero_stage": 0}}
    for name, values in sections.items():
        over[name] = over.get(name, {}) | values
    return load_config("tiny", overrides=over)


def load(model_dir: str):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    return AutoModelForCausalLM.from_pretrained(model_dir).eval(), AutoTokenizer.from_pretrained(model_dir)


def greedy(model, tokenizer, prompt: str, n: int = 8) -> str:
    ids = torch.tensor([encode(tokenizer, prompt)])
    with torch.no_grad():
        out = model.generate(ids, max_new_tokens=n, do_sample=False, pad_token_id=tokenizer.pad_token_id)
    return tokenizer.decode(out[0, ids.shape[1] :])


def logprob(model, tokenizer, prompt: str, continuation: str) -> float:
    p, c = encode(tokenizer, prompt), encode(tokenizer, continuation)
    ids = torch.tensor([p + c])
    with torch.no_grad():
        logps = model(ids).logits[0, :-1].log_softmax(-1)
    return sum(logps[len(p) - 1 + i, t].item() for i, t in enumerate(c))


def margins(model_dir: str) -> list[float]:
    model, tokenizer = load(model_dir)
    out = []
    for pair in PAIRS:
        t = pair_texts(pair, tokenizer)
        out.append(
            logprob(model, tokenizer, t["prompt"], t["chosen"])
            - logprob(model, tokenizer, t["prompt"], t["rejected"])
        )
    return out


def assert_plain_hf_dir(model_dir: str) -> None:
    files = {p.name for p in Path(model_dir).iterdir()}
    assert {"config.json", "model.safetensors", "tokenizer.json", "metrics.json"} <= files, files
    assert not files & {"adapter_config.json", "adapter_model.safetensors", "training_args.bin", STATE_DIR}, (
        files
    )
    assert json.loads((Path(model_dir) / "config.json").read_text()).get("use_cache", True) is True


def weights_differ(a: str, b: str) -> bool:
    ma, _ = load(a)
    mb, _ = load(b)
    sa, sb = ma.state_dict(), mb.state_dict()
    assert sa.keys() == sb.keys()
    assert all(sa[k].shape == sb[k].shape for k in sa)  # full tensors, not ZeRO-3 placeholders
    return any(not torch.equal(sa[k], sb[k]) for k in sa)


# ---------------------------------------------------------------------------------------------- tokens
def test_rows_hold_exactly_the_tokens_the_engines_see(tiny_model_dir):
    """Prompt and completion encoded separately without added special tokens (as the engines encode a
    rendered prompt), the end of turn once at the end, the loss only on the answer."""
    from itool_ray.prompts import end_of_turn, render_example
    from itool_ray.train.preference import pair_rows
    from itool_ray.train.sft import sft_rows

    _, tok = load(tiny_model_dir)
    eot_id = tok.convert_tokens_to_ids(end_of_turn(tok))
    rows, skipped = pair_rows(tok, PAIRS, style="compact", max_prompt_tokens=512, max_answer_tokens=96)
    assert len(rows) == len(PAIRS) and not any(skipped.values())
    for pair, row in zip(PAIRS, rows, strict=True):
        text = pair_texts(pair, tok)
        prefix = pair["meta"]["prefix"]
        conversation = tok(text["prompt"][: -len(prefix)], add_special_tokens=False)["input_ids"]
        n = len(conversation)
        assert row["prompt_ids"][:n] == conversation
        # the answer is tokenized whole, as the policy writes it; the prefix's shared tokens are prompt
        for side in ("chosen", "rejected"):
            whole = tok(prefix + text[side], add_special_tokens=False)["input_ids"]
            assert row["prompt_ids"][n:] + row[f"{side}_ids"] == whole
        assert tok.decode(row["prompt_ids"] + row["chosen_ids"]) == text["prompt"] + text["chosen"]
        for side in ("chosen_ids", "rejected_ids"):
            assert row[side][-1] == eot_id and row[side].count(eot_id) == 1

    sample = next(iter(generate(1, seed=3, split="train")))
    (row,), _ = sft_rows(tok, [sample], style="compact", max_prompt_tokens=512, max_answer_tokens=96)
    prompt, answer = render_example(tok, sample, "compact")
    n_prompt = len(tok(prompt, add_special_tokens=False)["input_ids"])
    assert row["completion_mask"] == [0] * n_prompt + [1] * (len(row["input_ids"]) - n_prompt)
    assert tok.decode(row["input_ids"][n_prompt:]) == answer + end_of_turn(tok)


def test_a_pair_prefix_is_tokenized_together_with_its_continuations(tiny_model_dir):
    """A prefix that ends inside what the tokenizer writes as one token (``"`` + ``),``): both sides are
    tokenized as whole answers, and only the tokens they share go to the prompt."""
    from itool_ray.prompts import end_of_turn
    from itool_ray.train.preference import pair_rows

    _, tok = load(tiny_model_dir)
    prefix = '[get_weather(city="Austin"'
    pair = weather_pair("Austin")
    pair["prompt"][-1]["content"] = pair["meta"]["prefix"] = prefix
    pair["chosen"][0]["content"] = ")]"
    pair["rejected"][0]["content"] = '), get_weather(city="Austin")]'
    enc = lambda text: tok(text, add_special_tokens=False)["input_ids"]  # noqa: E731
    eot = end_of_turn(tok)
    more = '), get_weather(city="Austin")]' + eot
    assert enc(prefix) + enc(more) != enc(prefix + more)  # the case this test is about
    (row,), _ = pair_rows(tok, [pair], style="compact", max_prompt_tokens=512, max_answer_tokens=96)
    conversation = enc(pair_texts(pair, tok)["prompt"][: -len(prefix)])
    assert row["prompt_ids"][: len(conversation)] == conversation
    shared = row["prompt_ids"][len(conversation) :]
    assert shared + row["chosen_ids"] == enc(prefix + ")]" + eot)
    assert shared + row["rejected_ids"] == enc(prefix + more)
    assert row["chosen_ids"][0] != row["rejected_ids"][0]


# ---------------------------------------------------------------------------------------------- warm-up
@pytest.fixture(scope="module")
def warmup(tiny_model_dir, data_dir, tmp_path_factory):
    samples = list(generate(36, seed=0, split="train"))
    cfg = tiny_cfg(data_dir, warmup={"batch_size": 4, "lr": 3e-3}, data={"max_answer_tokens": 96})
    out = str(tmp_path_factory.mktemp("warmup"))
    return run_warmup(samples, model_dir=tiny_model_dir, out_dir=out, cfg=cfg)


def test_warmup_trains_the_buckets_in_order_and_lowers_the_loss(warmup):
    phases = warmup.summary["phases"]
    assert [p["name"] for p in phases] == ["easy", "medium", "hard"]
    assert phases[0]["first_step"] == 1
    for before, after in zip(phases, phases[1:], strict=False):
        assert after["first_step"] == before["last_step"] + 1
    assert phases[-1]["last_step"] == warmup.summary["global_steps"] == len(warmup.steps)
    tags = [s["phase"] for s in warmup.steps]
    assert tags == sorted(tags, key=["easy", "medium", "hard"].index)  # never back to an earlier bucket
    first, last = warmup.steps[0]["loss"], warmup.steps[-1]["loss"]
    assert last < first - 0.5, (first, last)
    assert warmup.trained_tokens > warmup.loss_tokens > 0
    assert_plain_hf_dir(warmup.model_dir)
    saved = json.loads((Path(warmup.model_dir) / "metrics.json").read_text())
    assert saved["summary"]["global_steps"] == warmup.summary["global_steps"]
    assert len(saved["steps"]) == len(warmup.steps)


def test_trained_checkpoint_loads_with_transformers_and_answers_differently(warmup, tiny_model_dir):
    sample = next(iter(generate(1, seed=7, split="heldout")))
    start, tok = load(tiny_model_dir)
    trained, trained_tok = load(warmup.model_dir)
    from itool_ray.prompts import render_prompt

    prompt = render_prompt(tok, sample.tools, sample.messages)
    assert trained_tok.get_vocab() == tok.get_vocab()
    assert greedy(trained, trained_tok, prompt, n=16) != greedy(start, tok, prompt, n=16)


# ---------------------------------------------------------------------------------------------- preference
def test_dpo_learns_to_prefer_the_chosen_argument_value(tiny_model_dir, data_dir, tmp_path):
    """Fixed seed; pairs prefer unit="celsius" after a shared prefix: the margin rises for every pair and
    the greedy answer flips from something else to celsius."""
    model, tok = load(tiny_model_dir)
    prompts = [pair_texts(p, tok)["prompt"] for p in PAIRS]
    assert not any(greedy(model, tok, p).startswith("celsius") for p in prompts)
    cfg = tiny_cfg(data_dir, train={"loss": "sigmoid", "lr": 3e-3, "batch_size": 4, "epochs": 3})

    result = run_preference(PAIRS, model_dir=tiny_model_dir, out_dir=str(tmp_path / "dpo"), cfg=cfg)

    before, after = margins(tiny_model_dir), margins(result.model_dir)
    assert all(a > b + 1.0 for a, b in zip(after, before, strict=True)), (before, after)
    trained, trained_tok = load(result.model_dir)
    assert all(greedy(trained, trained_tok, p).startswith("celsius") for p in prompts)
    assert result.summary["precompute_ref_log_probs"] is True
    assert result.steps[-1]["rewards/accuracies"] == 1.0
    assert result.steps[-1]["rewards/margins"] > 0
    assert_plain_hf_dir(result.model_dir)


def test_bf16_autocast_training_learns_like_fp32(tiny_model_dir, data_dir, tmp_path):
    """The quickstart trains with bf16 autocast (fp32 master weights): DPO still learns the preferred value,
    the step log says bf16, and the checkpoint is a plain fp32-loadable HF directory."""
    model, tok = load(tiny_model_dir)
    prompts = [pair_texts(p, tok)["prompt"] for p in PAIRS]
    cfg = tiny_cfg(
        data_dir,
        train={"loss": "sigmoid", "lr": 3e-3, "batch_size": 4, "epochs": 3},
        distributed={"precision": "bf16"},
    )
    result = run_preference(PAIRS, model_dir=tiny_model_dir, out_dir=str(tmp_path / "dpo-bf16"), cfg=cfg)
    assert result.summary["precision"] == "bf16"
    before, after = margins(tiny_model_dir), margins(result.model_dir)
    assert all(a > b + 1.0 for a, b in zip(after, before, strict=True)), (before, after)
    trained, trained_tok = load(result.model_dir)
    assert all(greedy(trained, trained_tok, p).startswith("celsius") for p in prompts)
    assert_plain_hf_dir(result.model_dir)


@pytest.mark.parametrize("native", [False, True])
def test_auto_precision_is_what_the_worker_runs_natively(
    tiny_model_dir, data_dir, tmp_path, monkeypatch, native
):
    """``distributed.precision: auto`` is resolved where training runs (here: in the driver process)."""
    from itool_ray import precision

    monkeypatch.setattr(precision, "native_bf16", lambda *, on_gpu: native)
    cfg = tiny_cfg(data_dir, distributed={"precision": "auto"})
    result = run_sft(generate(16, seed=1), model_dir=tiny_model_dir, out_dir=str(tmp_path / "sft"), cfg=cfg)
    assert result.summary["precision"] == ("bf16" if native else "fp32")


def test_simpo_trains_without_a_reference_model(tiny_model_dir, data_dir, tmp_path):
    cfg = tiny_cfg(
        data_dir,
        train={"loss": "simpo", "beta": 2.5, "simpo_gamma": 0.5, "lr": 3e-3, "batch_size": 4, "epochs": 2},
    )

    result = run_preference(PAIRS, model_dir=tiny_model_dir, out_dir=str(tmp_path / "simpo"), cfg=cfg)

    assert result.summary["kind"] == "simpo" and result.summary["precompute_ref_log_probs"] is False
    assert result.steps[-1]["loss"] < result.steps[0]["loss"]
    assert result.steps[-1]["rewards/margins"] > result.steps[0]["rewards/margins"]
    assert sum(margins(result.model_dir)) > sum(margins(tiny_model_dir))
    assert_plain_hf_dir(result.model_dir)


def test_lora_adapter_is_merged_into_a_full_checkpoint(tiny_model_dir, data_dir, tmp_path):
    cfg = tiny_cfg(
        data_dir,
        train={"lr": 1e-2, "batch_size": 4, "epochs": 1, "lora": {"enabled": True, "r": 4, "alpha": 8}},
    )

    result = run_preference(PAIRS, model_dir=tiny_model_dir, out_dir=str(tmp_path / "lora"), cfg=cfg)

    assert_plain_hf_dir(result.model_dir)
    model, _ = load(result.model_dir)
    assert not any("lora" in name for name in model.state_dict())
    assert weights_differ(tiny_model_dir, result.model_dir)
    assert result.summary["lora"] is True


# ---------------------------------------------------------------------------------------------- two workers
def test_dpo_zero2_two_workers_resume_after_a_worker_failure(
    ray_session, tiny_model_dir, data_dir, tmp_path, monkeypatch
):
    """Both workers raise once after the step-1 checkpoint; FailureConfig restarts the group, which
    resumes from that checkpoint instead of starting over."""
    monkeypatch.setenv(CRASH_AFTER_STEP_ENV, "1")
    cfg = tiny_cfg(
        data_dir,
        distributed={"num_workers": 2, "zero_stage": 2, "max_failures": 1},
        train={"lr": 3e-3, "batch_size": 2, "epochs": 1},
    )

    result = run_preference(
        PAIRS, model_dir=tiny_model_dir, out_dir=str(tmp_path / "z2"), cfg=cfg, checkpoint_every_steps=1
    )

    assert result.summary["world_size"] == 2 and result.summary["zero_stage"] == 2
    assert result.summary["resumed_from_step"] == 1
    assert [s["step"] for s in result.steps] == [1, 2]  # step 1 not trained twice
    assert_plain_hf_dir(result.model_dir)
    assert weights_differ(tiny_model_dir, result.model_dir)


@pytest.mark.parametrize("precompute", [False, True], ids=["implicit-reference", "precomputed-reference"])
def test_dpo_zero3_two_workers(ray_session, tiny_model_dir, data_dir, tmp_path, precompute):
    """implicit-reference: TRL builds the reference model itself under zero.Init — without
    deepspeed.init_distributed at the top of the train function this fails (see the next test).
    precomputed-reference: TRL's precompute engine must not leave its ZeRO-3 hooks behind."""
    cfg = tiny_cfg(
        data_dir,
        distributed={"num_workers": 2, "zero_stage": 3, "max_failures": 0},  # a retry would hide a failure
        train={"lr": 3e-3, "batch_size": 2, "epochs": 2, "precompute_ref_log_probs": precompute},
    )

    result = run_preference(PAIRS, model_dir=tiny_model_dir, out_dir=str(tmp_path / "z3"), cfg=cfg)

    assert result.summary["zero_stage"] == 3 and result.summary["precompute_ref_log_probs"] is precompute
    assert result.steps[-1]["rewards/margins"] > 0
    assert_plain_hf_dir(result.model_dir)
    assert weights_differ(tiny_model_dir, result.model_dir)  # gathered, full-size weights


def _zero3_load(config: dict) -> dict:
    """In each of two workers: load a model under the ZeRO-3 config without, then with, the fix."""
    import tempfile

    from transformers import AutoModelForCausalLM
    from trl import DPOConfig

    from itool_ray.config import DistributedConfig
    from itool_ray.train.deepspeed import GRADIENT_CLIPPING, build_deepspeed_config, init_deepspeed_comm

    ds = build_deepspeed_config(
        DistributedConfig(num_workers=2, zero_stage=3), micro_batch_size=2, grad_accum=1, world_size=2
    )
    # Keep a reference: the HF integration holds the ZeRO-3 config weakly, and while it lives
    # from_pretrained builds every model under zero.Init.
    args = DPOConfig(
        output_dir=tempfile.mkdtemp(),
        deepspeed=ds,
        per_device_train_batch_size=2,
        max_grad_norm=GRADIENT_CLIPPING,
        use_cpu=True,
        bf16=False,
        report_to="none",
    )
    try:
        AutoModelForCausalLM.from_pretrained(config["model_dir"])
        without = "loaded"
    except AssertionError as e:
        without = str(e)
    init_deepspeed_comm(use_gpu=False)
    model = AutoModelForCausalLM.from_pretrained(config["model_dir"])
    partitioned = all(hasattr(p, "ds_id") for p in model.parameters())
    del args
    return {"without_fix": without, "partitioned": partitioned}


def test_zero3_model_build_needs_deepspeed_comm_initialised(ray_session, tiny_model_dir, tmp_path):
    """The failure the fix addresses, and the fix, in one two-worker run."""
    import ray.cloudpickle
    from ray.train import RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])  # workers cannot import this test module
    trainer = TorchTrainer(
        _zero3_load,
        train_loop_config={"model_dir": tiny_model_dir},
        scaling_config=ScalingConfig(num_workers=2, resources_per_worker={"CPU": 1}),
        run_config=RunConfig(storage_path=str(tmp_path)),
    )
    out = trainer.fit().return_value
    assert (
        "train_batch_size is not equal to micro_batch_per_gpu * gradient_acc_step * world_size"
        in out["without_fix"]
    )
    assert out["partitioned"] is True


def test_in_process_mode_refuses_deepspeed(tiny_model_dir, data_dir, tmp_path):
    from itool_ray.train import TrainError

    cfg = tiny_cfg(data_dir, distributed={"num_workers": 0, "zero_stage": 2})
    with pytest.raises(TrainError, match="zero_stage: 0"):
        run_preference(PAIRS, model_dir=tiny_model_dir, out_dir=str(tmp_path / "x"), cfg=cfg)
    assert not os.path.exists(tmp_path / "x" / STATE_DIR)


# ---------------------------------------------------------------------------------------------- full disk
def test_a_full_disk_during_the_export_is_one_line_naming_where_and_leaves_no_model(
    tiny_model_dir, data_dir, tmp_path
):
    """The child process runs DPO under RLIMIT_FSIZE (SIGXFSZ ignored): saving the weights fails in the kernel
    with EFBIG as on a full disk. The error is a TrainError naming the scratch directory; the output
    directory holds no model file, whole or partial."""
    import textwrap

    out = tmp_path / "dpo"
    script = textwrap.dedent(
        f"""
        import resource, signal, sys
        sys.path[:0] = [{str(Path(__file__).parent)!r}, {str(Path(__file__).parents[1])!r}]
        import ray
        ray.init(num_cpus=1, include_dashboard=False, log_to_driver=False)
        from test_train import PAIRS, tiny_cfg
        from itool_ray.train import run_preference
        from itool_ray.train import TrainError
        cfg = tiny_cfg({data_dir!r}, train={{"epochs": 1, "batch_size": 8}})
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (400_000, 400_000))
        try:
            run_preference(PAIRS, model_dir={tiny_model_dir!r}, out_dir={str(out)!r}, cfg=cfg)
        except TrainError as e:
            print("ERROR", e)
        """
    )
    proc = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=600, cwd=tmp_path
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    errors = [line for line in proc.stdout.splitlines() if line.startswith("ERROR ")]
    assert len(errors) == 1, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "dpo: cannot write the exported model to " in errors[0], errors[0]
    assert "this node's scratch space): File too large" in errors[0], errors[0]
    left = sorted(p.name for p in out.rglob("*") if p.is_file()) if out.exists() else []
    assert not [n for n in left if n.endswith(".safetensors") or n == "config.json"], left


def test_a_workers_own_error_reaches_the_driver_as_one_line_and_a_bug_keeps_its_traceback():
    """With several workers Ray Train wraps what a worker raised; the driver unwraps the project's errors."""
    from ray.exceptions import RayTaskError
    from ray.train import WorkerGroupError
    from ray.train.v2._internal.exceptions import UserExceptionWithTraceback

    from itool_ray.storage import StorageError
    from itool_ray.train import TrainError
    from itool_ray.train.ray_train import worker_user_error

    full = TrainError("dpo: cannot write the exported model to /scratch/export: No space left on device")
    wrapped = WorkerGroupError(
        "rank 0 failed", {1: ValueError("x"), 0: UserExceptionWithTraceback(full, "tb")}
    )
    assert worker_user_error(wrapped) is full
    task = RayTaskError("fn", "traceback text", StorageError("cannot write s3://b/run/warmup: Access Denied"))
    found = worker_user_error(WorkerGroupError("m", {0: task}))
    assert isinstance(found, TrainError) and str(found) == "cannot write s3://b/run/warmup: Access Denied"
    bug = WorkerGroupError("m", {0: UserExceptionWithTraceback(ValueError("a bug"), "tb")})
    assert worker_user_error(bug) is None
