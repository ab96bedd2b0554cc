"""Choosing a schedule for a request: pure functions plus one small learning corrector.

``select_schedule`` is the whole policy: the best-quality entry whose predicted latency fits the
budget; with no budget the best-quality entry; with a budget below every entry the fastest one,
flagged as not meeting the budget. Predictions come from the bank's hardware profile, scaled to the
request's shape (tokens x steps x batch) and multiplied by a correction learned from the latencies
the server actually observed.
"""

from __future__ import annotations

import math
import threading
from dataclasses import dataclass
from typing import Mapping, Sequence


@dataclass(frozen=True)
class RequestShape:
    height: int
    width: int
    num_inference_steps: int
    batch_size: int = 1


@dataclass(frozen=True)
class Candidate:
    """A bank entry with its predicted latency for one request."""

    id: str
    quality: float
    predicted_ms: float


@dataclass(frozen=True)
class Choice:
    entry_id: str
    predicted_ms: float
    quality: float
    budget_ms: float | None
    budget_met: bool
    reason: str


def scale_latency(measured_ms: float, profiled: RequestShape, requested: RequestShape) -> float:
    """Latency scaled by work: latent tokens (proportional to pixels) x steps x batch.

    A first-order model (attention is quadratic in tokens, fixed overheads do not scale); the
    server's ``LatencyCorrector`` absorbs the rest from observed requests.
    """
    work = lambda s: s.height * s.width * s.num_inference_steps * s.batch_size  # noqa: E731
    return measured_ms * work(requested) / work(profiled)


def select_schedule(candidates: Sequence[Candidate], budget_ms: float | None) -> Choice:
    """Best quality that fits ``budget_ms``; ties go to the faster entry."""
    if not candidates:
        raise ValueError("no candidates to select from")
    by_quality = sorted(candidates, key=lambda c: (-c.quality, c.predicted_ms, c.id))
    if budget_ms is None:
        best = by_quality[0]
        return Choice(best.id, best.predicted_ms, best.quality, None, True, "no budget: best quality")
    for candidate in by_quality:
        if candidate.predicted_ms <= budget_ms:
            return Choice(
                candidate.id, candidate.predicted_ms, candidate.quality, budget_ms, True,
                "best quality within budget",
            )
    fastest = min(candidates, key=lambda c: (c.predicted_ms, -c.quality, c.id))
    return Choice(
        fastest.id, fastest.predicted_ms, fastest.quality, budget_ms, False,
        "budget below the fastest schedule: serving the fastest",
    )


def remaining_budget(latency_ms: float | None, waited_ms: float) -> float | None:
    """Time already spent queueing counts against the request's budget."""
    if latency_ms is None:
        return None
    return latency_ms - max(0.0, waited_ms)


def predict_candidates(
    entries: Sequence[tuple[str, float, float]],
    profiled: RequestShape,
    requested: RequestShape,
    corrections: Mapping[str, float] | None = None,
) -> list[Candidate]:
    """``entries`` are (id, quality, measured_ms at ``profiled``) triples."""
    corrections = corrections or {}
    return [
        Candidate(entry_id, quality, scale_latency(ms, profiled, requested) * corrections.get(entry_id, 1.0))
        for entry_id, quality, ms in entries
    ]


class LatencyCorrector:
    """Learns actual/predicted latency ratios per entry (exponential moving average).

    Entries not yet observed use the mean ratio of those that were, so one slow request teaches
    the server that this machine is slower than its profile for every schedule.
    """

    def __init__(self, smoothing: float = 0.2, max_ratio: float = 20.0) -> None:
        if not 0.0 <= smoothing <= 1.0:
            raise ValueError("smoothing must be in [0, 1] (0 turns learning off)")
        self.smoothing = smoothing
        self.max_ratio = max_ratio
        self._ratios: dict[str, float] = {}
        self._lock = threading.Lock()

    def observe(self, entry_id: str, predicted_ms: float, actual_ms: float) -> None:
        if not (self.smoothing > 0 and predicted_ms > 0 and math.isfinite(actual_ms) and actual_ms > 0):
            return
        ratio = min(max(actual_ms / predicted_ms, 1.0 / self.max_ratio), self.max_ratio)
        with self._lock:
            # The prediction already includes the current correction; compound it.
            base = self._ratios.get(entry_id, self._global_locked())
            target = base * ratio
            self._ratios[entry_id] = (1 - self.smoothing) * base + self.smoothing * target

    def corrections(self, entry_ids: Sequence[str]) -> dict[str, float]:
        with self._lock:
            fallback = self._global_locked()
            return {i: self._ratios.get(i, fallback) for i in entry_ids}

    def _global_locked(self) -> float:
        if not self._ratios:
            return 1.0
        return sum(self._ratios.values()) / len(self._ratios)
