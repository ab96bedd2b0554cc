import pytest

from ecad.select import (
    Candidate,
    LatencyCorrector,
    RequestShape,
    predict_candidates,
    remaining_budget,
    scale_latency,
    select_schedule,
)

BANK = [
    Candidate("no-cache", quality=0.90, predicted_ms=1000.0),
    Candidate("ecad-a", quality=0.88, predicted_ms=600.0),
    Candidate("ecad-b", quality=0.80, predicted_ms=400.0),
    Candidate("ecad-c", quality=0.60, predicted_ms=250.0),
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
    tied = [Candidate("slow", 0.5, 900.0), Candidate("fast", 0.5, 300.0)]
    assert select_schedule(tied, None).entry_id == "fast"
    assert select_schedule(tied, 1000.0).entry_id == "fast"


def test_a_worse_and_slower_entry_is_never_chosen():
    dominated = [*BANK, Candidate("dominated", 0.5, 900.0)]
    for budget in (None, 100.0, 260.0, 450.0, 700.0, 950.0, 2000.0):
        assert select_schedule(dominated, budget).entry_id != "dominated"


def test_empty_bank_is_an_error():
    with pytest.raises(ValueError):
        select_schedule([], 100.0)


def test_scale_latency_by_tokens_steps_and_batch():
    base = RequestShape(height=32, width=32, num_inference_steps=20, batch_size=1)
    assert scale_latency(100.0, base, base) == 100.0
    assert scale_latency(100.0, base, RequestShape(64, 64, 20, 1)) == 400.0
    assert scale_latency(100.0, base, RequestShape(32, 32, 50, 1)) == 250.0
    assert scale_latency(100.0, base, RequestShape(32, 32, 20, 4)) == 400.0


def test_remaining_budget_subtracts_queue_wait():
    assert remaining_budget(None, 50.0) is None
    assert remaining_budget(500.0, 120.0) == 380.0
    assert remaining_budget(500.0, -3.0) == 500.0


def test_predictions_apply_corrections():
    shape = RequestShape(32, 32, 20, 1)
    cands = predict_candidates([("a", 0.9, 100.0), ("b", 0.8, 50.0)], shape, shape, {"a": 2.0})
    assert [(c.id, c.predicted_ms) for c in cands] == [("a", 200.0), ("b", 50.0)]


def test_corrector_learns_a_slower_machine_and_shares_it():
    corrector = LatencyCorrector(smoothing=0.5)
    assert corrector.corrections(["a", "b"]) == {"a": 1.0, "b": 1.0}
    for _ in range(30):
        predicted = 100.0 * corrector.corrections(["a"])["a"]
        corrector.observe("a", predicted, actual_ms=300.0)
    ratios = corrector.corrections(["a", "b"])
    assert ratios["a"] == pytest.approx(3.0, rel=0.02)
    assert ratios["b"] == pytest.approx(3.0, rel=0.02)  # unseen entries borrow the mean


def test_corrector_ignores_garbage_observations():
    corrector = LatencyCorrector()
    corrector.observe("a", 0.0, 100.0)
    corrector.observe("a", 100.0, float("nan"))
    assert corrector.corrections(["a"]) == {"a": 1.0}
