"""Every place itool-ray reaches into TRL's internals, in one module, checked against the TRL it was built on.

Our preference rows arrive tokenized (the policy's own token boundaries; see ``train/preference.py``), so
TRL must not tokenize them again. TRL has no public hook for that; we override:

- ``DPOTrainer._prepare_dataset``: return our rows as they are (they hold prompt_ids / chosen_ids /
  rejected_ids);
- ``DPOTrainer._precompute_ref_logps``: after TRL's own precompute, destroy the second DeepSpeed engine it
  builds under ZeRO-3 (its hooks stay on the modules and break the first training forward);
- ``CPOTrainer.tokenize_row`` (SimPO): reshape our ids instead of re-encoding text.

These are private methods: :func:`check` refuses another TRL version, naming the one to install, and
checks that each overridden method is still there, so an upgrade fails at the start of training with one
line instead of silently training on re-tokenized rows.
"""

from __future__ import annotations

import inspect
from collections.abc import Sequence
from typing import Any

from itool_ray.train.common import TrainError

TRL_VERSION = "1.16.0"  # the version these overrides were written and tested against (pyproject's pin)
OVERRIDES = {
    "trl.DPOTrainer": ("_prepare_dataset", "_precompute_ref_logps"),
    "trl.experimental.cpo.CPOTrainer": ("tokenize_row",),
}


def check(installed: str | None = None) -> None:
    """Raise TrainError unless TRL is the version the overrides were written for and still has every
    overridden method."""
    if installed is None:
        import trl

        installed = trl.__version__
    if installed != TRL_VERSION:
        raise TrainError(
            f"trl {installed} is installed, but itool-ray overrides TRL internals checked against trl "
            f"{TRL_VERSION} only (itool_ray/train/trl_compat.py): pip install 'trl=={TRL_VERSION}'"
        )
    import importlib

    for path, methods in OVERRIDES.items():
        module, name = path.rsplit(".", 1)
        cls = getattr(importlib.import_module(module), name)
        missing = [m for m in methods if not inspect.isfunction(getattr(cls, m, None))]
        if missing:
            raise TrainError(f"{path} lacks {missing}: itool_ray/train/trl_compat.py needs updating")


def pretokenized_dpo_trainer() -> type:
    from trl import DPOTrainer

    class PretokenizedDPOTrainer(DPOTrainer):
        """DPOTrainer on rows that already hold prompt_ids / chosen_ids / rejected_ids."""

        def _prepare_dataset(self, dataset, processing_class, args, dataset_name):
            _require_columns(dataset, ("prompt_ids", "chosen_ids", "rejected_ids"))
            return dataset

        def _precompute_ref_logps(self, dataset, name, batch_size):
            out = super()._precompute_ref_logps(dataset, name, batch_size)
            # Under ZeRO-3, TRL precomputes through a second DeepSpeed engine on the same modules and keeps
            # it; its hooks stay on the modules, and the first training forward then fails in the
            # parameter coordinator ("IndexError: pop from an empty deque" in record_parameters).
            # destroy() removes those hooks; the training engine installs its own.
            if self._precompute_engine is not None:
                self._precompute_engine.destroy()
                self._precompute_engine = None
            return out

    return PretokenizedDPOTrainer


def pretokenized_cpo_trainer() -> type:
    from trl.experimental.cpo import CPOTrainer

    class PretokenizedCPOTrainer(CPOTrainer):
        """CPOTrainer whose tokenize_row only reshapes our token ids (no BOS/EOS insertion, no re-encoding)."""

        def tokenize_row(self, feature, model=None):
            prompt, out = feature["prompt_ids"], {}
            out["prompt_input_ids"] = list(prompt)
            out["prompt_attention_mask"] = [1] * len(prompt)
            for side in ("chosen", "rejected"):
                ids = feature[f"{side}_ids"]
                out[f"{side}_input_ids"] = list(prompt) + list(ids)
                out[f"{side}_attention_mask"] = [1] * (len(prompt) + len(ids))
                out[f"{side}_labels"] = [-100] * len(prompt) + list(ids)
            return out

    return PretokenizedCPOTrainer


def _require_columns(dataset: Any, names: Sequence[str]) -> None:
    missing = [n for n in names if n not in dataset.column_names]
    if missing:
        raise TrainError(f"preference dataset lacks columns {missing} (has {dataset.column_names})")
