"""Choosing schedules for requests: pure functions over the queue, plus the latency tail estimate.

Two policies, both pure functions of (waiting requests, clock, bank predictions):

``select_schedule`` (one request, the greedy rule)
    The best-quality entry whose predicted latency fits the budget that is left; with no budget
    the best-quality entry; below every entry the fastest one, flagged. ``plan_greedy`` applies it
    to a queue in arrival order: each request picks when it reaches the pipeline. That is how the
    server behaved before the planner; it is kept to compare against (``ECAD_PLANNER=greedy``).

``plan_queue`` (the whole queue, the default)
    1. Order by earliest deadline (requests without a budget last, ties by arrival).
    2. Decide who can be on time: with every request at its fastest entry, walk that order and,
       whenever a request would finish late, give up the request with the longest fastest time
       among those kept so far (Moore-Hodgson: this keeps the largest number of requests on
       time). Given-up requests are *late*: they run after the others, at their fastest entry.
    3. Spend the slack on quality: repeatedly apply the upgrade (a request to a better entry) with
       the largest quality gain per added millisecond that keeps every kept request on time (an
       upgrade delays that request and every later one). Requests without a budget have no
       deadline, so they end at their best entry, as before.
    4. Leave room for requests not here yet: with ``expected_load`` L (how many requests the
       server has recently held at once), a request with budget B is upgraded only to entries
       predicted within B / L. If L clients each keep one request in flight, a request then waits
       for at most L - 1 others of at most B / L each, and all of them meet B; with L = 1 (one
       client, or an idle server) nothing is reserved.
    The server re-plans whenever the pipeline frees up and whenever a request arrives; only the
    first request's choice is acted on, the rest is the forecast used for admission.

Every time is in ms on one monotonic clock (``ecad.deadline.monotonic_ms`` on the server).
Predictions come from the bank's hardware profile, scaled to the request's shape (tokens x steps x
images), times a tail factor per entry (``LatencyQuantiles``: a high quantile of actual/predicted).
"""

from __future__ import annotations

import math
import threading
from collections import deque
from dataclasses import dataclass
from typing import Hashable, Mapping, Sequence

from ecad.setting import Setting


@dataclass(frozen=True)
class RequestShape:
    """What a request asks the pipeline to do: a setting and a number of images."""

    setting: Setting
    num_images: int = 1

    @property
    def work(self) -> int:
        s = self.setting
        return s.pixels * s.num_inference_steps * self.num_images


@dataclass(frozen=True)
class PredictedEntry:
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
    """Latency scaled by work: latent tokens (proportional to pixels) x steps x images.

    A first-order model (attention is quadratic in tokens, fixed overheads do not scale); the
    observed tail factor absorbs the rest.
    """
    return measured_ms * requested.work / profiled.work


def predict_entries(
    entries: Sequence[tuple[str, float, float]],
    profiled: RequestShape,
    requested: RequestShape,
    factors: Mapping[str, float] | None = None,
) -> list[PredictedEntry]:
    """``entries`` are (id, quality, measured_ms at ``profiled``) triples."""
    factors = factors or {}
    return [
        PredictedEntry(entry_id, quality, scale_latency(ms, profiled, requested) * factors.get(entry_id, 1.0))
        for entry_id, quality, ms in entries
    ]


def select_schedule(entries: Sequence[PredictedEntry], budget_ms: float | None) -> Choice:
    """Best quality that fits ``budget_ms``; ties go to the faster entry."""
    if not entries:
        raise ValueError("no entries to select from")
    by_quality = sorted(entries, key=lambda c: (-c.quality, c.predicted_ms, c.id))
    if budget_ms is None:
        best = by_quality[0]
        return Choice(best.id, best.predicted_ms, best.quality, None, True, "no budget: best quality")
    for candidate in by_quality:
        if candidate.predicted_ms <= budget_ms:
            return Choice(candidate.id, candidate.predicted_ms, candidate.quality, budget_ms, True,
                          "best quality within budget")
    fastest = _fastest(entries)
    return Choice(fastest.id, fastest.predicted_ms, fastest.quality, budget_ms, False,
                  "budget below the fastest schedule: serving the fastest")


