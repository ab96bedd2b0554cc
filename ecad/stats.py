"""The bootstrap interval every figure with an interval uses (calibration noise, the benchmark's
relative reward, paired timing verdicts)."""

from __future__ import annotations

from typing import Callable

import numpy as np


def bootstrap_interval(*samples, statistic: Callable[..., np.ndarray] | None = None, level: float = 0.95,
                       resamples: int = 2000, seed: int = 0) -> tuple[float, float]:
    """Percentile bootstrap interval of ``statistic`` over paired ``samples`` (deterministic in ``seed``).

    Each of ``samples`` is a sequence of the same length; one resample draws the same indices from
    all of them (paired). ``statistic(*resampled)`` gets arrays of shape [resamples, n] and returns
    [resamples] values; the default is the mean of the first sample. Fewer than two values: the
    statistic of the data itself, twice.
    """
    arrays = [np.asarray(s, dtype=float) for s in samples]
    if not arrays or arrays[0].size == 0 or any(a.shape != arrays[0].shape for a in arrays):
        raise ValueError("a bootstrap interval needs one or more samples of the same, non-zero length")
    stat = statistic or (lambda x, *_: x.mean(axis=1))
    n = arrays[0].size
    if n < 2:
        value = float(stat(*(a[None] for a in arrays))[0])
        return value, value
    idx = np.random.default_rng(seed).integers(0, n, size=(resamples, n))
    values = stat(*(a[idx] for a in arrays))
    alpha = (1 - level) / 2
    return float(np.quantile(values, alpha)), float(np.quantile(values, 1 - alpha))


def median_of_rows(x: np.ndarray, *_) -> np.ndarray:
    return np.median(x, axis=1)
