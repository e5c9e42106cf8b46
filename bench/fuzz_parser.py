"""Fuzz the tool-call parser, the step segmenter and the reward with hostile model output.

Every input goes through ``parse`` (plain and with non-identifier ``tool_names``), ``segment`` (unfinished
and complete), ``first_step`` and ``reward.match`` against one of four fixed samples, and is checked for:

- ``exception``: anything but ToolCallParseError from parse, anything at all from the others;
- ``event``: an audit event other than ``compile`` (an import, open, exec, subprocess ... would show here);
- ``invariant``: parse output that is not JSON-like or does not round-trip through format_calls; steps that
  do not tile the text or that a prefix of the text splits differently; a first_step that is not a prefix
  of the continuation; a score outside [0, 1] or 1.0 without ``exact``;
- ``warnings``: a parse outcome that changes when warnings are errors (the module says it must not);
- ``slow``: a parse slower than ``--slow-ms`` of CPU time (re-measured twice, so noise is not reported).

Engines: ``atheris`` (coverage-guided libFuzzer over this module's code) when it is installed, else
``mutate``: a mutation fuzzer seeded from bench/fuzz_corpus/ that keeps inputs with a new outcome (a poor
man's coverage). Findings are saved under ``--out``/findings as UTF-8 text (surrogates kept); rerun them
with ``--reproduce``. Prints inputs tried, findings per kind, the longest parse and peak memory.

    python bench/fuzz_parser.py --seconds 600 [--inputs N] [--engine auto|atheris|mutate] [--seed 0]
    python bench/fuzz_parser.py --reproduce runs/fuzz-parser/findings/*.txt
"""

from __future__ import annotations

import argparse
import faulthandler
import hashlib
import math
import os
import random
import resource
import sys
import time
import traceback
import warnings
import zlib
from pathlib import Path
from typing import Any

CORPUS = Path(__file__).with_name("fuzz_corpus")
# What parsing may raise: ast.parse's "compile", reward's id() of its sample cache, and the import of
# unicodedata by CPython's parser (it NFKC-normalises non-ASCII identifiers). Anything else is a finding.
ALLOWED_EVENTS = frozenset({"compile", "builtins.id"})
ALLOWED_IMPORTS = frozenset({"unicodedata"})
KEEP_PER_SIGNATURE = 3  # findings saved per distinct (kind, reason); all are counted

# Set after the engine has (maybe) instrumented the imports; see _import_targets.
toolcall: Any = None
reward: Any = None

ODD_NAMES = ["Get Weather Forecast", "get-time", "Book Flight"]
SAMPLES: list[dict[str, Any]] = [
    {  # plain names, defaults, two expected calls
        "tools": [
            {
                "name": "get_weather",
                "parameters": {
                    "type": "dict",
                    "properties": {
                        "city": {"type": "string"},
                        "unit": {"type": "string", "default": "celsius"},
                        "days": {"type": "integer"},
                    },
                    "required": ["city"],
                },
            },
            {
                "name": "get_time",
                "parameters": {"type": "dict", "properties": {"tz": {"type": "string"}}, "required": ["tz"]},
            },
        ],
        "answer": [
            {"name": "get_weather", "arguments": {"city": "Paris", "days": 3}},
            {"name": "get_time", "arguments": {"tz": "CET"}},
        ],
    },
    {  # ToolACE names with spaces: parse goes through the placeholder path
        "tools": [
            {
                "name": name,
                "parameters": {
                    "type": "dict",
                    "properties": {"city": {"type": "string"}, "days": {"type": "integer"}},
                    "required": ["city"],
                },
            }
            for name in ODD_NAMES
        ],
        "answer": [{"name": "Get Weather Forecast", "arguments": {"city": "Paris", "days": 3}}],
    },
    {  # BFCL possible answers: dicts, lists of dicts, floats, tuples, optional arguments
        "tools": [
            {
                "name": "geo.area",
                "parameters": {
                    "type": "dict",
                    "properties": {
                        "shape": {"type": "dict", "properties": {"kind": {"type": "string"}}},
                        "points": {"type": "array", "items": {"type": "dict"}},
                        "scale": {"type": "float"},
                        "pair": {"type": "tuple", "items": {"type": "integer"}},
                        "exact": {"type": "boolean"},
                    },
                    "required": ["shape", "scale"],
                },
            }
        ],
        "answer": [{"name": "geo.area", "arguments": {"shape": {"kind": "circle"}, "scale": 2.0}}],
        "accepted": [
            {
                "name": "geo.area",
                "arguments": {
                    "shape": [{"kind": ["circle", "disc"], "r": ["", 1]}],
                    "points": [[{"x": [0], "y": [0]}], ""],
                    "scale": [2.0, 2],
                    "pair": [[1, 2], ""],
                    "exact": [True, ""],
                },
            }
        ],
    },
    {"tools": [{"name": "get_time", "parameters": {"type": "dict", "properties": {}}}], "answer": []},
]