def _fastest(entries: Sequence[PredictedEntry]) -> PredictedEntry:
    return min(entries, key=lambda c: (c.predicted_ms, -c.quality, c.id))


# -- the queue ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Waiting:
    """A queued request as the planner sees it. Times are ms on one clock (the server's)."""

    key: Hashable
    arrival_ms: float
    deadline_ms: float | None  # arrival + budget; None: no budget
    entries: tuple[PredictedEntry, ...]  # what it may run: a pinned request has exactly one


@dataclass(frozen=True)
class Assignment:
    key: Hashable
    entry_id: str
    quality: float
    predicted_ms: float
    start_ms: float
    finish_ms: float
    on_time: bool  # predicted to finish by its deadline (True without a deadline)
    reason: str


def plan_queue(waiting: Sequence[Waiting], now_ms: float, free_at_ms: float | None = None,
               expected_load: int = 1) -> list[Assignment]:
    """The deadline-aware plan (see the module docstring); assignments in run order.

    ``free_at_ms`` is when the pipeline is predicted to be free (the running request's predicted
    end); ``None`` or a past time means now. ``expected_load`` >= 1 reserves time for requests
    likely to arrive (step 4).
    """
    start = max(now_ms, free_at_ms if free_at_ms is not None else now_ms)
    by_deadline = sorted(waiting, key=lambda w: (w.deadline_ms is None, w.deadline_ms or 0.0, w.arrival_ms))
    fastest = {w.key: _fastest(w.entries) for w in waiting}

    # Moore-Hodgson on the fastest entries: the largest set that can all be on time.
    kept: list[Waiting] = []
    late: list[Waiting] = []
    clock = start
    for w in by_deadline:
        kept.append(w)
        clock += fastest[w.key].predicted_ms
        if w.deadline_ms is not None and clock > w.deadline_ms:
            longest = max(kept, key=lambda k: (fastest[k.key].predicted_ms, k.arrival_ms))
            kept.remove(longest)
            late.append(longest)
            clock -= fastest[longest.key].predicted_ms

    # Upgrades by quality gained per ms added, keeping every kept request on time.
    chosen = {w.key: fastest[w.key] for w in kept}
    share = {w.key: math.inf if w.deadline_ms is None else (w.deadline_ms - w.arrival_ms) / max(1, expected_load)
             for w in kept}
    while True:
        slack_after = _slack_after(kept, chosen, start)
        best_rank, best = None, None
        for i, w in enumerate(kept):
            current = chosen[w.key]
            for c in w.entries:
                added = c.predicted_ms - current.predicted_ms
                gain = c.quality - current.quality
                if gain <= 0 or added > slack_after[i] or c.predicted_ms > share[w.key]:
                    continue
                rank = (math.inf if added <= 0 else gain / added, gain, -i)  # earlier requests win ties
                if best_rank is None or rank > best_rank:
                    best_rank, best = rank, (w.key, c)
        if best is None:
            break
        chosen[best[0]] = best[1]

    plan = []
    clock = start
    for w in kept:
        c = chosen[w.key]
        plan.append(Assignment(w.key, c.id, c.quality, c.predicted_ms, clock, clock + c.predicted_ms, True,
                               "no budget: best quality" if w.deadline_ms is None else "on time by the plan"))
        clock += c.predicted_ms
    for w in sorted(late, key=lambda w: (w.deadline_ms or 0.0, w.arrival_ms)):
        c = fastest[w.key]
        plan.append(Assignment(w.key, c.id, c.quality, c.predicted_ms, clock, clock + c.predicted_ms, False,
                               "no schedule finishes in time behind the queue: serving the fastest"))
        clock += c.predicted_ms
    return plan


def _slack_after(kept: Sequence[Waiting], chosen: Mapping[Hashable, PredictedEntry], start: float) -> list[float]:
    """For each position, the least slack (deadline - finish) of it and every request after it."""
    finish = []
    clock = start
    for w in kept:
        clock += chosen[w.key].predicted_ms
        finish.append(clock)
    slack_after = [math.inf] * len(kept)
    running = math.inf
    for i in range(len(kept) - 1, -1, -1):
        deadline = kept[i].deadline_ms
        if deadline is not None:
            running = min(running, deadline - finish[i])
        slack_after[i] = running
    return slack_after


