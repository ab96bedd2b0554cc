"""Choosing schedules for requests: pure functions over the queue, plus the latency tail estimate.

Two policies, both pure functions of (waiting requests, clock, bank predictions):

``select_schedule`` (one request, the greedy rule)
    The best-quality entry whose predicted latency fits the budget that is left; with no budget
    the best-quality entry; below every entry the fastest one, flagged. ``plan_greedy`` applies it
    to a queue in arrival order: each request picks when it reaches the pipeline. That is how the
    server behaved before the planner; it is kept to compare against (``ECAD_PLANNER=greedy``).

``plan_queue`` (the whole queue, the default)
    1. Order by earliest deadline; requests without a budget after them, shortest first (a short
       request is not held behind a long one), ties by arrival.
    2. Decide who can be on time: with every request at its fastest entry, walk that order and,
       whenever a request would finish late, give up the request with the longest fastest time
       among those kept so far (Moore-Hodgson: this keeps the largest number of requests on
       time).
    3. Serve the given-up (*late*) requests as early as they can be without costing a kept request
       its deadline: each goes, at its fastest entry, to the earliest place in the order where
       every kept request after it is still on time (late requests keep their own order). A late
       request is not sent to the back of the queue to wait for everyone.
    4. Spend the slack on quality: repeatedly apply the upgrade (a kept request to a better entry)
       with the largest quality gain per added millisecond that keeps every kept request on time
       (an upgrade delays that request and every later one). Requests without a budget have no
       deadline, so they end at their best entry, as before.
    5. Leave room for requests not here yet: with ``expected_load`` L (how many requests the
       server has recently held at once), a request with budget B is upgraded only to entries
       predicted within B / L. If L clients each keep one request in flight, a request then waits
       for at most L - 1 others of at most B / L each, and all of them meet B; with L = 1 (one
       client, or an idle server) nothing is reserved.
    The server re-plans whenever the pipeline frees up and whenever a request arrives; only the
    first request's choice is acted on, the rest is the forecast used for admission. A request
    already running is planned like the others, pinned to its entry with the time it has left:
    when the plan puts another request first, the server pauses it at its next step boundary
    (``ecad.serving.queue``).

Every time is in ms on one monotonic clock (``ecad.deadline.monotonic_ms`` on the server).
Predictions come from the bank's hardware profile, scaled to the request's shape by the server's
latency model (``ecad.serving.latency``), times a tail factor (``LatencyQuantiles``: a high
quantile of actual/expected, per entry and request shape).
"""

from __future__ import annotations

import math
import threading
from collections import OrderedDict, deque
from dataclasses import dataclass
from typing import Hashable, Mapping, Sequence

from ecad.setting import Setting


@dataclass(frozen=True)
class RequestShape:
    """What a request asks the pipeline to do: a setting and a number of images."""

    setting: Setting
    num_images: int = 1


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


def predict_entries(entries: Sequence[tuple[str, float, float]],
                    factors: Mapping[str, float] | None = None) -> list[PredictedEntry]:
    """``entries`` are (id, quality, expected ms for the request's shape) triples; ``factors``
    the tail factors (``LatencyQuantiles.factors``) by id, 1 where missing."""
    factors = factors or {}
    return [PredictedEntry(entry_id, quality, ms * factors.get(entry_id, 1.0)) for entry_id, quality, ms in entries]


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


