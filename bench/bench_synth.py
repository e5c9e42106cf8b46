"""Time the synthetic generator: samples/s for 10k samples, and what the time goes to.

    python bench/bench_synth.py [--n 10000] [--split train] [--repeats 3]

Prints the best of ``--repeats`` runs (generation with Sample construction and validation), the share
spent constructing Samples, the JSON size and the mean prompt length in characters (tools as compact
JSON + the request), per category.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

from itool_ray.data import synth
from itool_ray.data.schema import Sample


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=10_000)
    ap.add_argument("--split", default="train")
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()

    times = []
    for r in range(args.repeats):
        t0 = time.perf_counter()
        samples = synth.generate(args.n, seed=r, split=args.split)
        times.append(time.perf_counter() - t0)
    best = min(times)
    print(
        f"generate({args.n}, split={args.split!r}): best {best:.2f} s of {args.repeats}, {args.n / best:,.0f} samples/s"
    )

    # Sample construction alone, from the same fields (what validation costs)
    fields = [s.model_dump() for s in samples]
    t0 = time.perf_counter()
    for f in fields:
        Sample(**f)
    construct = time.perf_counter() - t0
    print(
        f"  Sample construction + validation: {construct:.2f} s ({100 * construct / best:.0f}% of generation)"
    )

    t0 = time.perf_counter()
    lines = [s.to_json() for s in samples]
    print(f"  to_json: {time.perf_counter() - t0:.2f} s, {sum(map(len, lines)) / 1e6:.1f} MB")

    chars: dict[str, list[int]] = {}
    for s in samples:
        n = len(json.dumps(s.tools, separators=(",", ":"))) + len(s.messages[0]["content"])
        chars.setdefault(s.category, []).append(n)
    every = [n for ns in chars.values() for n in ns]
    print(f"  prompt chars (tools JSON + request): mean {statistics.mean(every):.0f}, max {max(every)}")
    for cat, ns in chars.items():
        print(f"    {cat:<18} {len(ns):>6} samples, mean {statistics.mean(ns):.0f} chars")


if __name__ == "__main__":
    main()