# Tokens the mutation engine inserts (and atheris gets as a dictionary): grammar, hostile code, unicode tricks.
TOKENS = [
    "[", "]", "(", ")", "{", "}", ",", "=", ":", ".", "-", "'", '"', "'''", '"""', "\\", "\n", " ", "#",
    "f(", "g(a=", "x=1", "a=", "True", "None", "1e999", "0x", "1_0", "-0.0", "1j", "...", "**", "*",
    "from=", "class=", "lambda: ", "__import__('os')", ".system('id')", "open('/tmp/x', 'w')", "exec('1')",
    "eval", "globals()", "().__class__.__bases__", "(x:=1)", "[i for i in ()]", 'f"{x}"', "f'{1}'",
    "b'x'", "not ", " if 1 else ", "await ", "yield", "1if", "1if 1 else 2", "1or 2", "9" * 40, "Get Weather Forecast", "get-time(",
    "_itool_fn0_", "_itool_kw0_", "```", "\x00", "\ud800", "\udfff", "\u202e", "\u2066", "\u200b", "\ufeff",
    "\uff3b", "\uff08", "\uff41", "\uff46", "\u212b", "\u0661\u0662", "\uff11", "\u00e9", "e\u0301", "\r\n",
]  # fmt: skip
TRICKY_CHARS = "".join(t for t in TOKENS if len(t) == 1) + "\t\x0b\x0c\x1b\x7f\u00a0\u2028\u3000\U0001f600"


def _import_targets(engine: str) -> None:
    """Import toolcall and reward, instrumented for coverage when atheris drives the run."""
    global toolcall, reward
    if engine == "atheris":
        import atheris

        with atheris.instrument_imports(include=["itool_ray.toolcall", "itool_ray.reward"]):
            import itool_ray.reward
            import itool_ray.toolcall
    else:
        import itool_ray.reward
        import itool_ray.toolcall
    toolcall, reward = itool_ray.toolcall, itool_ray.reward


# ---------------------------------------------------------------------------------------------------
# The checks
# ---------------------------------------------------------------------------------------------------

_audit = {"on": False, "events": []}


def _audit_hook(event: str, args: tuple) -> None:
    if _audit["on"] and event not in ALLOWED_EVENTS:
        if event == "import" and args[0] in ALLOWED_IMPORTS:
            return
        _audit["events"].append(event if event != "import" else f"import {args[0]}")


def _json_like(v: Any, depth: int = 0) -> bool:
    t = type(v)
    if t is str or t is bool or v is None:
        return True
    if t is int:
        return v.bit_length() <= toolcall.MAX_INT_BITS
    if t is float:
        return math.isfinite(v)
    if t is list or t is tuple:
        return depth < 64 and all(_json_like(x, depth + 1) for x in v)
    if t is dict:
        return (
            depth < 64
            and all(type(k) in (str, int, float, bool) or k is None for k in v)
            and all(_json_like(x, depth + 1) for x in v.values())
        )
    return False


def _parse_outcome(text: str, tool_names: list[str] | None) -> Any:
    try:
        return toolcall.parse(text, tool_names=tool_names)
    except toolcall.ToolCallParseError as e:
        return ("error", e.looks_like_call)


