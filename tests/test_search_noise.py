"""Noise-aware search: racing, bootstrap intervals, the validation split, the surrogate pre-screen."""

from __future__ import annotations

import json

import numpy as np
import pytest

from ecad.bank import BankEntry, outranks, quality_for_ranking
from ecad.paths import DEFAULT_MODEL
from ecad.quality.prompts import assert_disjoint, prompt_set, validation_prompts
from ecad.search.optimizer.loop import archive_front, first_stage_key, run_search
from ecad.search.optimizer.noise import (
    RacingSettings, bootstrap_interval, could_be_nondominated, first_samples, optimistic_point,
)
from ecad.search.optimizer.nsga import GeneticSettings
from ecad.search.optimizer.surrogate import SurrogateSettings, rank_and_crowding_order
from ecad.search.optimizer.synthetic import synthetic_task
from ecad.search.executors import LocalExecutor

SMALL = GeneticSettings(population=12)


def noisy_task():
    return synthetic_task(shape=(5, 2, 2), num_samples=8, noise=0.05)


def search(tmp_path, name, seed=0, generations=5, **features):
    task = noisy_task()
    result = run_search(task, tmp_path / name, LocalExecutor(task.recipe), generations=generations, settings=SMALL,
                        seed=seed, progress=False, plot=False, **features)
    return task, result


def state_of(run):
    state = json.loads((run / "state.json").read_text())
    for record in state["history"]:
        record.pop("seconds")
    return state


def test_racing_is_deterministic_in_the_seed_and_renders_fewer_images(tmp_path):
    racing = RacingSettings(first_fraction=0.25)
    task, raced = search(tmp_path, "a", racing=racing)
    search(tmp_path, "b", racing=racing)
    assert state_of(tmp_path / "a") == state_of(tmp_path / "b")
    assert (tmp_path / "a" / "memo.jsonl").read_text() != ""
    keys = lambda run: sorted(json.loads(l)["key"] for l in (run / "memo.jsonl").read_text().splitlines())
    assert keys(tmp_path / "a") == keys(tmp_path / "b")
    assert first_samples(8, 0.25, 0) != first_samples(8, 0.25, 1), "the raced subset depends on the seed"

    _, plain = search(tmp_path, "plain")
    assert raced.state.history[-1]["images_total"] < plain.state.history[-1]["images_total"]

    memo = raced.memo
    first = [r for r in memo.records.values() if r.stage == "first"]
    raced_out = [r for r in first if r.key.removesuffix("@first") not in memo]
    promoted = [r for r in first if r.key.removesuffix("@first") in memo]
    assert raced_out and promoted
    evaluator = task.recipe.build()
    for record in promoted:  # first samples + the rest, merged == rendering everything at once
        full = memo[record.key.removesuffix("@first")]
        direct = evaluator.evaluate(full.bits)
        assert sorted(full.result.sample_ids) == list(range(8)) and full.images == 6 and record.images == 2
        for name, value in direct.metrics.items():
            assert full.result.metrics[name] == pytest.approx(value, rel=1e-12)
    for record in raced_out:  # dropped only when even its optimistic bound is dominated
        front = archive_front(memo, record.generation - 1)
        front_F = task.objective_matrix(r.result for r in front)
        point = optimistic_point(record.result, task.objectives, task.quality_metric, racing.z)
        assert not could_be_nondominated(point, front_F)
        assert first_stage_key(record.key.removesuffix("@first")) == record.key


def test_bootstrap_interval_is_seeded_and_narrows_with_more_samples():
    rng = np.random.default_rng(0)
    few, many = rng.normal(1.0, 0.2, 8), rng.normal(1.0, 0.2, 128)
    assert bootstrap_interval(few) == bootstrap_interval(few)
    low, high = bootstrap_interval(few)
    assert low < few.mean() < high
    many_low, many_high = bootstrap_interval(many)
    assert many_high - many_low < high - low
    assert bootstrap_interval([3.0]) == (3.0, 3.0)


def entry(entry_id, mean, interval):
    return BankEntry(id=entry_id, schedule={}, macs=1, quality={"reward": mean},
                     interval={"reward": interval} if interval else None)


def test_no_cached_entry_outranks_no_cache_by_noise():
    no_cache = entry("no-cache", 0.50, (0.48, 0.52))
    noisy_win = entry("ecad-a", 0.51, (0.46, 0.56))  # better mean, interval overlaps no-cache's
    clear_win = entry("ecad-b", 0.60, (0.55, 0.65))
    worse = entry("ecad-c", 0.40, (0.35, 0.45))
    assert not outranks(noisy_win, no_cache, "reward")
    assert quality_for_ranking(noisy_win, no_cache, "reward") == 0.50
    assert outranks(clear_win, no_cache, "reward")
    assert quality_for_ranking(clear_win, no_cache, "reward") == 0.60
    assert quality_for_ranking(worse, no_cache, "reward") == 0.40
    # without intervals the point estimates decide
    assert outranks(entry("x", 0.51, None), entry("no-cache", 0.50, None), "reward")
    validated = BankEntry(id="v", schedule={}, macs=1, quality={"reward": 0.9}, validation={"reward": 0.45})
    assert validated.score("reward") == 0.45 and not outranks(validated, no_cache, "reward")


