"""The calibration loop: initial population, then NSGA-II generations, checkpointed each time.

Invariants that make ``kill -9`` + rerun safe and equivalent to an uninterrupted run:

* every finished evaluation is in the memo before anything else happens (memo.py), and the memo
  is consulted before any evaluation, so nothing is evaluated twice;
* ``state.json`` is replaced atomically after each generation and is the only thing the next
  generation starts from;
* each generation's offspring depend only on the saved state and ``(seed, generation)``
  (nsga.py), so a repeated generation asks for the same candidates (and hits the memo).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from ecad.search.evaluation import CandidateResult
from ecad.search.executors import Executor
from ecad.search.hypervolume import hypervolume, nondominated_mask, normalization_from, objectives
from ecad.search.memo import Memo, MemoRecord
from ecad.search.nsga import Generation, GeneticSettings, select_initial
from ecad.search.run_folder import RunFolder, SearchState
from ecad.search.task import SearchTask

log = logging.getLogger("ecad.search")

#: relative spread of the seeded heuristics' quality below which the scorer is called blind
BLIND_SCORER_SPREAD = 0.02


@dataclass
class SearchResult:
    state: SearchState
    front: list[MemoRecord]  # nondominated over every candidate this run evaluated, by cost
    seeds: list[MemoRecord]  # the labelled seed candidates (heuristics, no-cache)
    memo: Memo
    warnings: list[str] = field(default_factory=list)


def random_candidates(n_var: int, count: int, seed: int) -> np.ndarray:
    """Random schedules with varied density, so the initial population spans many costs."""
    rng = np.random.default_rng(np.random.SeedSequence([int(seed), 0x5EED]))
    density = rng.uniform(0.1, 0.9, size=(count, 1))
    return rng.random((count, n_var)) < density


def initial_candidates(task: SearchTask, population: int, seed: int) -> list[tuple[str, np.ndarray, str | None]]:
    """Seeded schedules first (deduplicated by key), then random ones up to ``population``."""
    chosen: dict[str, tuple[str, np.ndarray, str | None]] = {}
    for label, bits in task.seeds:
        bits = np.asarray(bits, dtype=bool)
        chosen.setdefault(task.key(bits), (task.key(bits), bits, label))
    missing = max(0, population - len(chosen))
    # draw extra to survive duplicates; deterministic in (seed)
    for bits in random_candidates(task.space.n_var, 2 * missing + 8, seed):
        if len(chosen) >= population:
            break
        chosen.setdefault(task.key(bits), (task.key(bits), bits, None))
    return list(chosen.values())


def scorer_spread_warning(seed_records: list[MemoRecord], threshold: float = BLIND_SCORER_SPREAD) -> str | None:
    """A warning when the scorer barely separates the seeded heuristics (a blind reward)."""
    qualities = np.array([r.result.quality for r in seed_records if r.label != "no-cache"], dtype=float)
    if len(qualities) < 2:
        return None
    # relative to the typical value; floored so scores centred on 0 (ImageReward) still compare
    scale = max(abs(float(np.median(qualities))), 0.1)
    spread = float(qualities.max() - qualities.min())
    if spread / scale < threshold:
        return (
            f"the scorer barely varies over the {len(qualities)} seeded heuristic schedules "
            f"(quality {qualities.min():.4g}..{qualities.max():.4g}, spread {100 * spread / scale:.2f}% "
            f"of the median < {100 * threshold:.0f}%): it cannot tell cheap schedules from good ones, "
            "so the front it gives is meaningless. Use a scorer that sees caching damage "
            "(e.g. --scorer combined or fidelity) or harder prompts."
        )
    return None


def _evaluate_missing(
    executor: Executor,
    memo: Memo,
    candidates: list[tuple[str, np.ndarray, str | None]],
    generation: int,
    progress: bool,
) -> int:
    todo = [(key, bits) for key, bits, _ in candidates if key not in memo]
    labels = {key: label for key, _, label in candidates}
    bits_of = {key: bits for key, bits, _ in candidates}
    bar = tqdm(total=len(todo), desc=f"gen {generation} candidates", unit="cand", leave=False, disable=not progress)

    def store(key: str, result: CandidateResult) -> None:
        memo.add(MemoRecord(key=key, bits=bits_of[key], result=result, generation=generation, label=labels[key]))
        bar.update(1)

    try:
        if todo:
            executor.evaluate(todo, store)
    finally:
        bar.close()
    return len(todo)


def _F_of(memo: Memo, keys: list[str]) -> np.ndarray:
    return objectives([memo[k].result.quality for k in keys], [memo[k].result.cost for k in keys])


def archive_front(memo: Memo, up_to_generation: int | None = None) -> list[MemoRecord]:
    records = [r for r in memo.records.values() if up_to_generation is None or r.generation <= up_to_generation]
    if not records:
        return []
    F = objectives([r.result.quality for r in records], [r.result.cost for r in records])
    front = [r for r, keep in zip(records, nondominated_mask(F)) if keep]
    # deterministic order: by cost, then quality, then key (independent of evaluation order)
    return sorted(front, key=lambda r: (r.result.cost, -r.result.quality, r.key))


def _history_record(memo: Memo, generation: int, normalization, evaluated: int, seconds: float) -> dict[str, Any]:
    front = archive_front(memo, generation)
    F = objectives([r.result.quality for r in front], [r.result.cost for r in front])
    return {
        "generation": generation,
        "hypervolume": hypervolume(F, *normalization),
        "front_size": len(front),
        "evaluated": evaluated,
        "evaluated_total": sum(1 for r in memo.records.values() if r.generation <= generation),
        "seconds": round(seconds, 3),
    }


def _log_generation(record: dict[str, Any]) -> None:
    log.info(
        "generation %d: hypervolume %.4f, front %d, %d new evaluations (%d total), %.1f s",
        record["generation"],
        record["hypervolume"],
        record["front_size"],
        record["evaluated"],
        record["evaluated_total"],
        record["seconds"],
    )


def run_search(
    task: SearchTask,
    run_dir: str | Path,
    executor: Executor,
    *,
    generations: int,
    settings: GeneticSettings = GeneticSettings(),
    seed: int = 0,
    progress: bool = True,
    plot: bool = True,
    extra_config: dict[str, Any] | None = None,
) -> SearchResult:
    """Run (or resume, or extend) a search until ``generations`` generations are done."""
    folder = RunFolder(run_dir)
    folder.bind_config(
        {
            "task": task.description,
            "space": {"shape": list(task.space.shape), "fixed_steps": task.space.fixed_steps},
            "evaluator": task.evaluator.to_dict(),
            "genetic": settings.to_dict(),
            "seed": seed,
            "generations": generations,
            **(extra_config or {}),
        },
        mutable_keys=("generations", "execution"),
    )
    n_var = task.space.n_var
    memo = folder.memo(n_var)
    warnings: list[str] = []

    references = folder.load_references()
    if references is None:
        references = executor.compute_references()
        if references is not None:
            folder.save_references(references)
    executor.set_references(references)

    state = folder.load_state(n_var)
    if state is None:
        started = time.perf_counter()
        candidates = initial_candidates(task, settings.population, seed)
        evaluated = _evaluate_missing(executor, memo, candidates, 0, progress)
        keys = [key for key, _, _ in candidates]
        bits = np.array([b for _, b, _ in candidates], dtype=bool)
        F_all = _F_of(memo, keys)
        pop_bits, pop_F = select_initial(settings, bits, F_all, seed)
        state = SearchState(
            generation=0,
            population_keys=[task.key(b) for b in pop_bits],
            population_bits=pop_bits,
            F=pop_F,
            normalization=normalization_from(F_all),
        )
        record = _history_record(memo, 0, state.normalization, evaluated, time.perf_counter() - started)
        state.history.append(record)
        folder.save_state(state)
        _log_generation(record)
        if plot:
            _plot(folder, task, memo, state)

    seed_records = [memo[task.key(b)] for _, b in task.seeds if task.key(b) in memo]
    warning = scorer_spread_warning(seed_records)
    if warning:
        log.warning(warning)
        warnings.append(warning)

    bar = tqdm(
        total=generations, initial=min(state.generation, generations), desc="generations", unit="gen", disable=not progress
    )
    try:
        while state.generation < generations:
            started = time.perf_counter()
            generation = state.generation + 1
            step = Generation(settings, state.population_bits, state.F, seed, generation)
            offspring = step.offspring()
            candidates = [(task.key(b), b, None) for b in offspring]
            evaluated = _evaluate_missing(executor, memo, candidates, generation, progress)
            pop_bits, pop_F = step.survivors(_F_of(memo, [key for key, _, _ in candidates]))
            state = SearchState(
                generation=generation,
                population_keys=[task.key(b) for b in pop_bits],
                population_bits=pop_bits,
                F=pop_F,
                normalization=state.normalization,
                history=state.history,
            )
            record = _history_record(memo, generation, state.normalization, evaluated, time.perf_counter() - started)
            state.history.append(record)
            folder.save_state(state)
            bar.update(1)
            _log_generation(record)
            if plot:
                _plot(folder, task, memo, state)
    finally:
        bar.close()

    return SearchResult(state=state, front=archive_front(memo), seeds=seed_records, memo=memo, warnings=warnings)


def _plot(folder: RunFolder, task: SearchTask, memo: Memo, state: SearchState) -> None:
    from ecad.search.plot import plot_pareto

    seed_records = [memo[task.key(b)] for _, b in task.seeds if task.key(b) in memo]
    try:
        plot_pareto(
            folder.plot_path,
            front=archive_front(memo),
            seeds=seed_records,
            evaluated=list(memo.records.values()),
            title=f"{task.description.get('name', 'ecad')} — generation {state.generation}",
            cost_label=task.description.get("cost_label", "cost"),
            quality_label=task.description.get("quality_label", "quality"),
        )
    except Exception as err:  # a plot must never stop a calibration
        log.warning("could not write %s: %s", folder.plot_path, err)
