"""Load on `itool serve`: requests/s, latency percentiles and status codes, at and beyond the configured
concurrency, from a second process on 127.0.0.1 (bench/loadgen.py).

    python bench/bench_serve.py                                   # tiny model, hf engine, 20 s per phase
    python bench/bench_serve.py --model runs/quickstart/warmup/ckpt --engine vllm --concurrency 8

Phases: ``steady`` = as many clients as serve.max_concurrency (target: only 200s); ``overload`` =
``--overload`` × that many clients (target: 200s and 429s only, no 5xx, no dropped connection); then
/health and one normal request must still answer. The load average is printed with the figures.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _phase(url: str, clients: int, seconds: float, key: str, max_tokens: int) -> dict:
    cmd = [sys.executable, os.path.join(ROOT, "bench", "loadgen.py"), "--url", url, "--api-key", key]
    cmd += ["--clients", str(clients), "--seconds", str(seconds), "--max-tokens", str(max_tokens)]
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, check=True)
    return json.loads(proc.stdout)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="tiny", help="tiny, embedded:smollm2, or a checkpoint directory")
    p.add_argument("--engine", default="hf", choices=["hf", "vllm"])
    p.add_argument("--concurrency", type=int, default=4, help="serve.max_concurrency")
    p.add_argument("--overload", type=int, default=4, help="overload phase: this many × concurrency clients")
    p.add_argument("--seconds", type=float, default=20)
    p.add_argument("--max-tokens", type=int, default=32)
    a = p.parse_args()

    import ray
    import requests

    from actors.serve_app import start_server, stop_server
    from itool_ray.config import load_config
    from itool_ray.models import resolve_model

    key = "bench-key"
    os.environ["ITOOL_API_KEY"] = key  # start_server reads the key from the environment
    cfg = load_config(
        "tiny" if a.model == "tiny" else "quickstart",
        {
            "engine": {"kind": a.engine},
            "serve": {"port": _free_port(), "max_concurrency": a.concurrency},
        },
    )
    model_dir = resolve_model(a.model, data_dir=cfg.run.data_dir)
    ray.init(num_cpus=os.cpu_count(), include_dashboard=False, log_to_driver=False)
    t = time.perf_counter()
    url = start_server(model_dir, cfg)
    print(f"server up in {time.perf_counter() - t:.1f} s: {url} ({a.engine}, {model_dir})", flush=True)
    rows = []
    try:
        _phase(url, 1, 2, key, a.max_tokens)  # warm-up, not reported
        for name, clients in (("steady", a.concurrency), ("overload", a.overload * a.concurrency)):
            res = _phase(url, clients, a.seconds, key, a.max_tokens)
            res["phase"], res["load_avg"] = name, round(os.getloadavg()[0], 2)
            rows.append(res)
            print(json.dumps(res), flush=True)
        health = requests.get(f"{url}/health", timeout=10).status_code
        after = _phase(url, 1, 2, key, a.max_tokens)
    finally:
        stop_server()
        ray.shutdown()
    print("\n| phase | clients | requests | 200/s | p50 s | p90 s | p99 s | status |")
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        lat = r["latency_s"]
        print(
            f"| {r['phase']} | {r['clients']} | {r['requests']} | {r['ok_per_s']} | {lat['p50']} | "
            f"{lat['p90']} | {lat['p99']} | {r['status']} |"
        )
    print(f"\nafter the load: /health {health}, a normal request: {after['status']}")
    steady, overload = rows
    ok = (
        set(steady["status"]) == {"200"}
        and set(overload["status"]) <= {"200", "429"}
        and health == 200
        and set(after["status"]) == {"200"}
    )
    print("PASS" if ok else "FAIL: errors at the configured concurrency, or the server did not survive")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
