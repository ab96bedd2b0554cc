"""The one interleaved-timing protocol: profiles, benchmarks, the cost fit and the scripts use it.

On a shared machine the speed of the box drifts by tens of percent within minutes, so a variant
is never timed on its own. A *round* runs every variant once, in an order that changes from round
to round (rotated, or shuffled with a fixed seed), after ``warmup`` untimed rounds. With a
``reference`` (no-cache, usually) the reference is also run before the round, after it, and between
every ``reference_every`` variants; a variant's *ratio* in a round is the mean of the two reference
times around it over its own time, so a drift is divided out at the scale of a few runs. Every run
is timed by the wall clock and by the thread's CPU time.

`paired_speedups` compares two variants round by round (both were timed in the same round), and
`bootstrap_interval` puts a confidence interval on the median of those per-round values: a winner
is one whose interval excludes 1. Min-max spreads are a display, not a verdict.
"""

from __future__ import annotations

import random
import statistics
import time
from dataclasses import dataclass, field
from typing import Any, Callable

from ecad.stats import bootstrap_interval, median_of_rows


@dataclass(frozen=True)
class TimedCall:
    """A variant to time: ``run`` is timed; ``enter``/``exit`` (e.g. enabling a cache method) are not."""

    run: Callable[[], Any]
    enter: Callable[[], Any] | None = None
    exit: Callable[[], Any] | None = None
    repeats: int = 1  # runs in a row per timing (a short call varies by tens of %): seconds are per run


@dataclass
class Timings:
    """What `time_rounds` measured: per variant, one value per completed round."""

    names: list[str]
    reference: str | None
    wall_s: dict[str, list[float]] = field(default_factory=dict)
    cpu_s: dict[str, list[float]] = field(default_factory=dict)
    #: reference seconds around the variant / its seconds, per round (with a reference only)
    ratios: dict[str, list[float]] = field(default_factory=dict)
    cpu_ratios: dict[str, list[float]] = field(default_factory=dict)  # the same by thread CPU time
    #: every reference run's seconds, in order (several per round)
    reference_wall_s: list[float] = field(default_factory=list)
    reference_cpu_s: list[float] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)  # name -> error, for variants dropped on an error

    @property
    def rounds(self) -> int:
        return min((len(v) for k, v in self.wall_s.items() if k not in self.failed), default=0)

    def median_s(self, name: str) -> float:
        return statistics.median(self.wall_s[name])

    def speedup(self, name: str) -> float:
        """Median per-round ratio (with a reference), else median reference time / median own time."""
        if self.reference is None:
            raise ValueError("a speedup needs a reference variant")
        if name == self.reference:
            return 1.0
        return statistics.median(self.ratios[name])

    def spread(self, name: str) -> tuple[float, float]:
        """(min, max) per-round ratio: a display of the noise, not a verdict."""
        return min(self.ratios[name]), max(self.ratios[name])

    def summary(self, name: str) -> dict[str, Any]:
        ratios = self.ratios.get(name) or []
        out: dict[str, Any] = {"median_s": self.median_s(name), "wall_s": list(self.wall_s[name]),
                               "cpu_s": list(self.cpu_s[name])}
        if ratios:
            out |= {"speedup": statistics.median(ratios), "min": min(ratios), "max": max(ratios),
                    "ratios": list(ratios)}
        return out


def _clock(call: TimedCall) -> tuple[float, float]:
    """(wall, thread CPU) seconds per run of one timing of ``call``."""
    if call.enter is not None:
        call.enter()
    try:
        wall, cpu = time.perf_counter(), time.thread_time()
        for _ in range(call.repeats):
            call.run()
        return (time.perf_counter() - wall) / call.repeats, (time.thread_time() - cpu) / call.repeats
    finally:
        if call.exit is not None:
            call.exit()


