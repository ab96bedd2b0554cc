"""The one timing protocol (`ecad.timing`): order, bracketing, errors, budget, paired verdicts.

Clocks are replaced by a fake one where a figure is asserted, so nothing here depends on the
machine's speed."""

import itertools

import pytest

import ecad.timing as timing
from ecad.stats import bootstrap_interval, median_of_rows
from ecad.timing import TimedCall, paired_speedups, paired_verdict, time_rounds


def test_rotated_rounds_after_warmup():
    order = []
    t = time_rounds({"a": lambda: order.append("a"), "b": lambda: order.append("b")}, rounds=3, warmup=1)
    assert order == ["a", "b"] + ["a", "b", "b", "a", "a", "b"]  # warm-up, then rotated rounds
    assert [len(t.wall_s[n]) for n in "ab"] == [3, 3] and [len(t.cpu_s[n]) for n in "ab"] == [3, 3]
    assert t.rounds == 3


def test_reference_brackets_every_group_and_ratios_use_the_runs_around():
    order = []
    calls = {name: (lambda n=name: order.append(n)) for name in ("ref", "a", "b", "c")}
    t = time_rounds(calls, rounds=2, warmup=0, reference="ref", reference_every=2, order="shuffle", seed=3)
    # each round: ref, two variants, ref, one variant, ref
    for r in range(2):
        rnd = order[r * 6:(r + 1) * 6]
        assert rnd[0] == rnd[3] == rnd[5] == "ref" and sorted(rnd[1:3] + rnd[4:5]) == ["a", "b", "c"]
    assert all(len(t.ratios[n]) == 2 for n in "abc") and "ref" not in t.ratios
    assert len(t.reference_wall_s) == 6


def _fake_clock(monkeypatch, durations):
    """perf_counter/thread_time that advance by the duration of the call being run."""
    now = {"t": 0.0}
    monkeypatch.setattr(timing.time, "perf_counter", lambda: now["t"])
    monkeypatch.setattr(timing.time, "thread_time", lambda: now["t"] / 2)
    return {name: (lambda d=d: now.__setitem__("t", now["t"] + next(d))) for name, d in durations.items()}


def test_ratio_is_mean_reference_around_over_own_time(monkeypatch):
    calls = _fake_clock(monkeypatch, {"ref": iter([1.0, 3.0]), "a": iter([0.5])})
    t = time_rounds(calls, rounds=1, warmup=0, reference="ref")
    assert t.ratios["a"] == [pytest.approx(4.0)]  # (1 + 3) / 2 / 0.5
    assert t.cpu_s["a"] == [pytest.approx(0.25)]
    assert t.speedup("a") == pytest.approx(4.0) and t.speedup("ref") == 1.0


def test_enter_and_exit_are_not_timed_and_repeats_average(monkeypatch):
    now = {"t": 0.0}
    monkeypatch.setattr(timing.time, "perf_counter", lambda: now["t"])
    monkeypatch.setattr(timing.time, "thread_time", lambda: 0.0)

    def advance(s):
        now["t"] += s

    call = TimedCall(run=lambda: advance(1.0), enter=lambda: advance(100.0), exit=lambda: advance(100.0), repeats=4)
    t = time_rounds({"x": call}, rounds=1, warmup=0)
    assert t.wall_s["x"] == [pytest.approx(1.0)]


def test_a_failing_variant_is_dropped_and_reported():
    errors = []
    runs = itertools.count()

    def flaky():
        if next(runs) >= 1:
            raise RuntimeError("boom")

    t = time_rounds({"ref": lambda: None, "ok": lambda: None, "flaky": flaky}, rounds=3, warmup=0, reference="ref",
                    on_error=lambda name, err: errors.append(name))
    assert errors == ["flaky"] and "boom" in t.failed["flaky"]
    assert len(t.ratios["ok"]) == 3 and len(t.ratios["flaky"]) == 1
    with pytest.raises(ZeroDivisionError):  # without on_error, an error is the caller's
        time_rounds({"flaky": lambda: 1 / 0}, rounds=1, warmup=0)


def test_time_budget_stops_after_the_first_round(monkeypatch):
    calls = _fake_clock(monkeypatch, {"a": itertools.repeat(1.0)})
    monkeypatch.setattr(timing.time, "monotonic", iter([0.0, 10.0, 10.0, 10.0]).__next__)
    t = time_rounds(calls, rounds=5, warmup=0, time_budget_s=5.0)
    assert t.rounds == 1


def test_paired_verdict_calls_a_winner_only_when_the_interval_excludes_one():
    t = timing.Timings(["ref", "a", "b"], "ref", ratios={"a": [2.0, 2.2, 1.9, 2.1, 2.0, 2.05],
                                                         "b": [1.0, 1.1, 0.9, 1.0, 1.05, 1.0]})
    assert paired_speedups(t, "a", "b") == pytest.approx([2.0, 2.2 / 1.1, 1.9 / 0.9, 2.1, 2.0 / 1.05, 2.05])
    verdict = paired_verdict(t, "a", "b")
    assert verdict.winner == "a" and verdict.interval[0] > 1 and verdict.rounds == 6
    tie = timing.Timings(["ref", "a", "b"], "ref", ratios={"a": [1.0, 1.2, 0.9, 1.1], "b": [1.1, 1.0, 1.0, 1.0]})
    assert paired_verdict(tie, "a", "b").winner is None


def test_bootstrap_interval_brackets_the_median():
    values = [1.0, 1.1, 1.2, 1.3, 1.4, 1.5, 1.6]
    lo, hi = bootstrap_interval(values, statistic=median_of_rows)
    assert lo <= 1.3 <= hi and lo >= 1.0 and hi <= 1.6
    assert bootstrap_interval([2.0, 2.0, 2.0]) == (2.0, 2.0)
    assert bootstrap_interval([5.0]) == (5.0, 5.0)
    # paired: the ratio of means of two samples resampled with the same indices
    lo, hi = bootstrap_interval([1.0, 2.0, 3.0], [1.0, 2.0, 3.0], statistic=lambda a, b: a.mean(1) / b.mean(1))
    assert lo == hi == 1.0