def _cut(text: str, salt: int) -> int:
    """A position in the text that depends on the text only (``hash`` is salted per process)."""
    return (zlib.crc32(text.encode("utf-8", "surrogatepass")) + salt) % (len(text) + 1)


def check(text: str) -> tuple[list[tuple[str, str]], str, float]:
    """Problems found as (kind, reason), an outcome signature (for the mutation engine), and the CPU
    seconds of the slower parse (plain or with tool names)."""
    problems: list[tuple[str, str]] = []
    _audit["events"].clear()
    _audit["on"] = True
    calls: Any = None
    try:
        t0 = time.process_time()
        try:
            calls = default = toolcall.parse(text)
            outcome = f"ok{len(calls)}"
        except toolcall.ToolCallParseError as e:
            default = ("error", e.looks_like_call)
            outcome = f"err:{e.looks_like_call}:{e.reason[:24]}"
        parse_cpu = time.process_time() - t0
        if calls is not None:
            if not all(
                type(c) is toolcall.FunctionCall
                and type(c.name) is str
                and all(type(k) is str for k in c.arguments)
                and _json_like(c.arguments)
                for c in calls
            ):
                problems.append(("invariant", "parse returned something that is not JSON-like calls"))
            else:
                try:
                    if toolcall.parse(toolcall.format_calls(calls)) != calls:
                        problems.append(("invariant", "parse(format_calls(parse(text))) != parse(text)"))
                except ValueError as e:
                    problems.append(("invariant", f"parsed calls do not round-trip: {e}"))
        t0 = time.process_time()
        named = _parse_outcome(text, ODD_NAMES)
        parse_cpu = max(parse_cpu, time.process_time() - t0)
        if (
            named is not None
            and type(named) is not tuple
            and not all(type(c) is toolcall.FunctionCall for c in named)
        ):
            problems.append(("invariant", "parse(tool_names=...) returned something that is not calls"))
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            strict = _parse_outcome(text, None)
        if strict != default:
            problems.append(("warnings", "parse outcome changes when warnings are errors"))

        done = toolcall.segment(text, complete=True)
        part = toolcall.segment(text, complete=False)
        problems += _check_segmentation(text, done, part)
        kinds = "".join(s.kind[0] for s in done.steps[:8])

        k = _cut(text, 1) % (len(part.steps) + 1)
        prefix = "".join(s.text for s in part.steps[:k])
        rest = text[len(prefix) :]
        for complete in (False, True):
            r = toolcall.first_step(prefix, rest, complete=complete)
            if r is None:
                if complete:
                    problems.append(("invariant", "first_step returned None on a complete answer"))
            elif not (
                type(r) is tuple and type(r[0]) is str and type(r[1]) is bool and rest.startswith(r[0])
            ):
                problems.append(("invariant", f"first_step gave {r!r}, not a prefix of the continuation"))
            elif r[0] == "" and not r[1]:
                problems.append(("invariant", "first_step gave an empty step that does not end the answer"))

        sample = SAMPLES[_cut(text, 2) % len(SAMPLES)]
        m = reward.match(text, sample)
        if not (
            type(m) is reward.MatchResult
            and type(m.score) is float
            and 0.0 <= m.score <= 1.0
            and (m.score == 1.0) == m.exact
            and (m.error is None) == m.exact
        ):
            problems.append(("invariant", f"match gave {m!r}"))
    except toolcall.ToolCallParseError as e:
        problems.append(("exception", f"ToolCallParseError outside parse: {e}"))
        outcome, kinds, parse_cpu = "x", "", 0.0
    except Exception as e:  # noqa: BLE001 -- every exception here is a finding
        tb = traceback.extract_tb(e.__traceback__)[-1]
        problems.append(
            ("exception", f"{type(e).__name__} at {Path(tb.filename).name}:{tb.lineno}: {e}"[:300])
        )
        outcome, kinds, parse_cpu = "x", "", 0.0
    finally:
        _audit["on"] = False
    if _audit["events"]:
        problems.append(("event", f"audit events while parsing: {sorted(set(_audit['events']))}"))
    return problems, f"{outcome}|{kinds}", parse_cpu