def time_rounds(
    calls: dict[str, Callable[[], Any] | TimedCall],
    *,
    rounds: int,
    warmup: int = 1,
    reference: str | None = None,
    reference_every: int | None = None,
    order: str = "rotate",
    seed: int = 0,
    time_budget_s: float | None = None,
    on_error: Callable[[str, BaseException], None] | None = None,
    progress: Callable[[int], None] | None = None,
    timings: Timings | None = None,
) -> Timings:
    """Time ``calls`` in interleaved rounds (see the module docstring).

    ``order``: "rotate" (round r starts at variant r: each variant takes every position) or
    "shuffle" (a fresh order each round from ``random.Random(seed)``). ``reference_every``: the
    reference runs between every that many variants (None: only before and after the round).
    ``time_budget_s``: after the first timed round, no new round starts once this many seconds
    have passed since the call began (warm-up included).
    ``on_error``: a variant that raises is reported and dropped from later rounds (without it,
    the error propagates). ``progress(n)`` is called with the number of variant runs done (warm-up included). ``timings``: add
    these rounds to an earlier `Timings` (e.g. one round per batch size at a time).
    """
    if rounds < 1:
        raise ValueError(f"rounds must be >= 1, got {rounds}")
    if order not in ("rotate", "shuffle"):
        raise ValueError(f"order must be 'rotate' or 'shuffle', got {order!r}")
    if reference is not None and reference not in calls:
        raise ValueError(f"reference {reference!r} is not among the timed calls")
    wrapped = {name: c if isinstance(c, TimedCall) else TimedCall(c) for name, c in calls.items()}
    variants = [n for n in wrapped if n != reference]
    out = timings or Timings(list(wrapped), reference)
    for name in wrapped:
        out.wall_s.setdefault(name, [])
        out.cpu_s.setdefault(name, [])
        if reference is not None and name != reference:
            out.ratios.setdefault(name, [])
            out.cpu_ratios.setdefault(name, [])
    rng = random.Random(seed)

    def clock(name: str) -> tuple[float, float] | None:
        try:
            return _clock(wrapped[name])
        except Exception as err:  # noqa: BLE001 - reported to on_error, or re-raised
            if on_error is None or name == reference:
                raise
            out.failed[name] = f"{type(err).__name__}: {err}"
            on_error(name, err)
            return None

    started = time.monotonic()
    for _ in range(warmup):
        for name in wrapped:
            if name not in out.failed:
                clock(name)
                if progress and name != reference:
                    progress(1)
    for r in range(rounds):
        if r > 0 and time_budget_s is not None and time.monotonic() - started > time_budget_s:
            break
        live = [n for n in variants if n not in out.failed]
        if order == "rotate":
            k = r % max(1, len(live))
            live = live[k:] + live[:k]
        else:
            rng.shuffle(live)
        if reference is None:
            for name in live:
                if (t := clock(name)) is not None:
                    out.wall_s[name].append(t[0])
                    out.cpu_s[name].append(t[1])
                if progress:
                    progress(1)
            continue
        every = reference_every or max(1, len(live))

        def clock_reference() -> tuple[float, float]:
            t = clock(reference)
            out.reference_wall_s.append(t[0])
            out.reference_cpu_s.append(t[1])
            return t

        before = clock_reference()
        out.wall_s[reference].append(before[0])
        out.cpu_s[reference].append(before[1])
        for start in range(0, len(live), every):
            group = [(name, clock(name)) for name in live[start:start + every]]
            after = clock_reference()
            for name, t in group:
                if t is not None:
                    out.wall_s[name].append(t[0])
                    out.cpu_s[name].append(t[1])
                    out.ratios[name].append((before[0] + after[0]) / 2 / t[0])
                    out.cpu_ratios[name].append((before[1] + after[1]) / 2 / t[1] if t[1] > 0 else float("nan"))
                if progress:
                    progress(1)
            before = after
        if not live:  # a round of the reference alone still times it twice
            clock_reference()
    return out


def paired_speedups(timings: Timings, a: str, b: str) -> list[float]:
    """Per round, how much faster ``a`` ran than ``b`` (ratio of their reference ratios, or of
    their times without a reference): both were timed in the same round, so the machine's drift
    between rounds cancels."""
    if timings.reference is not None and a != timings.reference and b != timings.reference:
        return [ra / rb for ra, rb in zip(timings.ratios[a], timings.ratios[b])]
    return [tb / ta for ta, tb in zip(timings.wall_s[a], timings.wall_s[b])]


@dataclass(frozen=True)
class PairedVerdict:
    """``a`` against ``b`` over paired rounds: the median per-round speedup and its interval."""

    a: str
    b: str
    median: float
    interval: tuple[float, float]
    rounds: int

    @property
    def winner(self) -> str | None:
        """``a`` or ``b`` where the interval excludes 1, else None (a tie at this many rounds)."""
        lo, hi = self.interval
        return self.a if lo > 1 else self.b if hi < 1 else None

    def to_dict(self) -> dict[str, Any]:
        return {"a": self.a, "b": self.b, "median": self.median, "interval": list(self.interval),
                "rounds": self.rounds, "winner": self.winner}


def paired_verdict(timings: Timings, a: str, b: str, *, level: float = 0.95, seed: int = 0) -> PairedVerdict:
    values = paired_speedups(timings, a, b)
    interval = bootstrap_interval(values, statistic=median_of_rows, level=level, resamples=4000, seed=seed)
    return PairedVerdict(a, b, statistics.median(values), interval, len(values))
