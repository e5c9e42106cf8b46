"""The ``itool`` command: run | warmup | iterate | compare | eval | serve | data | model | config.

Config-driven subcommands take ``--config PRESET_OR_FILE`` plus dotted overrides such as
``--mcts.num_children 4`` or ``--train.lr=1e-6``.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys

from itool_ray import logs
from itool_ray.config import PRESETS, Config, ConfigError, load_config

EXIT_USAGE = 2  # bad config, bad input, bad flags
EXIT_FAILURE = 1  # the environment failed: disk full, unwritable path
EXIT_TERMINATED = 128 + signal.SIGTERM  # SIGTERM (ray job stop): what a shell reports for it


def _config_parent() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(add_help=False)
    p.add_argument(
        "--config",
        "--preset",
        dest="config",
        default="quickstart",
        help=f"a preset ({', '.join(PRESETS)}) or a YAML file (default: quickstart)",
    )
    return p


def _parser() -> argparse.ArgumentParser:
    cfgp = _config_parent()
    p = argparse.ArgumentParser(prog="itool", description="iTool on Ray: make LLMs better at tool use.")
    p.add_argument(
        "-v",
        "--verbose",
        action="store_true",
        help="library logs on the console too (they always go to <run>/logs/itool.log)",
    )
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    r = sub.add_parser(
        "run", parents=[cfgp], help="the whole loop: warm-up → iterations → report (resumable)"
    )
    r.add_argument("--restart-from", metavar="STAGE", help="redo this stage and every stage after it")

    sub.add_parser("warmup", parents=[cfgp], help="easy→hard warm-up SFT alone")
    cmp_ = sub.add_parser(
        "compare",
        parents=[cfgp],
        help="ablations sharing one run's warm-up and mining, with paired intervals",
    )
    cmp_.add_argument(
        "--variants",
        default=None,
        help="YAML: variant name -> {section: {key: value}} (default: no_mcts, response_level)",
    )
    it = sub.add_parser("iterate", parents=[cfgp], help="one stage of an iteration alone")
    it.add_argument("--stage", choices=["mine", "search", "pairs", "train"], required=True)
    it.add_argument(
        "--iteration",
        type=int,
        default=1,
        help="redo this stage of iteration N (earlier stages run if missing)",
    )

    ev = sub.add_parser("eval", parents=[cfgp], help="evaluate a checkpoint on held-out samples or BFCL")
    ev.add_argument(
        "--model", required=True, help="a checkpoint directory or URI (a run's <policy>/ckpt), or a hub id"
    )
    ev.add_argument(
        "--data", required=True, help="a Samples file/spec, or bfcl:CATEGORIES (e.g. bfcl:simple,multiple)"
    )
    ev.add_argument("--limit", type=int, help="at most this many samples (per category for bfcl:)")
    ev.add_argument("--out", help="write per-sample results and accuracies as JSON")

    sv = sub.add_parser(
        "serve", parents=[cfgp], help="OpenAI-compatible endpoint for a checkpoint (Ray Serve)"
    )
    sv.add_argument(
        "--model", required=True, help="checkpoint directory, a run's checkpoint URI, or a hub id"
    )

    data = sub.add_parser("data", help="synthesise, check and convert tool-use data")
    dsub = data.add_subparsers(dest="data_command", required=True, metavar="ACTION")
    syn = dsub.add_parser("synth", help="generate synthetic samples (deterministic by seed)")
    syn.add_argument("--n", type=int, required=True)
    syn.add_argument("--out", required=True, help=".jsonl or .parquet")
    syn.add_argument("--seed", type=int, default=0)
    syn.add_argument("--split", choices=["train", "dev", "heldout"], default="train")
    syn.add_argument(
        "--tools",
        choices=["fixed", "procedural", "mixed"],
        default="fixed",
        help="tool catalogue: hand-written, procedural (40 domains; dev split only here) or both",
    )
    syn.add_argument("--categories", help="comma-separated subset (default: all)")
    chk = dsub.add_parser("check", help="load a dataset and report malformed records")
    chk.add_argument("spec", help="FILE.jsonl|.json|.parquet, toolace:PATH, xlam:PATH, bfcl:CATS, hf:ID")
    chk.add_argument("--strict", action="store_true", help="stop at the first malformed record")
    cv = dsub.add_parser("convert", help="load a dataset and write it as Samples")
    cv.add_argument("spec")
    cv.add_argument("--out", required=True)
    cv.add_argument("--strict", action="store_true")
    cv.add_argument("--limit", type=int)

    model = sub.add_parser("model", help="prepare models")
    msub = model.add_subparsers(dest="model_command", required=True, metavar="ACTION")
    imp = msub.add_parser(
        "import-embedded", help="convert the embedded SmolLM2-135M-Instruct GGUF to a HF directory"
    )
    imp.add_argument("--data-dir", default=None, help="cache directory (default: run.data_dir of the config)")
    tiny = msub.add_parser("tiny", help="build the tiny random test model")
    tiny.add_argument("--data-dir", default=None)

    c = sub.add_parser("config", help="show the resolved config")
    csub = c.add_subparsers(dest="config_command", required=True, metavar="ACTION")
    csub.add_parser("show", parents=[cfgp], help="print the resolved config as YAML")
    return p


def _cmd_data(args: argparse.Namespace) -> int:
    from itool_ray.data.io import write_samples

    if args.data_command == "synth":
        from itool_ray.data.synth import generate

        cats = args.categories.split(",") if args.categories else None
        try:
            samples = generate(args.n, seed=args.seed, split=args.split, categories=cats, tools=args.tools)
        except ValueError as e:
            raise ConfigError(f"data synth: {e}") from None
        write_samples(samples, args.out)
        print(f"wrote {len(samples)} {args.split} samples to {args.out}")
        return 0
    from itool_ray.data.loaders import load_samples

    samples, report = load_samples(args.spec, strict=args.strict, limit=getattr(args, "limit", None))
    print(report.summary())
    if args.data_command == "convert":
        write_samples(samples, args.out)
        print(f"wrote {len(samples)} samples to {args.out}")
    return 0 if samples or report.n_read == 0 else 1


def _cmd_model(args: argparse.Namespace, cfg: Config) -> int:
    from itool_ray.models import import_embedded, resolve_model

    data_dir = args.data_dir or cfg.run.data_dir
    if args.model_command == "import-embedded":
        print(import_embedded(data_dir))
    else:
        print(resolve_model("tiny", data_dir=data_dir))
    return 0


def _cmd_eval(args: argparse.Namespace, cfg: Config) -> int:
    import json

    from itool_ray.driver.report import results_table
    from itool_ray.engines import make_engine
    from itool_ray.models import load_tokenizer, resolve_model

    model_dir = resolve_model(args.model, data_dir=cfg.run.data_dir)
    tokenizer = load_tokenizer(model_dir, data_dir=cfg.run.data_dir)
    if not logs.verbose():
        # An in-process vLLM logs through our root logger (its INFO lines, the engine configuration among
        # them, stay off the console) instead of installing its own console handler.
        os.environ.setdefault("VLLM_CONFIGURE_LOGGING", "0")
    engine = make_engine(cfg.engine.kind, model_dir, cfg.engine, dtype=cfg.model.dtype, seed=cfg.run.seed)
    try:
        if args.data.startswith("bfcl:"):
            from itool_ray.eval.bfcl import evaluate_bfcl

            with logs.progress_bar(None, "eval: BFCL") as bar:
                res = evaluate_bfcl(
                    args.data[5:].split(","),
                    engine,
                    tokenizer,
                    max_tokens=cfg.eval.max_tokens,
                    batch_size=cfg.eval.batch_size,
                    limit=args.limit,
                    progress=bar.update,
                    max_model_len=cfg.engine.max_model_len,
                )
        else:
            from itool_ray.data.loaders import load_samples
            from itool_ray.eval.heldout import evaluate_samples

            samples, report = load_samples(args.data, strict=cfg.data.strict, limit=args.limit)
            print(report.summary())
            with logs.progress_bar(len(samples), "eval: samples") as bar:
                res = evaluate_samples(
                    samples,
                    engine,
                    tokenizer,
                    style=cfg.data.prompt_style,
                    max_tokens=cfg.eval.max_tokens,
                    batch_size=cfg.eval.batch_size,
                    progress=bar.update,
                    max_model_len=cfg.engine.max_model_len,
                )
    finally:
        engine.close()
    print(results_table({"accuracy": res.accuracy}))
    if res.too_long:
        print(
            f"{res.too_long} of {res.counts['overall']} prompts were longer than the context "
            f"(engine.max_model_len {cfg.engine.max_model_len}) and count as wrong"
        )
    if args.out:
        with open(args.out, "w") as f:
            json.dump(res.to_dict(with_records=True), f, indent=2)
        print(f"wrote {args.out}")
    return 0


def _cmd_serve(args: argparse.Namespace, cfg: Config) -> int:
    from actors.serve_app import serve_forever
    from itool_ray.driver.pipeline import init_ray
    from itool_ray.models import resolve_model

    init_ray()
    serve_forever(resolve_model(args.model, data_dir=cfg.run.data_dir), cfg)
    return 0


def main(argv: list[str] | None = None) -> int:
    args, rest = _parser().parse_known_args(argv)
    logs.setup_console(args.verbose)
    from itool_ray.data.io import DatasetError
    from itool_ray.driver.compare import CompareError
    from itool_ray.driver.pipeline import PlanError, StageFailed, Terminated, as_terminated
    from itool_ray.driver.rundir import WARMUP, RunDirError, RunLayout
    from itool_ray.models import ModelError

    try:
        if rest and not hasattr(args, "config"):
            raise ConfigError(f"unexpected arguments: {' '.join(rest)}")
        cfg = load_config(getattr(args, "config", "quickstart"), rest)
        if args.command == "config":
            print(cfg.to_yaml(), end="")
            return 0
        if args.command == "data":
            return _cmd_data(args)
        if args.command == "model":
            return _cmd_model(args, cfg)
        if args.command in ("run", "warmup"):
            from itool_ray.driver.pipeline import run_pipeline
            from itool_ray.driver.report import (
                collect_results,
                cost_table,
                intervals_table,
                results_table,
                stage_rows,
            )

            until = RunLayout.eval_stage(WARMUP) if args.command == "warmup" else None
            run = run_pipeline(cfg, restart_from=getattr(args, "restart_from", None), until=until)
            results = collect_results(run, cfg)
            if stage_rows(results):
                print("\nHeld-out accuracy (BFCL-exact):\n" + results_table(results))
            if results.get("bfcl"):
                print("\nBFCL (its data and AST checker):\n" + results_table(results["bfcl"]))
            for bench, ivs in results.get("intervals", {}).items():
                name = "BFCL" if bench == "bfcl" else "held-out"
                print(f"\nPaired differences, {name} (points, 95% interval; * excludes zero):\n")
                print(intervals_table(ivs))
            cost = cost_table(run.manifest()["stages"], cfg)
            if cost:
                print("\nTraining cost (the iterations' extra columns: what the method spends beyond SFT):\n")
                print(cost)
            print(f"\nrun directory: {run.uri}  (wall time {results['wall_s'] / 60:.1f} min)")
            return 0
        if args.command == "iterate":
            from itool_ray.driver.pipeline import run_pipeline

            run = run_pipeline(cfg, until=RunLayout.step(args.iteration, args.stage), redo=True)
            print(f"run directory: {run.uri}")
            return 0
        if args.command == "compare":
            from itool_ray.driver.compare import comparison_table, load_variants, run_compare

            out = run_compare(cfg, load_variants(args.variants))
            print("\n" + comparison_table(out))
            print(f"\nwritten to {cfg.run.dir}/{RunLayout.COMPARE_RESULTS}, {RunLayout.COMPARE_TABLE}")
            return 0
        if args.command == "eval":
            return _cmd_eval(args, cfg)
        if args.command == "serve":
            return _cmd_serve(args, cfg)
    except ConfigError as e:
        print(f"itool: {e}", file=sys.stderr)
        return EXIT_USAGE
    except (
        DatasetError,
        RunDirError,
        FileNotFoundError,
        StageFailed,
        PlanError,
        ModelError,
        CompareError,
    ) as e:
        print(f"itool: {e}", file=sys.stderr)
        return EXIT_USAGE
    except OSError as e:  # a full disk or an unwritable path outside the run directory's own writes
        print(f"itool: {e}", file=sys.stderr)
        return EXIT_FAILURE
    except KeyboardInterrupt as e:  # Ctrl-C, or SIGTERM (`ray job stop`): see pipeline.as_terminated
        if isinstance(as_terminated(e), Terminated):
            print(
                "itool: stopped (SIGTERM); completed stages are kept: re-run the same command to resume",
                file=sys.stderr,
            )
            return EXIT_TERMINATED
        print("itool: interrupted; re-run the same command to resume", file=sys.stderr)
        return 130
    return EXIT_USAGE


if __name__ == "__main__":
    sys.exit(main())