@pytest.mark.parametrize("model", ["generic-model", str(DEFAULT_MODEL)])
def test_validation_split_is_disjoint_from_calibration_and_held_out(model):
    calibration = prompt_set(model, 8, "calibration")
    validation = validation_prompts(model, 8, calibration)
    assert len(set(validation)) == 8
    assert not set(validation) & set(calibration)
    assert not set(validation) & set(prompt_set(model, 256, "held-out"))
    with pytest.raises(ValueError, match="overlap the calibration prompts"):
        assert_disjoint(validation, calibration=validation[:1])
    if model == "generic-model":  # the generic list has 8 validation prompts: 2 taken leaves 6
        with pytest.raises(ValueError, match="only 6 validation prompts"):
            validation_prompts(model, 8, calibration + validation[:2])


def test_prescreen_ranks_by_front_then_crowding():
    F = np.array([[0.0, 1.0], [1.0, 0.0], [0.5, 0.5], [1.0, 1.0], [0.4, 0.6]])
    order = rank_and_crowding_order(F)
    assert set(order[:4]) == {0, 1, 2, 4} and order[4] == 3
    assert set(order[:2]) == {0, 1}, "the front's extremes have infinite crowding distance"


def test_surrogate_is_deterministic_and_renders_only_the_population(tmp_path):
    surrogate = SurrogateSettings(pool_factor=4)
    _, first = search(tmp_path, "a", surrogate=surrogate)
    search(tmp_path, "b", surrogate=surrogate)
    assert state_of(tmp_path / "a") == state_of(tmp_path / "b")
    for record in first.state.history[1:]:
        assert record["evaluated"] <= SMALL.population
    _, plain = search(tmp_path, "plain")
    assert first.state.history[-1]["hypervolume"] > plain.state.history[-1]["hypervolume"]


def test_bank_keeps_heuristics_the_front_does_not_beat_beyond_noise():
    from ecad.search.optimizer.evaluation import CandidateResult
    from ecad.search.optimizer.loop import SearchResult
    from ecad.search.optimizer.run_folder import MemoRecord
    from ecad.search.optimizer.space import BitSpace
    from ecad.search.optimizer.task import SearchTask
    from ecad.search.to_bank import bank_records

    space = BitSpace((4, 1, 1))  # three searched bits
    task = SearchTask(space=space, recipe=None, objectives=("psnr", "reward"), quality_metric="psnr")
    noise = np.array([1.0, -1.0] * 4)  # mean 0: the means are exactly the values given

    def record(label, bits, psnr, reward, cost, spread):
        samples = {"psnr": list(psnr + spread * noise), "reward": list(reward + spread / 100 * noise)}
        result = CandidateResult.from_samples(samples, list(range(8)), cost=cost, quality_metric="psnr")
        return MemoRecord(task.key(np.array(bits, bool)), np.array(bits, bool), result, 0, label)

    no_cache = record("no-cache", [1, 1, 1], 60.0, 0.80, 1.0, 0.0)
    searched = record(None, [0, 0, 0], 30.0, 0.80, 0.5, 2.0)
    close = record("fora-2", [0, 1, 1], 29.8, 0.79, 0.55, 2.0)  # behind the front by less than its noise
    beaten = record("fora-9", [1, 0, 0], 20.0, 0.50, 0.6, 0.1)  # far behind, little noise
    earlier = record("bank:ecad-g1-x", [0, 0, 1], 29.8, 0.79, 0.55, 2.0)  # an earlier front's: not a heuristic
    result = SearchResult(state=None, front=[searched], seed_records=[no_cache, close, beaten, earlier],
                          memo={no_cache.key: no_cache})
    labels = [r.label for r in bank_records(task, result)]
    assert sorted(labels, key=str) == [None, "fora-2", "no-cache"]
    assert sorted((r.label for r in bank_records(task, result, z=0.0)), key=str) == [None, "no-cache"]


def test_quality_floor_spends_the_population_above_it_and_keeps_the_front(tmp_path):
    """A floor on `weighted`: after a few generations the whole population clears it (plain NSGA-II
    keeps cheap, poor schedules), the run is deterministic and records the floor, racing renders
    in full only candidates whose optimistic bound could clear it, and the archive front (the
    bank) still holds the cheap schedules found below it."""
    from ecad.search.optimizer.noise import could_clear_floors
    from ecad.search.optimizer.task import QualityFloor

    floor = QualityFloor("weighted", 0.6)
    racing = RacingSettings(first_fraction=0.25)

    def floored(name):
        task = noisy_task()
        task.floors = (floor,)
        result = run_search(task, tmp_path / name, LocalExecutor(task.recipe), generations=6, settings=SMALL,
                            seed=0, progress=False, plot=False, racing=racing)
        return task, result

    task, result = floored("a")
    floored("b")
    assert state_of(tmp_path / "a") == state_of(tmp_path / "b")
    config = json.loads((tmp_path / "a" / "config.json").read_text())
    assert config["quality_floors"] == [{"metric": "weighted", "minimum": 0.6}]

    population = [result.memo[k].result for k in result.state.population_keys if k in result.memo]
    assert population and all(r.metrics["weighted"] >= floor.minimum for r in population)
    _, plain = search(tmp_path, "plain", generations=6, racing=racing)
    plain_population = [plain.memo[k].result for k in plain.state.population_keys if k in plain.memo]
    assert any(r.metrics["weighted"] < floor.minimum for r in plain_population), "the floor changed nothing"
    assert min(r.result.metrics["weighted"] for r in result.front) < floor.minimum, "the bank keeps the cheap end"

    first = [r for r in result.memo.records.values() if r.stage == "first" and r.generation > 0]
    promoted = [r for r in first if r.key.removesuffix("@first") in result.memo]
    assert promoted and all(could_clear_floors(r.result, task.floors, racing.z) for r in promoted)
    assert any(not could_clear_floors(r.result, task.floors, racing.z) for r in first), "no candidate raced out"


