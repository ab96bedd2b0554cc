"""The planning policy, table-tested without a server: greedy choice, queue plan, latency tail."""

import random

import pytest

from ecad.planning import (
    LatencyQuantiles,
    PredictedEntry,
    RequestShape,
    Waiting,
    missed_budget_note,
    plan_greedy,
    plan_queue,
    predict_entries,
    select_schedule,
)
from ecad.planning import RequestShape
from ecad.setting import Setting

BANK = [
    PredictedEntry("no-cache", quality=0.90, predicted_ms=1000.0),
    PredictedEntry("ecad-a", quality=0.88, predicted_ms=600.0),
    PredictedEntry("ecad-b", quality=0.80, predicted_ms=400.0),
    PredictedEntry("ecad-c", quality=0.60, predicted_ms=250.0),
]


@pytest.mark.parametrize(
    "budget, expected_id, met",
    [
        (None, "no-cache", True),  # no hint: best quality
        (5000.0, "no-cache", True),  # everything fits
        (1000.0, "no-cache", True),  # exactly at the budget fits
        (999.9, "ecad-a", True),
        (600.0, "ecad-a", True),
        (599.0, "ecad-b", True),
        (300.0, "ecad-c", True),
        (250.0, "ecad-c", True),
        (249.0, "ecad-c", False),  # below the fastest: fastest, flagged
        (0.0, "ecad-c", False),
        (-50.0, "ecad-c", False),  # queueing already ate the budget
    ],
)
def test_select_table(budget, expected_id, met):
    choice = select_schedule(BANK, budget)
    assert (choice.entry_id, choice.budget_met) == (expected_id, met)
    assert choice.budget_ms == budget


def test_quality_ties_go_to_the_faster_entry():
    tied = [PredictedEntry("slow", 0.5, 900.0), PredictedEntry("fast", 0.5, 300.0)]
    assert select_schedule(tied, None).entry_id == "fast"
    assert select_schedule(tied, 1000.0).entry_id == "fast"


def test_a_worse_and_slower_entry_is_never_chosen():
    dominated = [*BANK, PredictedEntry("dominated", 0.5, 900.0)]
    for budget in (None, 100.0, 260.0, 450.0, 700.0, 950.0, 2000.0):
        assert select_schedule(dominated, budget).entry_id != "dominated"


def test_empty_bank_is_an_error():
    with pytest.raises(ValueError):
        select_schedule([], 100.0)


def test_predictions_apply_factors():
    cands = predict_entries([("a", 0.9, 100.0), ("b", 0.8, 50.0)], {"a": 2.0})
    assert [(c.id, c.predicted_ms) for c in cands] == [("a", 200.0), ("b", 50.0)]


# -- the latency tail -------------------------------------------------------------------------


def test_quantiles_cold_start_with_the_margin_then_learn_a_tail():
    tail = LatencyQuantiles(quantile=0.9, window=10, cold_margin=1.2, min_samples=4)
    assert tail.factors(["a", "b"]) == {"a": 1.2, "b": 1.2}
    for ratio in (1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 2.0):  # one slow call in ten
        tail.observe("a", 100.0, 100.0 * ratio)
    factors = tail.factors(["a", "b"])
    assert factors["a"] == pytest.approx(1.1)  # p90 of nine 1.0 and one 2.0, interpolated
    assert factors["b"] == pytest.approx(1.1)  # unseen entries borrow the pooled quantile
    for _ in range(10):  # the window forgets: a machine that became steady is trusted again
        tail.observe("a", 100.0, 100.0)
    assert tail.factors(["a"])["a"] == pytest.approx(1.0)


def test_quantiles_ignore_garbage_and_can_be_turned_off():
    tail = LatencyQuantiles(min_samples=1)
    tail.observe("a", 0.0, 100.0)
    tail.observe("a", 100.0, float("nan"))
    assert tail.factors(["a"]) == {"a": 1.1}
    frozen = LatencyQuantiles(window=0, cold_margin=1.0, min_samples=1)
    frozen.observe("a", 100.0, 500.0)
    assert frozen.factors(["a"]) == {"a": 1.0}