def _check_segmentation(text: str, done: Any, part: Any) -> list[tuple[str, str]]:
    out = []
    for seg, complete in ((done, True), (part, False)):
        pos = 0
        for s in seg.steps:
            if s.start != pos or s.end <= s.start or s.text != text[s.start : s.end]:
                out.append(("invariant", f"steps do not tile the text (complete={complete}) at {pos}"))
                break
            if s.kind not in ("open", "arg", "close", "text"):
                out.append(("invariant", f"unknown step kind {s.kind!r}"))
            pos = s.end
        if text[pos:] != seg.rest or (complete and seg.rest):
            out.append(("invariant", f"rest is not the text after the last step (complete={complete})"))
        ends = [i for i, s in enumerate(seg.steps) if s.ends_answer]
        if ends and (len(seg.steps) - ends[0] > 2 or any(s.kind != "text" for s in seg.steps[ends[0] + 1 :])):
            out.append(("invariant", "steps after the one that ends the answer"))
    if part.steps != done.steps[: len(part.steps)]:
        out.append(("invariant", "steps of the unfinished text are not a prefix of the complete ones"))
    cut = _cut(text, 3)
    head = toolcall.segment(text[:cut])
    if head.steps != done.steps[: len(head.steps)]:
        out.append(("invariant", f"steps of text[:{cut}] are not a prefix of the steps of the text"))
    return out


# ---------------------------------------------------------------------------------------------------
# Bookkeeping shared by the engines
# ---------------------------------------------------------------------------------------------------


class Run:
    def __init__(self, out: Path, inputs: int, seconds: float, slow_ms: float, engine: str):
        self.findings_dir = out / "findings"
        self.findings_dir.mkdir(parents=True, exist_ok=True)
        self.inputs, self.seconds, self.slow = inputs, seconds, slow_ms / 1000
        self.engine = engine
        self.tried = 0
        self.chars = 0
        self.counts: dict[str, int] = {}
        self.signatures: dict[tuple[str, str], int] = {}
        self.max_parse = (0.0, 0)
        self.start = time.perf_counter()
        self.cpu0 = time.process_time()
        self.next_progress = self.start + 60

    def done(self) -> bool:
        return self.tried >= self.inputs or time.perf_counter() - self.start >= self.seconds

    def one(self, text: str) -> str:
        """Check one input, record what it found; returns its outcome signature."""
        self.tried += 1
        self.chars += len(text)
        problems, outcome, cpu = check(text)
        if cpu > self.slow:  # re-measure: a scheduler hiccup or a GC pause is not a finding
            cpu = min(cpu, *(_parse_cpu(text) for _ in range(2)))
            if cpu > self.slow:
                problems.append(("slow", f"parse took {cpu * 1000:.0f} ms CPU for {len(text)} characters"))
        if cpu > self.max_parse[0]:
            self.max_parse = (cpu, len(text))
            _save(self.findings_dir.parent / "slowest.txt", text)
        for kind, reason in problems:
            self.counts[kind] = self.counts.get(kind, 0) + 1
            n = self.signatures[kind, reason] = self.signatures.get((kind, reason), 0) + 1
            if n <= KEEP_PER_SIGNATURE:
                digest = hashlib.sha1(text.encode("utf-8", "surrogatepass")).hexdigest()[:12]
                _save(self.findings_dir / f"{kind}-{digest}.txt", text)
                print(f"FINDING {kind}: {reason}  -> {kind}-{digest}.txt", flush=True)
        now = time.perf_counter()
        if now >= self.next_progress:
            self.next_progress = now + 60
            print(
                f"  {self.tried:,} inputs, {self.tried / (now - self.start):,.0f}/s, {self.counts}",
                flush=True,
            )
        return outcome

    def report(self) -> None:
        wall = time.perf_counter() - self.start
        cpu = time.process_time() - self.cpu0
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        print(f"engine: {self.engine}")
        print(
            f"inputs tried: {self.tried:,} in {wall:,.0f} s wall / {cpu:,.0f} s CPU "
            f"({self.tried / max(wall, 1e-9):,.0f}/s wall, {self.tried / max(cpu, 1e-9):,.0f}/s CPU), "
            f"mean {self.chars / max(self.tried, 1):,.0f} characters"
        )
        print(f"findings: {sum(self.counts.values())} {self.counts or ''} ({len(self.signatures)} distinct)")
        for (kind, reason), n in sorted(self.signatures.items()):
            print(f"  {n:>7} x {kind}: {reason}")
        print(f"longest parse: {self.max_parse[0] * 1000:.1f} ms CPU ({self.max_parse[1]} characters)")
        print(f"peak memory (max RSS): {peak:,.0f} MiB")
        print(f"saved under: {self.findings_dir}")


