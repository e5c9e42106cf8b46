"""Shared fixtures: one tiny model and one local Ray cluster per test session; GPU tests skip cleanly."""

from __future__ import annotations

import os

import pytest

# Ray Train knobs that make short test runs fast (see shared NOTES-stack: Ray 2.60).
os.environ.setdefault("RAY_TRAIN_HEALTH_CHECK_INTERVAL_S", "0.2")
os.environ.setdefault("RAY_TRAIN_ENABLE_PREEMPTION_WATCHER", "0")
os.environ.setdefault("RAY_TRAIN_ENABLE_STATE_ACTOR_RECONCILIATION", "0")
os.environ.setdefault("RAY_TRAIN_ENABLE_PRINT_PATCH", "0")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


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
def ray_session():
    """One local Ray cluster for the whole session (≈5 s to start)."""
    import ray

    if not ray.is_initialized():
        ray.init(num_cpus=2, include_dashboard=True, log_to_driver=False)
    yield ray
    ray.shutdown()