def test_quantiles_are_per_shape_and_one_request_at_a_new_shape_corrects_the_next():
    small, big = RequestShape(Setting(32, 32, 20, 4.5)), RequestShape(Setting(128, 128, 20, 4.5), 8)
    tail = LatencyQuantiles(quantile=0.9, window=16, cold_margin=1.1, min_samples=4, home=small)
    for _ in range(8):
        tail.observe("a", 100.0, 100.0, small)  # "a" takes what its profile says at the bank's shape
        tail.observe("c", 100.0, 50.0, small)  # "c" was profiled on a busy moment: twice too slow
    assert tail.factors(["a", "c"], small) == {"a": 1.0, "c": 0.5}
    assert tail.factors(["a", "c"], big) == {"a": 1.0, "c": 0.5}  # never seen: each entry's own factor
    tail.observe("a", 1000.0, 1500.0, big)  # the latency model was 1.5x low at the big shape
    assert tail.factors(["a", "c"], big) == {"a": 1.5, "c": 0.75}  # at once, for every entry there
    assert tail.factors(["a", "c"], small) == {"a": 1.0, "c": 0.5}  # the bank's shape keeps its own
    tail.observe("a", 1000.0, 800.0, big)  # a lucky run does not make the promise optimistic
    assert tail.factors(["a"], big) == {"a": 1.5}


def test_quantiles_forget_the_least_recently_seen_shape():
    from ecad.planning import MAX_SHAPES

    tail = LatencyQuantiles(min_samples=1, cold_margin=1.0, home="home")
    tail.observe("a", 100.0, 100.0, "home")
    for i in range(MAX_SHAPES - 1):  # with home, as many shapes as it keeps
        tail.observe("a", 100.0, 200.0, ("shape", i))
    assert tail.factors(["a"], ("shape", 0)) == {"a": 2.0}
    tail.observe("a", 100.0, 300.0, ("shape", "one more"))
    assert tail.factors(["a"], ("shape", 0)) == {"a": 1.0}  # forgotten: the model is trusted there again
    assert tail.factors(["a"], ("shape", 1)) == {"a": 2.0} and tail.factors(["a"], "home") == {"a": 1.0}


# -- the queue planner ------------------------------------------------------------------------

ENTRIES = (
    PredictedEntry("best", 0.90, 400.0),
    PredictedEntry("mid", 0.80, 200.0),
    PredictedEntry("fast", 0.60, 100.0),
)


def waiting(key, budget, arrival=0.0, entries=ENTRIES):
    return Waiting(key, arrival, None if budget is None else arrival + budget, tuple(entries))


def summary(plan):
    return [(a.key, a.entry_id, a.on_time) for a in plan]


@pytest.mark.parametrize(
    "queue, free_at, expected",
    [
        ([], None, []),
        ([waiting("a", 1000)], None, [("a", "best", True)]),
        ([waiting("a", None)], None, [("a", "best", True)]),
        ([waiting("a", 250)], None, [("a", "mid", True)]),
        ([waiting("a", 250)], 100.0, [("a", "fast", True)]),  # the running request holds 100 ms
        ([waiting("a", 50)], None, [("a", "fast", False)]),  # below the fastest: fastest, late
        # Three at once with 600 ms each: greedy would give the first 400 ms and starve the third;
        # the plan spends the 600 ms so that all three are on time.
        ([waiting("a", 600), waiting("b", 600, 1), waiting("c", 600, 2)], None,
         [("a", "mid", True), ("b", "mid", True), ("c", "mid", True)]),
        # Earliest deadline first, whatever the arrival order; no budget goes last, at best quality.
        ([waiting("late", None), waiting("x", 900, 1), waiting("y", 300, 2)], None,
         [("y", "mid", True), ("x", "best", True), ("late", "best", True)]),
        # Infeasible queue: four 150 ms budgets, 100 ms at the fastest: one can be on time.
        ([waiting(k, 150, i) for i, k in enumerate("abcd")], None,
         [("a", "fast", True), ("b", "fast", False), ("c", "fast", False), ("d", "fast", False)]),
        # Without budgets, shortest first: a short request is not held behind a long one.
        ([waiting("long", None, 0, [PredictedEntry("best", 0.9, 9000.0)]), waiting("short", None, 1)], None,
         [("short", "best", True), ("long", "best", True)]),
        # A late request goes before the requests whose deadlines leave room, not after everyone:
        # "r" (50 ms of slack) cannot wait 100 ms for "late"; "x" and "free" can.
        ([waiting("late", 50, 0), waiting("r", 350, 1, [PredictedEntry("best", 0.9, 300.0)]),
          waiting("x", 2000, 2), waiting("free", None, 3)], None,
         [("r", "best", True), ("late", "fast", False), ("x", "best", True), ("free", "best", True)]),
        # Giving up the longest job (a pinned 500 ms) saves the two short ones behind it.
        ([waiting("pinned", 600, 0, [PredictedEntry("best", 0.9, 500.0)]), waiting("s1", 550, 1), waiting("s2", 600, 2)],
         None, [("s1", "best", True), ("s2", "mid", True), ("pinned", "best", False)]),
    ],
)
def test_plan_table(queue, free_at, expected):
    assert summary(plan_queue(queue, 0.0, free_at)) == expected