def _parse_cpu(text: str) -> float:
    """CPU seconds of the slower of parse(text) and parse(text, tool_names=ODD_NAMES)."""
    slowest = 0.0
    for names in (None, ODD_NAMES):
        t0 = time.process_time()
        _parse_outcome(text, names)
        slowest = max(slowest, time.process_time() - t0)
    return slowest


def _save(path: Path, text: str) -> None:
    path.write_bytes(text.encode("utf-8", "surrogatepass"))


def _load(path: Path) -> str:
    data = path.read_bytes()
    try:
        return data.decode("utf-8", "surrogatepass")
    except UnicodeDecodeError:  # a raw libFuzzer artifact
        return data.decode("utf-8", "surrogateescape")


def _seeds() -> list[str]:
    return [_load(p) for p in sorted(CORPUS.glob("*.txt"))]


# ---------------------------------------------------------------------------------------------------
# Engines
# ---------------------------------------------------------------------------------------------------


def _mutate(text: str, corpus: list[str], rng: random.Random, max_len: int) -> str:
    n = len(text)
    i = rng.randint(0, n)
    j = min(n, i + rng.choice((1, 1, 2, 4, 16, 64)))
    op = rng.randrange(11)
    if op == 0:  # insert a token
        out = text[:i] + rng.choice(TOKENS) + text[i:]
    elif op == 1:  # delete a span
        out = text[:i] + text[j:]
    elif op == 2:  # replace a character with a tricky one, or any code point (surrogates included)
        c = rng.choice(TRICKY_CHARS) if rng.random() < 0.7 else chr(rng.randrange(0x110000))
        out = text[:i] + c + text[i + 1 :]
    elif op == 3:  # duplicate a span
        out = text[:j] + text[i:j] + text[j:]
    elif op == 4:  # splice with another input
        other = rng.choice(corpus)
        k = rng.randint(0, len(other))
        out = text[:i] + other[k:] if rng.random() < 0.5 else other[:k] + text[i:]
    elif op == 5:  # nest a span in brackets, near the depth limit or far past it
        d = rng.choice((1, 2, 30, 31, 32, 33, 40, 300, 5000))
        o, c = rng.choice((("[", "]"), ("(", ")"), ("{1:", "}"), ("(", ",)"), ("-(", ")")))
        out = text[:i] + o * d + text[i:j] + c * d * (rng.random() < 0.9) + text[j:]
    elif op == 6:  # repeat a span many times: huge strings, many calls, many arguments
        out = text[:j] + text[i:j] * rng.choice((10, 100, 1000, 20000)) + text[j:]
    elif op == 7:  # a huge or odd number
        num = rng.choice(("9" * rng.choice((38, 39, 40, 200, 4300, 5000)), "0x" + "f" * 33, "1e308", "1e309"))
        out = text[:i] + num + text[j:]
    elif op == 8:  # fullwidth / NFKC look-alikes for ASCII
        out = "".join(chr(ord(c) + 0xFEE0) if "!" <= c <= "~" and rng.random() < 0.3 else c for c in text)
    elif op == 9:  # swap quote styles or bracket kinds
        a, b = rng.choice((("'", '"'), ('"', "'"), ("[", "("), ("(", "["), ("=", ":"), (",", " ")))
        out = text[:i] + text[i:].replace(a, b, rng.choice((1, 3, 100)))
    else:  # a random short string of tricky characters
        out = text[:i] + "".join(rng.choice(TRICKY_CHARS) for _ in range(rng.randint(1, 8))) + text[i:]
    if len(out) > max_len and rng.random() < 0.95:
        out = out[:max_len]
    return out[: 2 * toolcall.MAX_CHARS]


