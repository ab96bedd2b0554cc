"""Noise-aware evaluation: racing candidates on a subset of samples, and bootstrap intervals.

A quality score is a mean over prompt x seed images (samples) and carries their noise. Racing
renders a candidate on a fixed subset of the samples first and renders the rest only if an
optimistic bound (mean + z standard errors on every quality objective) could still be
non-dominated by the front of fully evaluated candidates; everything here is deterministic in
the search seed, so a resumed run takes the same decisions.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from ecad.search.optimizer.evaluation import CandidateResult
from ecad.search.optimizer.hypervolume import nondominated_mask


#: standard errors added to a quality mean for its optimistic bound (1.645: one-sided 95%)
NOISE_Z = 1.645


@dataclass(frozen=True)
class RacingSettings:
    #: share of the samples a candidate is rendered on first (at least one sample)
    first_fraction: float = 0.25
    #: standard errors added to each quality mean for the optimistic bound
    z: float = NOISE_Z

    def __post_init__(self) -> None:
        if not 0 < self.first_fraction < 1:
            raise ValueError(f"RacingSettings.first_fraction must be in (0, 1), got {self.first_fraction}")
        if self.z < 0:
            raise ValueError(f"RacingSettings.z must be >= 0, got {self.z}")

    def to_dict(self) -> dict:
        return asdict(self)


def first_samples(num_samples: int, fraction: float, seed: int) -> list[int]:
    """The samples every candidate is raced on first: a seeded subset, the same for all
    candidates (a paired comparison), sorted."""
    count = min(num_samples - 1, max(1, round(fraction * num_samples)))
    rng = np.random.default_rng(np.random.SeedSequence([int(seed), 0xACE]))
    return sorted(int(i) for i in rng.permutation(num_samples)[:count])


def optimistic_point(result: CandidateResult, objectives: tuple[str, ...], quality_metric: str, z: float) -> np.ndarray:
    """(−upper bound of each quality objective, cost): the best the candidate could plausibly be."""
    point = [-optimistic_value(result, name, z) for name in objectives or (quality_metric,)]
    return np.array([*point, result.cost])


def optimistic_value(result: CandidateResult, metric: str, z: float) -> float:
    """Mean of ``metric`` over the rendered samples plus ``z`` standard errors."""
    values = np.asarray(result.samples[metric], dtype=float)
    sem = values.std(ddof=1) / np.sqrt(len(values)) if len(values) > 1 else 0.0
    return float(values.mean() + z * sem)


def could_clear_floors(result: CandidateResult, floors, z: float) -> bool:
    """False only if some ``QualityFloor`` is above the optimistic bound of its metric."""
    return all(optimistic_value(result, f.metric, z) >= f.minimum for f in floors)


def could_be_nondominated(point: np.ndarray, front_F: np.ndarray) -> bool:
    """False only if some point of ``front_F`` dominates ``point``."""
    if len(front_F) == 0:
        return True
    return bool(nondominated_mask(np.vstack([front_F, point]))[-1])


def bootstrap_interval(values, *, level: float = 0.95, resamples: int = 2000, seed: int = 0) -> tuple[float, float]:
    """Percentile bootstrap interval of the mean of ``values`` (deterministic in ``seed``)."""
    values = np.asarray(values, dtype=float)
    if len(values) < 2:
        return float(values.mean()), float(values.mean())
    rng = np.random.default_rng(seed)
    means = values[rng.integers(0, len(values), size=(resamples, len(values)))].mean(axis=1)
    alpha = (1 - level) / 2
    return float(np.quantile(means, alpha)), float(np.quantile(means, 1 - alpha))
