"""Hugging Face datasets: a hub id, a ``save_to_disk`` directory, or a directory of data files.

Returns rows as plain dicts; ``loaders.load_samples`` detects their format from the column names
(system+conversations -> ToolACE, query/tools/answers -> xLAM, Sample fields -> Sample) and converts.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

from itool_ray.data.io import DatasetError, prune_nulls


def _is_saved_dataset(path: str) -> bool:
    return any(os.path.exists(os.path.join(path, f)) for f in ("dataset_dict.json", "state.json"))


def load_rows(id_or_dir: str, split: str | None = None) -> tuple[list[str], Iterator[dict[str, Any]]]:
    """(column names, rows) of one split (default ``train``) of a dataset.

    A hub id needs the network or a cached copy; with ``HF_HUB_OFFLINE=1`` and no cache this raises
    DatasetError naming the id, never a traceback from deep inside ``datasets``.
    """
    import datasets

    try:
        if os.path.isdir(id_or_dir) and _is_saved_dataset(id_or_dir):
            ds = datasets.load_from_disk(id_or_dir)
            if isinstance(ds, datasets.DatasetDict):
                want = split or "train"
                if want not in ds:
                    raise DatasetError(f"{id_or_dir} has no split {want!r}; splits: {', '.join(ds)}")
                ds = ds[want]
            elif split:
                raise DatasetError(f"{id_or_dir} holds a single dataset with no splits; drop ':{split}'")
        else:
            ds = datasets.load_dataset(id_or_dir, split=split or "train")
    except DatasetError:
        raise
    except (OSError, ValueError, ConnectionError, datasets.exceptions.DatasetsError) as e:
        offline = os.environ.get("HF_HUB_OFFLINE", "0") not in ("", "0")
        hint = (
            " (HF_HUB_OFFLINE is set: only cached datasets load; pass a local directory)" if offline else ""
        )
        raise DatasetError(
            f"cannot load Hugging Face dataset {id_or_dir!r} split {split or 'train'!r}: {e}{hint}"
        ) from None
    return list(ds.column_names), (prune_nulls(row) for row in ds)