def plan_greedy(waiting: Sequence[Waiting], now_ms: float, free_at_ms: float | None = None,
                expected_load: int = 1) -> list[Assignment]:
    """The greedy rule over a queue: arrival order, each picks with what is left of its budget
    (``expected_load`` is ignored: greedy does not look beyond its own request)."""
    clock = max(now_ms, free_at_ms if free_at_ms is not None else now_ms)
    plan = []
    for w in sorted(waiting, key=lambda w: w.arrival_ms):
        budget = None if w.deadline_ms is None else w.deadline_ms - clock
        choice = select_schedule(w.entries, budget)
        plan.append(Assignment(w.key, choice.entry_id, choice.quality, choice.predicted_ms, clock,
                               clock + choice.predicted_ms, choice.budget_met, choice.reason))
        clock += choice.predicted_ms
    return plan


PLANNERS = {"planner": plan_queue, "greedy": plan_greedy}


def missed_budget_note(a: Assignment, budget_ms: float, wait_ms: float) -> str:
    """The one wording of "this request misses its budget": the 429's error, the response's
    notes and ``/select``'s. ``wait_ms``: the time queued before it starts (predicted or actual)."""
    return (f"budget {budget_ms:.0f} ms cannot be met: {a.reason} ({a.entry_id} predicted "
            f"{a.predicted_ms:.0f} ms after {wait_ms:.0f} ms queued)")


# -- the latency tail -----------------------------------------------------------------------------


class LatencyQuantiles:
    """Per entry, a high quantile of actual/predicted latency over a window of recent requests.

    A prediction promises a tail, not a mean: predicted = profiled (scaled to the shape) x factor.
    Until an entry has ``min_samples`` observations it borrows the quantile of all entries' ratios
    (one slow machine is slow for every schedule); until the server has any, it uses
    ``cold_margin`` over the profile's median. ``window=0`` turns learning off (factor stays at
    ``cold_margin``).
    """

    def __init__(self, quantile: float = 0.9, window: int = 64, cold_margin: float = 1.1,
                 min_samples: int = 4, max_ratio: float = 20.0) -> None:
        if not 0.0 < quantile < 1.0:
            raise ValueError(f"quantile must be in (0, 1), got {quantile}")
        if window < 0 or cold_margin <= 0:
            raise ValueError("window must be >= 0 and cold_margin > 0")
        self.quantile, self.window, self.cold_margin = quantile, window, cold_margin
        self.min_samples, self.max_ratio = min_samples, max_ratio
        self._ratios: dict[str, deque[float]] = {}
        self._pooled: deque[float] = deque(maxlen=max(1, window * 4))
        self._lock = threading.Lock()

    def observe(self, entry_id: str, profiled_ms: float, actual_ms: float) -> None:
        """``profiled_ms``: the profile's latency scaled to the request's shape, no factor applied."""
        if not (self.window > 0 and profiled_ms > 0 and math.isfinite(actual_ms) and actual_ms > 0):
            return
        ratio = min(max(actual_ms / profiled_ms, 1.0 / self.max_ratio), self.max_ratio)
        with self._lock:
            self._ratios.setdefault(entry_id, deque(maxlen=self.window)).append(ratio)
            self._pooled.append(ratio)

    def factors(self, entry_ids: Sequence[str]) -> dict[str, float]:
        with self._lock:
            pooled = (_quantile(self._pooled, self.quantile) if len(self._pooled) >= self.min_samples
                      else self.cold_margin)
            out = {}
            for entry_id in entry_ids:
                own = self._ratios.get(entry_id, ())
                out[entry_id] = _quantile(own, self.quantile) if len(own) >= self.min_samples else pooled
            return out


def _quantile(values, q: float) -> float:
    """Linear-interpolated quantile (numpy's default), without numpy for a handful of floats."""
    ordered = sorted(values)
    position = q * (len(ordered) - 1)
    low = math.floor(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)

