"""Pareto fronts and hypervolume of minimised objective vectors, e.g. (−quality, cost)."""

from __future__ import annotations

import numpy as np


def objectives(quality, cost) -> np.ndarray:
    """Stack into the minimisation form the search uses: columns (−quality, cost)."""
    return np.column_stack([-np.asarray(quality, dtype=float), np.asarray(cost, dtype=float)])


def nondominated_mask(F: np.ndarray) -> np.ndarray:
    """True for points no other point dominates (duplicates all kept), by moocore's
    O(n log n) sweep (2-3 objectives)."""
    import moocore

    F = np.asarray(F, dtype=float)
    return moocore.is_nondominated(F, keep_weakly=True) if len(F) else np.ones(0, dtype=bool)


def normalization_from(F: np.ndarray) -> tuple[list[float], list[float]]:
    """(lower, upper) per objective; a degenerate range is widened so division is safe."""
    F = np.asarray(F, dtype=float)
    lower, upper = F.min(axis=0), F.max(axis=0)
    span = np.where(upper - lower > 1e-12, upper - lower, 1.0)
    return lower.tolist(), (lower + span).tolist()


def hypervolume(F: np.ndarray, lower, upper, reference: float = 1.1) -> float:
    """Hypervolume of the points in the box normalised by (lower, upper), reference (r, ..., r).

    Normalisation is fixed once per run (from its initial population), so values are
    comparable between generations; points beyond the reference contribute nothing.
    """
    F = np.asarray(F, dtype=float)
    if F.size == 0:
        return 0.0
    lower, upper = np.asarray(lower, dtype=float), np.asarray(upper, dtype=float)
    scaled = (F - lower) / (upper - lower)
    scaled = scaled[np.all(scaled < reference, axis=1)]
    if len(scaled) == 0:
        return 0.0
    import moocore

    return float(moocore.hypervolume(scaled, ref=np.full(F.shape[1], reference)))
