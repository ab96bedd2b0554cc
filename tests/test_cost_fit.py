"""The fitted per-hardware cost: features that add up to the analytic MACs, a fit that recovers
known per-unit costs, and a model that travels as JSON."""

from __future__ import annotations

import json

import numpy as np
import pytest

from ecad.cost import (FittedCost, cost_features, cost_table, fit_cost, image_macs, out_of_fold_speedups,
                       schedule_cost_features)
from ecad.generate import load_pipeline
from ecad.heuristics import block_skip, fora, taylorseer
from ecad.schedule import FORECAST, RECOMPUTE, REUSE, CacheSchedule
from ecad.setting import Setting
from ecad.tiny import build_tiny_pipeline

SETTING = Setting(32, 32, 6, 4.5)


@pytest.fixture(scope="module")
def pipe(tmp_path_factory):
    return load_pipeline(build_tiny_pipeline("pixart-alpha", tmp_path_factory.getbasetemp() / "tiny-pixart-alpha"))


def schedules(layout, steps=SETTING.num_inference_steps):
    rng = np.random.default_rng(0)
    out = [CacheSchedule.full(layout, steps), fora(layout, steps, 2), taylorseer(layout, steps, 2),
           block_skip(layout, steps, 2)]
    for _ in range(12):
        actions = rng.choice([REUSE, RECOMPUTE, FORECAST], size=(steps, layout.num_blocks, layout.num_components))
        out.append(CacheSchedule.repaired(actions, layout, rng.random((steps, layout.num_blocks)) < 0.3,
                                          rng.random(steps) < 0.3))  # some steps reuse guidance
    return out


def test_features_add_up_to_the_analytic_macs(pipe):
    from ecad.adapters import get_adapter

    layout = get_adapter(pipe).layout(pipe.transformer)
    for schedule in schedules(layout):
        features = schedule_cost_features(pipe, SETTING, schedule)
        work = sum(v for k, v in features.items() if k.startswith(("macs:", "elements:")))
        assert work == image_macs(pipe, SETTING, schedule), schedule
        assert features["count:recompute"] + features["count:reuse"] + features["count:forecast"] == (
            features["count:block_run"] * layout.num_components)
        assert features["images"] == 1.0


def test_fit_recovers_known_unit_costs_and_travels_as_json(pipe):
    from ecad.adapters import get_adapter

    layout = get_adapter(pipe).layout(pipe.transformer)
    rows = [schedule_cost_features(pipe, SETTING, s) for s in schedules(layout)]
    names = sorted(rows[0])
    rng = np.random.default_rng(1)
    truth = {n: float(rng.uniform(0.5, 2.0)) / max(r[n] for r in rows) for n in names}  # every term matters
    seconds = [sum(truth[n] * r[n] for n in names) for r in rows]
    fitted = fit_cost(rows, seconds, hardware="test")
    predicted = np.array([fitted.seconds(r) for r in rows])
    assert np.allclose(predicted, seconds, rtol=1e-6)
    back = FittedCost.from_dict(json.loads(json.dumps(fitted.to_dict())))
    assert back == fitted and back.hardware == "test"
    no_cache = rows[0]
    assert back.speedup(rows[1], no_cache) == pytest.approx(seconds[0] / seconds[1])
    assert all(c >= 0 for c in fitted.coefficients)


def test_a_fit_for_another_layout_is_refused(pipe):
    from ecad.adapters import get_adapter

    layout = get_adapter(pipe).layout(pipe.transformer)
    fitted = FittedCost(("macs:nonexistent", "images"), (1.0, 1.0))
    with pytest.raises(ValueError, match="macs:nonexistent"):
        fitted.seconds(schedule_cost_features(pipe, SETTING, CacheSchedule.full(layout, 6)))
    table = cost_table(pipe, height=32, width=32, batch_size=2, text_len=16)
    with pytest.raises(ValueError, match="grid"):
        cost_features(CacheSchedule.full(layout, 6), type(table)(table.component[:1], table.block_other[:1],
                                                                 table.other, table.component_elements[:1],
                                                                 table.block_elements[:1]))


def test_ecad_fit_cost_times_a_bank_and_writes_a_model_calibration_reads(pipe, tmp_path):
    """The CLI end to end on a tiny bank: timings kept beside the report, an out-of-fold check per
    entry, and a "model" that `FittedCost.from_report` (what --cost-model reads) accepts."""
    from ecad.adapters import get_adapter
    from ecad.bank import BankEntry, ScheduleBank, fingerprint
    from ecad.cli.fit_cost import main
    from ecad.heuristics import heuristic_suite

    layout = get_adapter(pipe).layout(pipe.transformer)
    suite = heuristic_suite(layout, SETTING.num_inference_steps)
    # every heuristic: a 2-fold fit sees half of them, enough rows for the handful of features that vary
    names = list(suite)
    bank = ScheduleBank(
        model=str(tmp_path_of(pipe)), model_fingerprint=fingerprint(dict(pipe.transformer.config)), **SETTING.to_dict(),
        scorer="none (test bank)", quality_metric="recompute_fraction",
        entries=[BankEntry(id=n, schedule=suite[n].to_dict(), macs=image_macs(pipe, SETTING, suite[n]),
                           quality={"recompute_fraction": suite[n].recompute_fraction},
                           source="no-cache" if suite[n].mask.all() else "heuristic") for n in names])
    bank_path = bank.save(tmp_path / "bank.json")
    out = tmp_path / "cost.json"
    assert main([str(bank_path), "--out", str(out), "--rounds", "1", "--calls", "1", "--folds", "2"]) == 0
    report = json.loads(out.read_text())
    assert {e["id"] for e in report["bank_entries"]} == set(names) - {"no-cache"}
    # a fold's fit may still price a held-out schedule at 0 s: no prediction then, counted
    predicted = [e["predicted_out_of_fold"] for e in report["bank_entries"]]
    assert all(p is None or p > 0 for p in predicted)
    assert report["realized_over_predicted_out_of_fold"]["unpriced"] == predicted.count(None) < len(predicted)
    model = FittedCost.from_report(report)
    assert all(c >= 0 for c in model.coefficients)
    timing = json.loads(out.with_suffix(".timing.json").read_text())
    assert set(timing["speedup"]) == set(names) - {"no-cache"}
    too_many = str(len(names) + 1)  # more folds than timed schedules
    assert main([str(bank_path), "--out", str(out), "--folds", too_many]) == 2


def tmp_path_of(pipe):
    return pipe.config._name_or_path


def test_out_of_fold_has_no_prediction_where_a_fold_prices_a_schedule_at_zero_seconds():
    # the first fold sees only schedules that differ in "count:reuse": its fit prices a schedule without reuse at 0 s
    features = [{"count:reuse": 10.0, "images": 1.0}, {"count:reuse": 20.0, "images": 1.0},
                {"count:reuse": 0.0, "images": 1.0}, {"count:reuse": 0.0, "images": 1.0}]
    seconds = [1.0, 2.0, 1.5, 1.5]
    fit = fit_cost(features[:2], seconds[:2])
    assert fit.seconds(features[2]) == 0
    predicted = out_of_fold_speedups(features, [1 / s for s in seconds], {"count:reuse": 10.0, "images": 1.0}, folds=2)
    assert np.isnan(predicted).any() and np.isfinite(predicted).any()
