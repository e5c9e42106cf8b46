"""Real Ray nodes on 127.0.0.1 for the integration tests: a head, and worker nodes joined with
`ray start --address`, each `--block`ed in its own process group (stopped by signalling that group: `ray stop`
would stop every Ray instance on the machine, the test session's own included)."""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

VENV_BIN = Path(sys.executable).parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Node:
    proc: subprocess.Popen
    temp: str
    env: dict[str, str]

    def stop(self) -> None:
        """Stop the node's whole process group (its raylet, GCS, dashboard and workers are all in it):
        SIGTERM, then SIGKILL after 3 s. A test's teardown needs nothing of a graceful shutdown, which takes
        ≈ 33 s here (the GCS alone ≈ 30 s)."""
        try:
            os.killpg(self.proc.pid, signal.SIGTERM)
            self.proc.wait(timeout=3)
        except (subprocess.TimeoutExpired, ProcessLookupError):
            pass
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)  # what is left of the group
        except ProcessLookupError:
            pass
        self.proc.wait()
        shutil.rmtree(self.temp, ignore_errors=True)


@dataclass
class Cluster:
    address: str
    dashboard: str
    token: str
    env: dict[str, str]  # what a client (`ray job submit`, a driver) needs
    nodes: list[Node] = field(default_factory=list)

    def stop(self) -> None:
        for node in reversed(self.nodes):
            node.stop()


def _agent_ports() -> list[str]:
    # Ports of their own: the session's ray.init() cluster already holds the defaults (an agent that
    # cannot bind 52365 leaves the head answering "No available agent to submit job").
    return [
        "--dashboard-agent-listen-port",
        str(free_port()),
        "--dashboard-agent-grpc-port",
        str(free_port()),
        "--runtime-env-agent-port",
        str(free_port()),
        "--metrics-export-port",
        str(free_port()),
    ]


def _start(args: list[str], env: dict[str, str], temp: str) -> Node:
    proc = subprocess.Popen(
        [
            str(VENV_BIN / "ray"),
            "start",
            "--block",
            "--node-ip-address",
            "127.0.0.1",
            # Its own temp dir (sessions, runtime envs, sockets): without it a worker node uses the head's.
            "--temp-dir",
            temp,
            *args,
            *_agent_ports(),
        ],
        env=env,
        stdout=open(os.path.join(temp, "ray-start.log"), "w"),
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    return Node(proc, temp, env)


def start_head(
    *, num_cpus: int = 2, extra_env: dict[str, str] | None = None, resources: dict | None = None
) -> Cluster:
    """A head node with token auth and the job API up; the job's `python` is this environment's."""
    port, dashboard = free_port(), free_port()
    # A short temp dir: Ray's unix socket paths under it must stay within 107 bytes.
    temp = tempfile.mkdtemp(prefix="rh-", dir="/tmp")
    token = secrets.token_hex(32)
    env = {
        **os.environ,
        **(extra_env or {}),
        "RAY_TMPDIR": temp,
        "PATH": f"{VENV_BIN}{os.pathsep}{os.environ.get('PATH', '')}",
        "RAY_AUTH_MODE": "token",
        "RAY_AUTH_TOKEN": token,
    }
    args = [
        "--head",
        "--port",
        str(port),
        "--dashboard-host",
        "127.0.0.1",
        "--dashboard-port",
        str(dashboard),
    ]
    args += ["--num-cpus", str(num_cpus), "--num-gpus", "0", "--disable-usage-stats"]
    if resources:
        args += ["--resources", json.dumps(resources)]
    head = _start(args, env, temp)
    url = f"http://127.0.0.1:{dashboard}"
    cluster = Cluster(address=f"127.0.0.1:{port}", dashboard=url, token=token, env=env, nodes=[head])
    try:
        deadline = time.time() + 180
        while True:  # the dashboard (job API) comes up after `ray start` has returned
            try:
                req = urllib.request.Request(
                    f"{url}/api/version", headers={"Authorization": f"Bearer {token}"}
                )
                urllib.request.urlopen(req, timeout=5)
                break
            except OSError:
                assert head.proc.poll() is None, "ray start --head exited"
                assert time.time() < deadline, "the Ray dashboard did not come up within 180 s"
                time.sleep(1)
    except BaseException:
        cluster.stop()
        raise
    return cluster


def add_worker(
    cluster: Cluster, *, num_cpus: int, resources: dict | None = None, extra_env: dict[str, str] | None = None
) -> Node:
    """A worker node joined with `ray start --address`, with its own temp dir and environment."""
    temp = tempfile.mkdtemp(prefix="rw-", dir="/tmp")
    env = {**cluster.env, **(extra_env or {}), "RAY_TMPDIR": temp}
    args = ["--address", cluster.address, "--num-cpus", str(num_cpus), "--num-gpus", "0"]
    if resources:
        args += ["--resources", json.dumps(resources)]
    node = _start(args, env, temp)
    cluster.nodes.append(node)
    return node


def query(cluster: Cluster, code: str, timeout: float = 120) -> object:
    """Run ``code`` in a driver connected to the cluster; it assigns ``out``, which comes back (JSON)."""
    script = f"import json, ray\nray.init(address={cluster.address!r}, log_to_driver=False)\n{code}\nprint('OUT=' + json.dumps(out))\n"
    # RAY_ADDRESS too: the state API (list_actors) otherwise finds every Ray instance on the machine (the
    # test session's own included) and refuses to choose.
    env = {**cluster.env, "RAY_ADDRESS": cluster.address}
    done = subprocess.run(
        [sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=timeout
    )
    assert done.returncode == 0, done.stderr[-3000:]
    line = next(x for x in done.stdout.splitlines() if x.startswith("OUT="))
    return json.loads(line[4:])


def wait_for_nodes(cluster: Cluster, n: int, timeout: float = 120) -> list[dict]:
    deadline = time.time() + timeout
    while True:
        nodes = query(cluster, "out = [x for x in ray.nodes() if x['Alive']]")
        if len(nodes) >= n:
            return nodes
        assert time.time() < deadline, f"{len(nodes)} of {n} Ray nodes up after {timeout:.0f} s"
        time.sleep(2)
