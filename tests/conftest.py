"""Shared fixtures: one tiny model and one local Ray cluster per test session; GPU tests skip cleanly."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import pytest
from raycluster import free_port

# Ray Train knobs that make short test runs fast (see shared NOTES-stack: Ray 2.60).
os.environ.setdefault("RAY_TRAIN_HEALTH_CHECK_INTERVAL_S", "0.2")
os.environ.setdefault("RAY_TRAIN_ENABLE_PREEMPTION_WATCHER", "0")
os.environ.setdefault("RAY_TRAIN_ENABLE_STATE_ACTOR_RECONCILIATION", "0")
os.environ.setdefault("RAY_TRAIN_ENABLE_PRINT_PATCH", "0")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
# The session's own offline hub cache (see tiny_hub_id), set before any Ray process or hub import.
os.environ.setdefault("HF_HUB_CACHE", tempfile.mkdtemp(prefix="itool-test-hub-"))
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


# The S3-compatible server of the object-store tests (moto, on 127.0.0.1). Its address and fake credentials
# are in the environment before any Ray process starts, so every node and worker reaches it the way a cloud
# node reaches S3: through the standard AWS variables, never through an argument of ours.
S3_PORT = free_port()
S3_ENV = {
    "AWS_ACCESS_KEY_ID": "itool-test",
    "AWS_SECRET_ACCESS_KEY": "itool-test-secret",
    "AWS_DEFAULT_REGION": "us-east-1",
    "AWS_ENDPOINT_URL": f"http://127.0.0.1:{S3_PORT}",
    "FSSPEC_S3_ENDPOINT_URL": f"http://127.0.0.1:{S3_PORT}",
}
for _k, _v in S3_ENV.items():
    os.environ.setdefault(_k, _v)


def _has_cuda() -> bool:
    try:
        import torch

        return torch.cuda.is_available()
    except Exception:
        return False


def pytest_collection_modifyitems(config, items):
    if _has_cuda():
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def data_dir(tmp_path_factory) -> str:
    """Cache for converted/built models; ITOOL_TEST_DATA_DIR reuses one across sessions."""
    d = os.environ.get("ITOOL_TEST_DATA_DIR")
    return d if d else str(tmp_path_factory.mktemp("itool-data"))


@pytest.fixture(scope="session")
def tiny_model_dir(data_dir) -> str:
    from itool_ray.models import resolve_model

    return resolve_model("tiny", data_dir=data_dir)


@pytest.fixture(scope="session")
def tiny_hub_id(tiny_model_dir) -> str:
    """The tiny model under a hub id, in the session's offline hub cache the way a download leaves it."""
    revision = "0" * 40
    repo = Path(os.environ["HF_HUB_CACHE"]) / "models--itool-test--tiny"
    if not (repo / "snapshots" / revision).exists():
        shutil.copytree(tiny_model_dir, repo / "snapshots" / revision)
    (repo / "refs").mkdir(exist_ok=True)
    (repo / "refs" / "main").write_text(revision)
    return "itool-test/tiny"


@pytest.fixture(scope="session")
def ray_session():
    """One local Ray cluster for the whole session (≈5 s to start)."""
    import ray

    if not ray.is_initialized():
        ray.init(num_cpus=2, include_dashboard=True, log_to_driver=False)
    yield ray
    ray.shutdown()


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory):
    """A moto S3 server on 127.0.0.1 for the session; yields a function that makes a fresh bucket URI."""
    import fsspec

    log = open(tmp_path_factory.mktemp("s3") / "moto.log", "w")
    proc = subprocess.Popen(
        [str(Path(sys.executable).parent / "moto_server"), "-H", "127.0.0.1", "-p", str(S3_PORT)],
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    deadline = time.time() + 60
    while True:
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{S3_PORT}/", timeout=2)
            break
        except OSError:
            assert proc.poll() is None, "moto_server exited"
            assert time.time() < deadline, "moto_server did not come up in 60 s"
            time.sleep(0.3)
    fs = fsspec.filesystem("s3", skip_instance_cache=True)
    count = 0

    def bucket() -> str:
        nonlocal count
        count += 1
        name = f"itool-test-{count}"
        fs.mkdir(name)
        return f"s3://{name}"

    try:
        yield bucket
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
