"""Paired comparisons of two evaluations of the same samples, with bootstrap intervals.

Two stages are evaluated on the same samples, so their difference is measured per sample: the interval
comes from resampling the samples (with replacement) and recomputing the mean of the per-sample
differences, which is far tighter than comparing two independent accuracies. Pure numpy; no Ray.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

N_BOOT = 2000
LEVEL = 0.95
# The smallest true difference a paired comparison of this size finds with 80% power at the 5% level
# (two-sided, normal approximation): (z_0.975 + z_0.8) standard errors of the mean difference.
_DETECT_Z = 1.959964 + 0.841621


class StatsError(ValueError):
    """Two evaluations that cannot be paired."""


@dataclass(frozen=True)
class Interval:
    """``b − a`` in accuracy points (fractions: 0.05 is five points), with its bootstrap interval."""

    diff: float
    lo: float
    hi: float
    n: int
    detectable: float  # the difference this comparison would detect (80% power, 5% level)

    @property
    def significant(self) -> bool:
        """The interval excludes zero."""
        return self.lo > 0 or self.hi < 0

    def to_dict(self) -> dict[str, Any]:
        return {k: round(v, 4) if isinstance(v, float) else v for k, v in asdict(self).items()}

    def __str__(self) -> str:
        return f"{100 * self.diff:+.1f} [{100 * self.lo:+.1f}, {100 * self.hi:+.1f}]"


def paired_interval(
    a: Sequence[float] | np.ndarray,
    b: Sequence[float] | np.ndarray,
    *,
    n_boot: int = N_BOOT,
    seed: int = 0,
    level: float = LEVEL,
) -> Interval:
    """The mean of ``b − a`` over paired per-sample scores (1/0 for exact), with a percentile bootstrap
    interval over the samples. Deterministic for a given ``seed``."""
    x = np.asarray(a, dtype=np.float64)
    y = np.asarray(b, dtype=np.float64)
    if x.shape != y.shape or x.ndim != 1:
        raise StatsError(f"paired scores must be two equal-length lists (got {x.shape} and {y.shape})")
    n = int(x.size)
    if n == 0:
        raise StatsError("no paired samples to compare")
    d = y - x
    rng = np.random.default_rng(seed)
    means = np.empty(n_boot)
    chunk = max(1, 4_000_000 // n)  # bounded memory for large splits
    for start in range(0, n_boot, chunk):
        stop = min(n_boot, start + chunk)
        idx = rng.integers(0, n, size=(stop - start, n))
        means[start:stop] = d[idx].mean(axis=1)
    tail = (1.0 - level) / 2.0
    lo, hi = np.quantile(means, [tail, 1.0 - tail])
    se = float(d.std(ddof=1) / np.sqrt(n)) if n > 1 else 0.0
    return Interval(float(d.mean()), float(lo), float(hi), n, _DETECT_Z * se)


def _by_id(records: Iterable[Mapping[str, Any]]) -> dict[str, Mapping[str, Any]]:
    out: dict[str, Mapping[str, Any]] = {}
    for r in records:
        key = str(r["id"])
        if key in out:
            raise StatsError(f"sample id {key!r} appears twice in one evaluation")
        out[key] = r
    return out


def compare_records(
    a: Iterable[Mapping[str, Any]],
    b: Iterable[Mapping[str, Any]],
    *,
    field: str = "exact",
    n_boot: int = N_BOOT,
    seed: int = 0,
) -> dict[str, Interval]:
    """``{"overall": Interval, category: Interval, ...}`` for ``b − a``, pairing records by sample id.

    Both evaluations must cover the same samples: comparing different sample sets is an error, not a
    silently smaller comparison."""
    ra, rb = _by_id(a), _by_id(b)
    if ra.keys() != rb.keys():
        only_a, only_b = sorted(ra.keys() - rb.keys()), sorted(rb.keys() - ra.keys())
        raise StatsError(
            f"the two evaluations cover different samples ({len(only_a)} only in the first, e.g. "
            f"{only_a[:3]}; {len(only_b)} only in the second, e.g. {only_b[:3]})"
        )
    ids = sorted(ra)
    cats = [str(ra[i]["category"]) for i in ids]
    xa = np.array([float(ra[i][field]) for i in ids])
    xb = np.array([float(rb[i][field]) for i in ids])
    out = {"overall": paired_interval(xa, xb, n_boot=n_boot, seed=seed)}
    for cat in sorted(set(cats)):
        mask = np.array([c == cat for c in cats])
        out[cat] = paired_interval(xa[mask], xb[mask], n_boot=n_boot, seed=seed)
    return out
