"""The verdict at each quality bar: ECAD's pick against the best other method's pick, paired.

Both picks were chosen on the validation split and ran in every verdict round, so each round gives
one ratio of their speedups over no-cache in which that round's machine drift cancels
(`ecad.timing.paired_verdict`). The verdict is the median of those ratios with a 95% bootstrap
interval over rounds; a winner is named only where the interval excludes 1. The best other method
is the non-ECAD family whose pick has the highest median speedup in the same rounds (which, if
anything, flatters it: the largest of several noisy medians). Min–max spreads are shown beside
it as a display of the noise, never as the verdict.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass
from typing import Any

from ecad.bench.tuning import Bar
from ecad.stats import bootstrap_interval, median_of_rows
from ecad.timing import PairedVerdict, Timings, paired_verdict

REFERENCE = "no-cache"


def speed(timings: Timings | None, label: str) -> dict[str, Any] | None:
    """A point's per-round speedups over no-cache: median, 95% interval of the median, min, max."""
    ratios = (timings.ratios.get(label) if timings is not None else None) or []
    if label == REFERENCE and timings is not None and timings.wall_s.get(REFERENCE):
        ratios = [1.0] * len(timings.wall_s[REFERENCE])
    if not ratios:
        return None
    lo, hi = bootstrap_interval(ratios, statistic=median_of_rows, resamples=4000)
    return {"median": statistics.median(ratios), "interval": [lo, hi], "min": min(ratios), "max": max(ratios),
            "rounds": len(ratios), "ratios": list(ratios)}


@dataclass(frozen=True)
class BarVerdict:
    bar: Bar
    ecad_family: str
    ecad: Any | None  # the ECAD family's pick (a runner Point), None if none clears the bar on validation
    other_family: str | None
    other: Any | None
    paired: PairedVerdict | None  # ECAD's pick over the other's, per round

    @property
    def winner(self) -> str | None:
        """The winning family, or None (no winner at this many rounds, or nothing to compare)."""
        if self.ecad is None or self.other is None:
            return self.ecad_family if self.other is None and self.ecad is not None else (
                self.other_family if self.ecad is None and self.other is not None else None)
        if self.paired is None or self.paired.winner is None:
            return None
        return self.ecad_family if self.paired.winner == self.ecad.label else self.other_family

    @property
    def text(self) -> str:
        if self.ecad is None and self.other is None:
            return "no method clears the bar on validation"
        if self.other is None:
            return f"{self.ecad_family} wins: no other method clears the bar on validation"
        if self.ecad is None:
            return f"{self.other_family} wins: {self.ecad_family} clears the bar with no entry on validation"
        if self.paired is None:
            return "not timed"
        lo, hi = self.paired.interval
        ratio = f"{self.paired.median:.2f}x [{lo:.2f}, {hi:.2f}] over {self.paired.rounds} rounds"
        if self.winner is None:
            return f"no winner: {ratio} includes 1"
        return f"{self.winner} faster: {ratio}"

    @property
    def relative_width(self) -> float | None:
        """Width of the paired interval over its median (the stopping rule's measure)."""
        if self.paired is None:
            return None
        lo, hi = self.paired.interval
        return (hi - lo) / self.paired.median

    def to_dict(self) -> dict[str, Any]:
        return {"bar": self.bar.name, "key": self.bar.key, "ecad_family": self.ecad_family,
                "ecad": self.ecad.label if self.ecad is not None else None, "other_family": self.other_family,
                "other": self.other.label if self.other is not None else None,
                "paired": self.paired.to_dict() if self.paired is not None else None,
                "relative_width": self.relative_width, "winner": self.winner, "verdict": self.text}


def best_other(picks: dict[str, Any], timings: Timings | None) -> tuple[str | None, Any | None]:
    """The non-ECAD family whose pick is fastest in the verdict rounds (by MACs if none was timed)."""
    others = {f: p for f, p in picks.items() if p.method.kind not in ("ecad", "reference")}

    def rank(p) -> float:
        s = speed(timings, p.label)
        return s["median"] if s is not None else (p.macs_speedup or 0.0)

    family = max(others, key=lambda f: rank(others[f]), default=None)
    return family, others.get(family)


def bar_verdicts(bars: list[Bar], picks: dict[str, dict[str, Any]], timings: Timings | None,
                 ecad_families: list[str]) -> list[BarVerdict]:
    """One verdict per bar and ECAD family (the bank; at another setting also its transferred and
    resampled versions), each against the best other family at that bar."""
    out = []
    for bar in bars:
        at_bar = picks.get(bar.key, {})
        other_family, other = best_other(at_bar, timings)
        for family in ecad_families:
            mine = at_bar.get(family)
            paired = None
            if mine is not None and other is not None and timings is not None and \
                    timings.ratios.get(mine.label) and timings.ratios.get(other.label):
                paired = paired_verdict(timings, mine.label, other.label)
            out.append(BarVerdict(bar, family, mine, other_family, other, paired))
    return out
