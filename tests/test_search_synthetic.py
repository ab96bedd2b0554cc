"""The search machinery on a synthetic problem with a known Pareto front (no model needed)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

from ecad.search.optimizer.evaluation import CandidateResult, Recipe
from ecad.search.optimizer.hypervolume import hypervolume, nondominated_mask
from ecad.search.optimizer.loop import archive_front, run_search, scorer_spread_warning
from ecad.search.optimizer.nsga import GeneticSettings
from ecad.search.optimizer.run_folder import Memo, RunFolderError
from ecad.search.optimizer.space import BitSpace, IntegerSpace, pack_bits, unpack_bits
from ecad.search.optimizer.synthetic import synthetic_task, true_front
from ecad.search.executors import LocalExecutor

REPO = Path(__file__).resolve().parents[1]
SMALL = GeneticSettings(population=12)


def front_F(result) -> np.ndarray:
    return np.array([[-r.result.quality, r.result.cost] for r in result.front])


def comparable_state(run_dir: Path) -> dict:
    state = json.loads((run_dir / "state.json").read_text())
    for record in state["history"]:
        record.pop("seconds")
        record.pop("evaluated")  # new evaluations in that invocation: fewer after a resume
    return state


def memo_keys(run_dir: Path) -> list[str]:
    return [json.loads(line)["key"] for line in (run_dir / "memo.jsonl").read_text().splitlines()]


class CountingEvaluator:
    def __init__(self, recipe: Recipe):
        self.inner = recipe.build()
        self.calls = 0

    def compute_references(self):
        return None

    def set_references(self, references):
        pass

    def evaluate(self, bits, samples=None):
        self.calls += 1
        return self.inner.evaluate(bits, samples)


def test_space_fixes_step_zero_and_round_trips():
    space = BitSpace((4, 3, 2))
    assert space.n_var == 3 * 3 * 2
    rng = np.random.default_rng(0)
    bits = rng.random(space.n_var) < 0.5
    mask = space.bits_to_mask(bits)
    assert mask.shape == (4, 3, 2) and mask[0].all()
    assert np.array_equal(space.mask_to_bits(mask), bits)
    assert np.array_equal(unpack_bits(pack_bits(bits), space.n_var), bits)
    with pytest.raises(ValueError):
        space.bits_to_mask(bits[:-1])


def test_integer_space_packs_portably_and_mutates_within_each_segment():
    space = IntegerSpace(((30, 0, 2, 1), (10, 0, 1, 0)))  # action genes, then skip genes
    assert not space.is_binary and space.n_var == 40
    assert list(space.all_recompute()) == [1] * 30 + [0] * 10
    genes = space.random(20, seed=3)
    assert genes.dtype == np.int64 and genes.shape == (20, 40)
    assert set(np.unique(genes[:, :30])) == {0, 1, 2} and set(np.unique(genes[:, 30:])) == {0, 1}
    for g in genes:
        text = space.pack(g)
        assert json.loads(json.dumps(text)) == text and np.array_equal(space.unpack(text), g)
    assert len(space.pack(genes[0])) == 16  # 2 bits a gene: 80 bits, 10 bytes, 16 base64 characters
    features = space.features(genes)
    assert features.shape == (20, 30 * 3 + 10 * 2) and np.array_equal(features.sum(axis=1), np.full(20, 40.0))
    with pytest.raises(ValueError, match="bounds"):
        space.coerce(np.full(40, 3))
    # a bit-only integer space searches exactly like the bit space
    assert IntegerSpace(((6, 0, 1, 1),)).pack(np.array([1, 0, 1, 1, 0, 0])) == pack_bits(np.array([1, 0, 1, 1, 0, 0]))

    from pymoo.core.population import Population

    from ecad.search.optimizer.nsga import GeneProblem, ResampleMutation

    problem = GeneProblem(space)
    X = space.random(50, seed=4)
    mutated = ResampleMutation(prob=1.0, prob_var=0.5).do(problem, Population.new(X=X), random_state=np.random.default_rng(0))
    Y = np.asarray(mutated.get("X"))
    low, high = space.bounds()
    assert ((Y >= low) & (Y <= high)).all()
    changed = Y != X
    assert 0.4 < changed.mean() < 0.6  # every chosen gene moves to another value
    assert set(np.unique(Y[:, :30][changed[:, :30]])) == {0, 1, 2}


def test_integer_genes_search_reaches_the_cheap_good_corner(tmp_path):
    task = synthetic_task(shape=(4, 2, 2), levels=3)
    result = run_search(task, tmp_path, LocalExecutor(task.recipe), generations=4, settings=SMALL, seed=2,
                        progress=False, plot=False)
    assert result.state.population_bits.dtype == np.int64
    assert all(set(np.unique(r.bits)) <= {0, 1, 2} for r in result.front)
    assert any(0 < r.result.cost < 1 and (r.bits == 1).any() for r in result.front)  # middle values are searched
    state = json.loads((tmp_path / "state.json").read_text())
    assert np.array_equal(task.space.unpack(state["population"][0]["bits"]), result.state.population_bits[0])


def test_nondominated_and_hypervolume():
    F = np.array([[0.0, 1.0], [1.0, 0.0], [1.0, 1.0], [0.5, 0.5]])
    assert nondominated_mask(F).tolist() == [True, True, False, True]
    assert hypervolume(F[[0, 1]], [0, 0], [1, 1], reference=2.0) == pytest.approx(3.0)


@pytest.mark.parametrize("objectives", [2, 3, 4])
def test_nondominated_mask_is_the_definition_with_ties_and_duplicates_kept(objectives):
    rng = np.random.default_rng(objectives)
    for _ in range(200):
        F = rng.integers(0, 4, size=(int(rng.integers(0, 30)), objectives)).astype(float)  # many ties
        if len(F):
            F[rng.integers(len(F))] = np.inf
        dominated = [(np.all(F <= f, axis=1) & np.any(F < f, axis=1)).any() for f in F]
        assert nondominated_mask(F).tolist() == [not d for d in dominated]


def test_found_front_reaches_the_true_front(tmp_path):
    task = synthetic_task(shape=(4, 2, 2))
    result = run_search(task, tmp_path, LocalExecutor(task.recipe), generations=30,
                        settings=GeneticSettings(population=24), seed=0, progress=False, plot=False)
    expected = true_front(np.array(task.recipe.weights))
    found = front_F(result)
    assert len(found) == len(expected)
    assert np.allclose(found[np.argsort(found[:, 1])], expected[np.argsort(expected[:, 1])])
    hv = [h["hypervolume"] for h in result.state.history]
    assert all(b >= a - 1e-12 for a, b in zip(hv, hv[1:])), "archive hypervolume never decreases"
    assert hv[-1] > hv[0]


def test_extending_a_run_equals_running_longer_and_never_reevaluates(tmp_path):
    task = synthetic_task(shape=(4, 2, 2))
    direct = run_search(task, tmp_path / "direct", LocalExecutor(task.recipe), generations=6,
                        settings=SMALL, seed=3, progress=False, plot=False)

    counting = CountingEvaluator(task.recipe)
    executor = LocalExecutor(task.recipe, evaluator=counting)
    run_search(task, tmp_path / "ext", executor, generations=3, settings=SMALL, seed=3, progress=False, plot=False)
    first_calls = counting.calls
    run_search(task, tmp_path / "ext", executor, generations=3, settings=SMALL, seed=3, progress=False, plot=False)
    assert counting.calls == first_calls, "rerunning a finished run evaluates nothing"
    extended = run_search(task, tmp_path / "ext", executor, generations=6, settings=SMALL, seed=3,
                          progress=False, plot=False)

    assert counting.calls == len(extended.memo) == len(direct.memo)
    assert comparable_state(tmp_path / "ext") == comparable_state(tmp_path / "direct")
    assert np.array_equal(front_F(extended), front_F(direct))


def test_other_settings_in_an_existing_run_folder_are_refused(tmp_path):
    task = synthetic_task(shape=(4, 2, 2))
    run_search(task, tmp_path, LocalExecutor(task.recipe), generations=1, settings=SMALL, seed=0,
               progress=False, plot=False)
    with pytest.raises(RunFolderError, match="different settings"):
        run_search(task, tmp_path, LocalExecutor(task.recipe), generations=1, settings=SMALL, seed=1,
                   progress=False, plot=False)


def test_memo_ignores_a_torn_last_line(tmp_path):
    path = tmp_path / "memo.jsonl"
    space = BitSpace((2, 2, 2))  # 4 searched bits
    memo = Memo(path, space)
    from ecad.search.optimizer.run_folder import MemoRecord, read_memo

    memo.add(MemoRecord("k1", np.array([1, 0, 1, 0], bool), CandidateResult(0.5, 0.5), 0))
    with open(path, "a") as handle:
        handle.write('{"key": "k2", "bi')  # killed mid-write, or a live run still writing
    torn = path.read_bytes()
    records, end = read_memo(path, space)  # what another run reads: the file is left as it is
    assert [r.key for r in records] == ["k1"] and end < len(torn) and path.read_bytes() == torn
    reloaded = Memo(path, space)
    assert list(reloaded.records) == ["k1"]
    reloaded.add(MemoRecord("k3", np.array([1, 1, 1, 0], bool), CandidateResult(0.7, 0.7), 1))
    assert [json.loads(l)["key"] for l in path.read_text().splitlines()] == ["k1", "k3"]


def test_blind_scorer_is_reported():
    from ecad.search.optimizer.run_folder import MemoRecord

    def record(label, quality):
        return MemoRecord(label, np.zeros(2, bool), CandidateResult(quality, 0.5), 0, label)

    flat = [record("no-cache", 0.9), record("fora-2", 0.900), record("fora-6", 0.901)]
    assert "barely varies" in scorer_spread_warning(flat)
    assert scorer_spread_warning([record("fora-2", 0.9), record("fora-6", 0.6)]) is None


RUNNER = textwrap.dedent(
    """
    import sys
    from ecad.search.optimizer.loop import run_search
    from ecad.search.optimizer.noise import RacingSettings
    from ecad.search.optimizer.nsga import GeneticSettings
    from ecad.search.optimizer.surrogate import SurrogateSettings
    from ecad.search.optimizer.synthetic import synthetic_task
    from ecad.search.executors import LocalExecutor

    features = {}
    if sys.argv[3] == "plain":
        task = synthetic_task(shape=(4, 2, 2), delay=float(sys.argv[2]))
    else:  # 3 objectives, noisy samples, racing and the surrogate pre-screen; integer genes
        task = synthetic_task(shape=(4, 2, 2), delay=float(sys.argv[2]), num_samples=8, noise=0.05,
                              objectives=("weighted", "late"), levels=3 if "integer" in sys.argv[3] else 2)
        features = dict(racing=RacingSettings(0.25), surrogate=SurrogateSettings(pool_factor=3))
    run_search(task, sys.argv[1], LocalExecutor(task.recipe), generations=6,
               settings=GeneticSettings(population=12), seed=5, progress=False, plot=False, **features)
    """
)


@pytest.mark.parametrize("features", ["plain", "objectives-racing-surrogate", "integer-objectives-racing-surrogate"])
def test_kill_9_then_rerun_gives_the_uninterrupted_result(tmp_path, features):
    script = tmp_path / "runner.py"
    script.write_text(RUNNER)
    env = {**os.environ, "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    # same evaluator recipe in both folders: the delay is part of the run's config
    subprocess.run([sys.executable, str(script), str(tmp_path / "straight"), "0.02", features], env=env, check=True,
                   timeout=120)

    killed = tmp_path / "killed"
    process = subprocess.Popen([sys.executable, str(script), str(killed), "0.02", features], env=env)
    memo = killed / "memo.jsonl"
    deadline = time.time() + 60
    while time.time() < deadline:  # kill in the middle of generation 2's evaluations
        if memo.exists() and len(memo.read_text().splitlines()) >= 30:
            break
        time.sleep(0.01)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert process.returncode == -signal.SIGKILL
    state = json.loads((killed / "state.json").read_text())
    assert state["generation"] < 6, "the run was killed before finishing"

    subprocess.run([sys.executable, str(script), str(killed), "0.02", features], env=env, check=True, timeout=120)
    assert comparable_state(killed) == comparable_state(tmp_path / "straight")
    keys = memo_keys(killed)
    assert len(keys) == len(set(keys)), "no candidate evaluated twice"
    assert set(keys) == set(memo_keys(tmp_path / "straight"))


def test_recipes_travel_as_json_with_their_kind():
    from ecad.search.recipes import recipe_from_json, recipe_to_json
    from ecad.search.evaluator import RenderRecipe
    from ecad.setting import Setting

    render = RenderRecipe(model="m", setting=Setting(32, 32, 4, 4.5), scorer="fidelity", prompts=["a", "b"],
                          seeds=[0, 1], scorer_kwargs={"max_psnr": 150.0}, cost="latency")
    synthetic = synthetic_task(shape=(4, 2, 2), delay=0.5).recipe
    for recipe in (render, synthetic):
        data = json.loads(json.dumps(recipe_to_json(recipe)))
        assert recipe_from_json(data) == recipe
    assert recipe_to_json(render)["kind"] == "render" and recipe_to_json(render)["setting"]["height"] == 32
    with pytest.raises(ValueError, match="unknown recipe kind 'nope'"):
        recipe_from_json({"kind": "nope"})
    with pytest.raises(ValueError, match="RenderRecipe.cost"):
        RenderRecipe(model="m", setting=Setting(32, 32, 4, 4.5), scorer="fidelity", prompts=["a"], seeds=[0],
                     cost="flops")


def test_three_objectives_search_a_3d_front(tmp_path):
    task = synthetic_task(shape=(4, 2, 2), objectives=("weighted", "late"))
    result = run_search(task, tmp_path, LocalExecutor(task.recipe), generations=4, settings=SMALL, seed=1,
                        progress=False, plot=True)
    state = json.loads((tmp_path / "state.json").read_text())
    assert {len(p["F"]) for p in state["population"]} == {3}
    assert json.loads((tmp_path / "config.json").read_text())["objectives"] == ["weighted", "late"]
    F = np.array([[-r.result.metrics["weighted"], -r.result.metrics["late"], r.result.cost] for r in result.front])
    assert nondominated_mask(F).all()
    everything = np.array([[-r.result.metrics["weighted"], -r.result.metrics["late"], r.result.cost]
                           for r in result.memo.records.values()])
    assert len(result.front) == nondominated_mask(everything).sum()
    # the 2-objective front (weighted only) is a strict subset: 'late' keeps other trade-offs alive
    assert len(result.front) > len(archive_front(result.memo))
    hv = [h["hypervolume"] for h in result.state.history]
    assert all(b >= a - 1e-12 for a, b in zip(hv, hv[1:])) and hv[-1] > hv[0]
