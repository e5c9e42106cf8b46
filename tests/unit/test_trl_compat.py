"""TRL internals are overridden in one module, which refuses a TRL it was not written for."""

from __future__ import annotations

import pytest

from itool_ray.train import TrainError, trl_compat


def test_the_pinned_trl_passes_the_check():
    trl_compat.check()


def test_another_trl_version_is_one_line_naming_the_one_to_install():
    with pytest.raises(TrainError, match=r"trl 1\.17\.0 is installed.*pip install 'trl==1\.16\.0'"):
        trl_compat.check("1.17.0")


def test_a_trl_without_an_overridden_method_is_refused(monkeypatch):
    from trl import DPOTrainer

    monkeypatch.delattr(DPOTrainer, "_precompute_ref_logps")
    with pytest.raises(TrainError, match=r"trl\.DPOTrainer lacks \['_precompute_ref_logps'\]"):
        trl_compat.check()