def run_mutate(run: Run, seed: int, max_len: int) -> None:
    rng = random.Random(seed)
    corpus = _seeds()
    seen: set[str] = set()
    for text in corpus:
        seen.add(run.one(text))
    while not run.done():
        text = rng.choice(corpus)
        for _ in range(rng.choice((1, 1, 2, 3, 5))):
            text = _mutate(text, corpus, rng, max_len)
        outcome = run.one(text)
        if outcome not in seen and len(text) <= max_len:
            seen.add(outcome)
            corpus.append(text)
    print(f"mutation corpus: {len(corpus)} inputs ({len(seen)} distinct outcomes), seed {seed}")


def run_atheris(run: Run, out: Path, seed: int, max_len: int) -> None:
    import atheris

    work = out / "corpus"  # new inputs go here; bench/fuzz_corpus stays as committed
    work.mkdir(parents=True, exist_ok=True)
    crashes = out / "libfuzzer-crashes"
    crashes.mkdir(exist_ok=True)
    tokens = out / "tokens.dict"
    tokens.write_text(
        "".join(
            '"' + "".join(f"\\x{b:02x}" for b in t.encode("utf-8", "surrogatepass")) + '"\n' for t in TOKENS
        )
    )

    def one_input(data: bytes) -> None:
        if run.done():
            run.report()
            sys.stdout.flush()
            os._exit(0)
        run.one(data.decode("utf-8", "surrogateescape"))

    argv = [
        sys.argv[0],
        str(work),
        str(CORPUS),
        f"-dict={tokens}",
        f"-max_len={max_len}",
        f"-seed={seed or 1}",
        f"-artifact_prefix={crashes}/",
        f"-max_total_time={int(run.seconds) + 60}",
        "-rss_limit_mb=4096",
        "-timeout=30",
        "-print_final_stats=1",
    ]
    atheris.Setup(argv, one_input)
    atheris.Fuzz()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--inputs", type=int, default=10**9, help="stop after this many inputs")
    ap.add_argument("--seconds", type=float, default=60.0, help="stop after this many seconds")
    ap.add_argument("--engine", choices=("auto", "atheris", "mutate"), default="auto")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--max-len", type=int, default=4096, help="longest input kept in the corpus")
    ap.add_argument("--slow-ms", type=float, default=50.0, help="a parse slower than this (CPU) is a finding")
    ap.add_argument("--out", type=Path, default=Path("runs/fuzz-parser"))
    ap.add_argument("--reproduce", nargs="+", type=Path, metavar="FILE", help="check these inputs and exit")
    args = ap.parse_args(argv)

    engine = args.engine
    if engine == "auto":
        try:
            import atheris  # noqa: F401

            engine = "atheris"
        except ImportError:
            engine = "mutate"
    _import_targets("mutate" if args.reproduce else engine)
    # SyntaxWarnings that parse lets through ("invalid decimal literal") would flood the output.
    warnings.simplefilter("ignore")
    sys.addaudithook(_audit_hook)
    faulthandler.enable()

    if args.reproduce:
        bad = 0
        for path in args.reproduce:
            text = _load(path)
            problems, _, cpu = check(text)
            cpu = min(cpu, _parse_cpu(text), _parse_cpu(text))
            if cpu * 1000 > args.slow_ms:
                problems.append(("slow", f"parse took {cpu * 1000:.0f} ms CPU"))
            bad += bool(problems)
            print(f"{path} ({len(text)} characters, parse {cpu * 1000:.1f} ms CPU): {problems or 'ok'}")
        return 1 if bad else 0

    run = Run(args.out, args.inputs, args.seconds, args.slow_ms, engine)
    print(
        f"engine {engine}, seed {args.seed}, up to {args.inputs:,} inputs / {args.seconds:,.0f} s", flush=True
    )
    if engine == "atheris":
        run_atheris(run, args.out, args.seed, args.max_len)  # exits the process when done
    run_mutate(run, args.seed, args.max_len)
    run.report()
    return 0


if __name__ == "__main__":
    sys.exit(main())