def _best(entries: Sequence[PredictedEntry]) -> PredictedEntry:
    return min(entries, key=lambda c: (-c.quality, c.predicted_ms, c.id))


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

    ``free_at_ms`` is when the pipeline is predicted to be free (a running request's predicted
    end, when it is not planned with the others); ``None`` or a past time means now.
    ``expected_load`` >= 1 reserves time for requests likely to arrive (step 5).
    """
    start = max(now_ms, free_at_ms if free_at_ms is not None else now_ms)
    fastest = {w.key: _fastest(w.entries) for w in waiting}

    # Moore-Hodgson on the fastest entries: the largest set that can all be on time.
    kept: list[Waiting] = []
    late: list[Waiting] = []
    clock = start
    for w in sorted(waiting, key=_due_order):
        kept.append(w)
        clock += fastest[w.key].predicted_ms
        if w.deadline_ms is not None and clock > w.deadline_ms:
            longest = max(kept, key=lambda k: (fastest[k.key].predicted_ms, k.arrival_ms))
            kept.remove(longest)
            late.append(longest)
            clock -= fastest[longest.key].predicted_ms

    # Late requests as early as no kept request's deadline forbids, in their own order.
    order = list(kept)
    deadline = {w.key: w.deadline_ms for w in kept}  # a late request has no deadline left to keep
    after = 0
    for w in sorted(late, key=lambda w: (w.deadline_ms, w.arrival_ms)):
        slack = _slack_after(order, deadline, fastest, start)
        position = next(i for i in range(after, len(order) + 1) if slack[i] >= fastest[w.key].predicted_ms)
        order.insert(position, w)
        deadline[w.key] = None
        after = position + 1

    # Upgrades of kept requests by quality gained per ms added, keeping every kept request on time.
    on_time = {w.key for w in kept}
    chosen = {w.key: fastest[w.key] for w in order}
    upgradable = [(i, w) for i, w in enumerate(order) if w.key in on_time]
    share = {w.key: math.inf if w.deadline_ms is None else (w.deadline_ms - w.arrival_ms) / max(1, expected_load)
             for w in kept}
    while True:
        slack_after = _slack_after(order, deadline, chosen, start)
        best_rank, best = None, None
        for i, w in upgradable:
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
    for w in order:
        c = chosen[w.key]
        kept_on_time = w.key in on_time
        reason = ("no budget: best quality" if w.deadline_ms is None else "on time by the plan") if kept_on_time else \
            "no schedule finishes in time behind the queue: serving the fastest as early as no other deadline forbids"
        plan.append(Assignment(w.key, c.id, c.quality, c.predicted_ms, clock, clock + c.predicted_ms, kept_on_time,
                               reason))
        clock += c.predicted_ms
    return plan


def _due_order(w: Waiting) -> tuple:
    """Earliest deadline first; without a budget, after those, shortest (at its best entry) first."""
    if w.deadline_ms is None:
        return (1, _best(w.entries).predicted_ms, w.arrival_ms)
    return (0, w.deadline_ms, w.arrival_ms)


def _slack_after(order: Sequence[Waiting], deadline: Mapping[Hashable, float | None],
                 chosen: Mapping[Hashable, PredictedEntry], start: float) -> list[float]:
    """For each position (and one past the end), the least slack (deadline - finish) of the
    requests from there on; a request without a deadline has unbounded slack."""
    finish = []
    clock = start
    for w in order:
        clock += chosen[w.key].predicted_ms
        finish.append(clock)
    slack_after = [math.inf] * (len(order) + 1)
    running = math.inf
    for i in range(len(order) - 1, -1, -1):
        due = deadline[order[i].key]
        if due is not None:
            running = min(running, due - finish[i])
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


MAX_SHAPES = 64  # request shapes whose latency the tail remembers (the least recently seen is forgotten)


class LatencyQuantiles:
    """A high quantile of actual/expected latency over a window of recent requests, per entry and
    request shape (``expected``: the profile scaled to the shape by the latency model; ``home``:
    the profiled shape, where expected is the profile itself).

    A prediction promises a tail, not a mean: predicted = expected x factor. At ``home`` the factor
    of an entry is the quantile of its own ratios, else of every entry's there (a machine slower
    than its profile is slow for every schedule), else ``cold_margin``. At another shape it is
    the entry's own quantile there once it has enough, else its factor at home times the shape's
    correction: the quantile, over requests seen at that shape, of their ratio over their entry's
    factor at home (what the latency model gets wrong about that shape; 1 until seen).

    Each level needs ``min_samples`` observations; with fewer, the largest of them and the level
    below is taken, so one request at a new size corrects the next at once, and a lucky one does
    not make the promise optimistic. ``window=0`` turns learning off (factor ``cold_margin``).
    """

    def __init__(self, quantile: float = 0.9, window: int = 64, cold_margin: float = 1.1,
                 min_samples: int = 4, max_ratio: float = 20.0, home: Hashable = None) -> None:
        if not 0.0 < quantile < 1.0:
            raise ValueError(f"quantile must be in (0, 1), got {quantile}")
        if window < 0 or cold_margin <= 0:
            raise ValueError("window must be >= 0 and cold_margin > 0")
        self.quantile, self.window, self.cold_margin = quantile, window, cold_margin
        self.min_samples, self.max_ratio, self.home = min_samples, max_ratio, home
        self._ratios: dict[tuple[str, Hashable], deque[float]] = {}
        # per shape: at home the ratios of every entry; elsewhere each ratio over its entry's home factor
        self._by_shape: OrderedDict[Hashable, deque[float]] = OrderedDict()
        self._lock = threading.Lock()

    def observe(self, entry_id: str, expected_ms: float, actual_ms: float, shape: Hashable = None) -> None:
        """``expected_ms``: the profile's latency scaled to the request's ``shape``, no factor applied."""
        if not (self.window > 0 and expected_ms > 0 and math.isfinite(actual_ms) and actual_ms > 0):
            return
        ratio = min(max(actual_ms / expected_ms, 1.0 / self.max_ratio), self.max_ratio)
        with self._lock:
            relative = ratio if shape == self.home else ratio / self._home_factor_locked(entry_id)
            if shape not in self._by_shape and len(self._by_shape) >= MAX_SHAPES:
                forgotten = next(k for k in self._by_shape if k != self.home)
                del self._by_shape[forgotten]
                self._ratios = {k: v for k, v in self._ratios.items() if k[1] != forgotten}
            self._by_shape.setdefault(shape, deque(maxlen=self.window * 4)).append(relative)
            self._by_shape.move_to_end(shape)
            self._ratios.setdefault((entry_id, shape), deque(maxlen=self.window)).append(ratio)

    def factors(self, entry_ids: Sequence[str], shape: Hashable = None) -> dict[str, float]:
        with self._lock:
            if shape == self.home:
                return {entry_id: self._home_factor_locked(entry_id) for entry_id in entry_ids}
            correction = self._level(self._by_shape.get(shape, ()), 1.0)
            return {entry_id: self._level(self._ratios.get((entry_id, shape), ()),
                                          self._home_factor_locked(entry_id) * correction)
                    for entry_id in entry_ids}

    def _home_factor_locked(self, entry_id: str) -> float:
        every_entry = self._level(self._by_shape.get(self.home, ()), self.cold_margin)
        return self._level(self._ratios.get((entry_id, self.home), ()), every_entry)

    def _level(self, samples, below: float) -> float:
        """The quantile of ``samples`` once there are enough, else the largest of them and ``below``."""
        return _quantile(samples, self.quantile) if len(samples) >= self.min_samples else max([below, *samples])


def _quantile(values, q: float) -> float:
    """Linear-interpolated quantile (numpy's default), without numpy for a handful of floats."""
    ordered = sorted(values)
    position = q * (len(ordered) - 1)
    low = math.floor(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)