@pytest.mark.parametrize(
    "load, expected",
    [
        (1, [("a", "best", True)]),  # alone: the whole budget
        (2, [("a", "mid", True)]),  # 500 / 2 = 250 ms: room for one more request behind it
        (5, [("a", "fast", True)]),  # 100 ms each: five clients all on time
        (10, [("a", "fast", True)]),  # the fastest is always allowed
    ],
)
def test_expected_load_reserves_room_for_requests_not_here_yet(load, expected):
    assert summary(plan_queue([waiting("a", 500)], 0.0, None, expected_load=load)) == expected
    assert summary(plan_queue([waiting("a", None)], 0.0, None, expected_load=load)) == [("a", "best", True)]


def test_plan_times_are_consecutive_and_deadlines_hold():
    queue = [waiting(k, 300 + 250 * i, i) for i, k in enumerate("abcde")]
    plan = plan_queue(queue, 0.0, 40.0)
    assert plan[0].start_ms == 40.0
    for before, after in zip(plan, plan[1:]):
        assert after.start_ms == before.finish_ms
    deadlines = {w.key: w.deadline_ms for w in queue}
    assert all(a.finish_ms <= deadlines[a.key] for a in plan if a.on_time)


def test_greedy_starves_the_queue_the_planner_does_not():
    queue = [waiting("a", 600), waiting("b", 600, 1), waiting("c", 600, 2)]
    assert summary(plan_greedy(queue, 0.0)) == [("a", "best", True), ("b", "mid", True), ("c", "fast", False)]
    assert all(a.on_time for a in plan_queue(queue, 0.0))


def test_planner_keeps_at_least_as_many_on_time_as_greedy_and_greedy_quality_when_idle():
    rng = random.Random(0)
    for _ in range(300):
        queue = [waiting(i, rng.choice([None, 150, 200, 300, 400, 600, 1000]), rng.uniform(0, 300))
                 for i in range(rng.randint(1, 8))]
        now, free_at = 300.0, rng.choice([None, 350.0, 500.0])
        planned, greedy = plan_queue(queue, now, free_at), plan_greedy(queue, now, free_at)
        assert sorted(a.key for a in planned) == sorted(w.key for w in queue)
        assert sum(a.on_time for a in planned) >= sum(a.on_time for a in greedy)
        if len(queue) == 1:  # alone, the plan is the greedy choice
            assert summary(planned) == summary(greedy)


def test_the_missed_budget_note_names_the_budget_the_entry_and_the_wait():
    (late,) = plan_queue([waiting("a", 50)], 0.0)
    assert not late.on_time
    assert missed_budget_note(late, 50, 12.4) == (
        "budget 50 ms cannot be met: no schedule finishes in time behind the queue: serving the fastest as early "
        "as no other deadline forbids (fast predicted 100 ms after 12 ms queued)")


def test_late_requests_never_cost_a_kept_request_its_deadline_and_keep_their_order():
    rng = random.Random(1)
    for _ in range(300):
        queue = [waiting(i, rng.choice([None, 120, 150, 200, 300, 600]), rng.uniform(0, 100))
                 for i in range(rng.randint(2, 8))]
        plan = plan_queue(queue, 100.0)
        deadlines = {w.key: w.deadline_ms for w in queue}
        assert all(a.finish_ms <= deadlines[a.key] for a in plan if a.on_time and deadlines[a.key] is not None)
        late_deadlines = [deadlines[a.key] for a in plan if not a.on_time]
        assert late_deadlines == sorted(late_deadlines)  # the late keep their own order
        # No late request could move one place earlier without making a kept request late.
        for i, a in enumerate(plan):
            if a.on_time or i == 0 or not plan[i - 1].on_time:
                continue
            before = plan[i - 1]
            assert deadlines[before.key] is not None and before.finish_ms + a.predicted_ms > deadlines[before.key]


def test_a_running_request_is_planned_with_the_time_it_has_left_and_can_be_put_behind():
    """The server plans a running call like a waiting request pinned to its entry: a request with
    a budget goes before a long one without, which then pauses between steps."""
    running = Waiting("running", 0.0, None, (PredictedEntry("best", 0.9, 60_000.0),))
    short = waiting("short", 300, 2000.0)
    assert summary(plan_queue([running, short], 2000.0)) == [("short", "mid", True), ("running", "best", True)]
    urgent_running = Waiting("running", 0.0, 2150.0, (PredictedEntry("mid", 0.8, 100.0),))
    assert summary(plan_queue([urgent_running, short], 2000.0))[0] == ("running", "mid", True)