def test_quality_floor_parses_and_names_its_option():
    from ecad.cli.calibrate import parse_floors
    from ecad.search.optimizer.task import QualityFloor

    assert parse_floors(["psnr=29", "reward=0.3"], ("psnr", "scenes-reward")) == (
        QualityFloor("psnr", 29.0), QualityFloor("scenes-reward", 0.3))
    with pytest.raises(ValueError, match="METRIC=VALUE"):
        QualityFloor.parse("psnr")
    with pytest.raises(ValueError, match="--quality-floor ssim=0.9.*searched objective.*psnr"):
        parse_floors(["ssim=0.9"], ("psnr",))


def test_step_plane_mutation_moves_whole_steps_and_is_deterministic(tmp_path):
    """A step-aligned move changes exactly one step plane of one segment (filled with one value, or
    a neighbour's copy); the run is deterministic in its seed, records the setting, and runs
    recorded without it keep their config (resume)."""
    from pymoo.core.population import Population

    from ecad.search.optimizer.nsga import GeneProblem, ResampleMutation, StepPlaneMutation
    from ecad.search.optimizer.space import IntegerSpace

    planes, blocks, components = 4, 3, 2
    space = IntegerSpace(((planes * blocks * components, 0, 2, 1), (planes * blocks, 0, 1, 0)))
    X = space.random(200, seed=1)
    mutation = StepPlaneMutation(ResampleMutation(prob_var=0.0), space, planes, move_prob=1.0)
    Y = mutation.do(GeneProblem(space), Population.new(X=X.copy()), random_state=np.random.default_rng(0)).get("X")
    filled = copied = 0
    for x, y in zip(X, Y):
        changed = [(start + step * (count // planes), count // planes)
                   for start, count, _, _ in space.value_segments() for step in range(planes)
                   if (x[start + step * (count // planes): start + (step + 1) * (count // planes)]
                       != y[start + step * (count // planes): start + (step + 1) * (count // planes)]).any()]
        assert len(changed) <= 1, "one plane per move"
        if changed:
            lo, size = changed[0]
            plane = y[lo:lo + size]
            filled += len(set(plane)) == 1
            copied += any((plane == y[lo + d * size: lo + (d + 1) * size]).all() for d in (-1, 1)
                          if 0 <= lo + d * size and lo + (d + 1) * size <= len(y))
    assert filled > 20 and copied > 20

    step = GeneticSettings(population=12, step_mutation_prob=0.5, step_planes=4)
    assert "step_mutation_prob" not in SMALL.to_dict(), "runs without it keep their recorded settings"
    with pytest.raises(ValueError, match="step_planes"):
        GeneticSettings(step_mutation_prob=0.5)
    states = []
    for name in ("a", "b"):
        task = noisy_task()
        run_search(task, tmp_path / name, LocalExecutor(task.recipe), generations=3, settings=step, seed=0,
                   progress=False, plot=False)
        states.append(state_of(tmp_path / name))
    assert states[0] == states[1]
    assert json.loads((tmp_path / "a" / "config.json").read_text())["genetic"]["step_planes"] == 4


def test_surrogate_renders_the_offspring_it_predicts_feasible_first(tmp_path):
    """With a floor, the pre-screen keeps predicted-feasible offspring before any predicted below it."""
    from ecad.search.optimizer.surrogate import predict_constraints, prescreen
    from ecad.search.optimizer.task import QualityFloor

    task, result = search(tmp_path, "fit", generations=2)
    evaluated = result.memo.evaluated()
    offspring = task.space.random(40, seed=3)
    task.floors = (QualityFloor("weighted", 0.5),)
    G = predict_constraints(task, evaluated, offspring, 1.0)[:, 0]
    assert (G <= 0).any() and (G > 0).any(), "a mix of predicted feasible and infeasible offspring"
    kept = prescreen(task, evaluated, offspring, 5, SurrogateSettings(pool_factor=8))
    if (G <= 0).sum() >= 5:
        assert (G[kept] <= 0).all()
    else:
        assert set(np.flatnonzero(G <= 0)) <= set(kept)
    assert list(kept) == list(prescreen(task, evaluated, offspring, 5, SurrogateSettings(pool_factor=8)))
