"""The calibration loop, read top to bottom as the story of a candidate.

``run_search``: the run folder binds the config; generation 0 evaluates the seeded heuristics
plus random schedules and keeps the best ``population`` of them; then each generation

1. **asks** NSGA-II for offspring of the saved population (nsga.py); with a surrogate, asks for
   more and keeps those a model of earlier results ranks best (surrogate.py),
2. **evaluates** those not yet in the memo on the executor, each result appended to the memo
   (run_folder.py) the moment it finishes; with racing, on a subset of the samples first and
   on the rest only if it could still be on the front (noise.py),
3. **tells** NSGA-II the offspring's objectives, which picks the next population,
4. saves that population as the new state (atomically) and logs the archive's front.

At the end the front of everything evaluated is returned; ``ecad.search.to_bank.write_bank``
turns it into a schedule bank.

Invariants that make ``kill -9`` + rerun safe and equivalent to an uninterrupted run:

* every finished evaluation is in the memo before anything else happens, and the memo is
  consulted before any evaluation, so nothing is evaluated twice;
* ``state.json`` is replaced atomically after each generation and is the only thing the next
  generation starts from;
* each generation's offspring depend only on the saved state and ``(seed, generation)``, so a
  repeated generation asks for the same candidates (and hits the memo).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, NamedTuple

import numpy as np
from tqdm.auto import tqdm

from ecad.search.optimizer.evaluation import CandidateResult, EvaluationJob, Executor, Recipe
from ecad.search.optimizer.hypervolume import hypervolume, nondominated_mask, normalization_from
from ecad.search.optimizer.noise import (RacingSettings, could_be_nondominated, could_clear_floors, first_samples,
                                      optimistic_point)
from ecad.search.optimizer.nsga import Generation, GeneticSettings, select_initial
from ecad.search.optimizer.run_folder import Memo, MemoRecord, RunFolder, SearchState
from ecad.search.optimizer.surrogate import SurrogateSettings, prescreen
from ecad.search.optimizer.task import SearchTask, objective_matrix

log = logging.getLogger("ecad.search")

#: relative spread of the seeded heuristics' quality below which the scorer is called blind
BLIND_SCORER_SPREAD = 0.02


class Proposal(NamedTuple):
    """A gene vector on its way to the memo."""

    key: str  # its memo key (for a model: the decoded schedule's hash)
    genes: np.ndarray
    label: str | None = None  # a seed schedule's name (heuristic, "bank:<id>"); None if searched


@dataclass
class SearchResult:
    state: SearchState
    front: list[MemoRecord]  # nondominated over every candidate this run evaluated, by cost
    seed_records: list[MemoRecord]  # the labelled seed schedules (heuristics, no-cache, bank entries)
    memo: Memo
    warnings: list[str] = field(default_factory=list)


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
    racing: RacingSettings | None = None,
    surrogate: SurrogateSettings | None = None,
    extra_config: dict[str, Any] | None = None,
    prefill: Callable[[Memo, dict[str, Any]], Any] | None = None,
) -> SearchResult:
    """Run (or resume, or extend) a search until ``generations`` generations are done.

    ``racing``: render offspring on a subset of the samples first (noise.py); ``surrogate``: ask
    for more offspring and render only those a model fitted on earlier results ranks best
    (surrogate.py). Both are deterministic in ``seed``, so they keep resume exact.
    ``prefill(memo, config)``: called once the run folder is bound, until generation 0 is done, to
    add records rendered elsewhere (`ecad.search.reuse`); a record in the memo is not rendered again.
    """
    if racing is not None and task.num_samples < 2:
        raise ValueError(f"racing needs more than one sample per candidate; the task has {task.num_samples}")
    folder = RunFolder(run_dir)
    config = folder.bind_config(
        {
            "task": task.description.to_dict() if task.description else {},
            "space": task.space.to_config(),
            "evaluator": {"kind": task.recipe.kind, **task.recipe.to_dict()},
            "genetic": settings.to_dict(),
            "seed": seed,
            "generations": generations,
            # only when set, so run folders from before objectives existed still resume
            **({"objectives": list(task.objectives)} if task.objectives else {}),
            **({"racing": racing.to_dict()} if racing else {}),
            **({"surrogate": surrogate.to_dict()} if surrogate else {}),
            **({"quality_floors": [f.to_dict() for f in task.floors]} if task.floors else {}),
            **(extra_config or {}),
        },
        mutable_keys=("generations", "execution"),
    )
    memo = folder.memo(task.space)
    _hand_references(folder, executor)

    state = folder.load_state(task.space)
    if state is None:  # generation 0: seeds + random schedules, cut down to the population
        if prefill is not None:
            prefill(memo, config)
        started = time.perf_counter()
        proposals = initial_proposals(task, settings.population, seed)
        evaluated = evaluate_generation(task, executor, memo, proposals, 0, progress)
        genes = task.space.coerce(np.array([p.genes for p in proposals]))
        F_all = task.objective_matrix(memo[p.key].result for p in proposals)
        G_all = task.constraint_matrix(memo[p.key].result for p in proposals)
        pop_bits, pop_F = select_initial(settings, task.space, genes, F_all, seed, G_all)
        state = SearchState(0, [task.key(b) for b in pop_bits], pop_bits, pop_F, normalization_from(F_all))
        _finish_generation(folder, task, memo, state, evaluated, started, plot)

    seed_records = _seed_records(task, memo)
    warnings = [w for w in [scorer_spread_warning(seed_records)] if w]
    for warning in warnings:
        log.warning(warning)

    bar = tqdm(total=generations, initial=min(state.generation, generations), desc="generations", unit="gen",
               disable=not progress)
    try:
        while state.generation < generations:
            started = time.perf_counter()
            generation = state.generation + 1
            pool = surrogate.pool_factor if surrogate else 1
            G = task.constraint_matrix(best_result(memo, key) for key in state.population_keys)
            step = Generation(settings, task.space, state.population_bits, state.F, seed, generation, pool_factor=pool,
                              G=G)
            offspring = step.offspring()  # 1. ask
            chosen = np.arange(len(offspring))
            if surrogate:  # 1b. render only the offspring a model of earlier results ranks best
                chosen = prescreen(task, memo.evaluated(generation - 1), offspring, settings.population, surrogate)
            proposals = [Proposal(task.key(genes), genes) for genes in offspring[chosen]]
            evaluated = evaluate_generation(task, executor, memo, proposals, generation, progress,  # 2. evaluate
                                            racing=racing, seed=seed)
            F = task.objective_matrix(best_result(memo, p.key) for p in proposals)
            G = task.constraint_matrix(best_result(memo, p.key) for p in proposals)
            pop_bits, pop_F = step.survivors(F, chosen, G)  # 3. tell
            state = SearchState(generation, [task.key(b) for b in pop_bits], pop_bits, pop_F, state.normalization,
                                state.history)
            _finish_generation(folder, task, memo, state, evaluated, started, plot)  # 4. save, log
            bar.update(1)
    finally:
        bar.close()
    return SearchResult(state=state, front=archive_front(memo, objectives=task.objectives),
                        seed_records=seed_records, memo=memo, warnings=warnings)


# -- the steps ----------------------------------------------------------------------------------


def _hand_references(folder: RunFolder, executor: Executor) -> None:
    """The uncached outputs: computed once per run folder, stored, given to every worker."""
    references = folder.load_references()
    if references is None:
        references = executor.compute_references()
        if references is not None:
            folder.save_references(references)
    executor.set_references(references)


def rescore(task: SearchTask, run_dir: str | Path, executor: Executor, records: list[MemoRecord],
            recipe: Recipe, progress: bool = False,
            prefill: Callable[[Memo, dict[str, Any]], Any] | None = None) -> dict[str, CandidateResult]:
    """``records`` evaluated again by ``executor``, built from ``recipe`` (e.g. on validation
    prompts the search never saw), on every sample; memoised in their own run folder, bound to
    that recipe, so an interrupted re-scoring resumes and a different one is refused.
    ``prefill``: as for `run_search`, before anything is rendered."""
    folder = RunFolder(run_dir)
    config = folder.bind_config({"evaluator": {"kind": recipe.kind, **recipe.to_dict()}})
    memo = folder.memo(task.space)
    if prefill is not None:
        prefill(memo, config)
    _hand_references(folder, executor)
    _evaluate(executor, memo, [(Proposal(r.key, r.bits, r.label), None) for r in records if r.key not in memo], 0,
              task, progress)
    return {r.key: memo[r.key].result for r in records}


def initial_proposals(task: SearchTask, population: int, seed: int) -> list[Proposal]:
    """Seed schedules first (deduplicated by key), then random ones up to ``population``."""
    chosen: dict[str, Proposal] = {}
    for label, genes in task.seed_schedules:
        genes = task.space.coerce(genes)
        key = task.key(genes)
        chosen.setdefault(key, Proposal(key, genes, label))
    missing = max(0, population - len(chosen))
    # draw extra to survive duplicates; deterministic in (seed)
    for genes in task.space.random(2 * missing + 8, seed):
        if len(chosen) >= population:
            break
        key = task.key(genes)
        chosen.setdefault(key, Proposal(key, genes))
    return list(chosen.values())


def _seed_records(task: SearchTask, memo: Memo) -> list[MemoRecord]:
    keys = (task.key(genes) for _, genes in task.seed_schedules)
    return [memo[key] for key in keys if key in memo]


def evaluate_generation(task: SearchTask, executor: Executor, memo: Memo, proposals: list[Proposal],
                        generation: int, progress: bool, *, racing: RacingSettings | None = None,
                        seed: int = 0) -> int:
    """Evaluate the candidates the memo lacks; returns how many evaluations ran.

    Without racing (and always in generation 0, which sets the bar) each is rendered on every
    sample. With racing each is rendered on the first samples, and on the rest only if its
    optimistic bound could still be non-dominated by the front of earlier generations' full
    evaluations: a set fixed before this generation began, so a resumed run decides the same.
    With quality floors, it must also plausibly clear every floor (its optimistic bound).
    """
    # two gene vectors may decode to one schedule (a repaired forecast): evaluate it once
    missing: dict[str, Proposal] = {}
    for proposal in proposals:
        if proposal.key not in memo:
            missing.setdefault(proposal.key, proposal)
    missing = list(missing.values())
    if racing is None or generation == 0:
        return _evaluate(executor, memo, [(p, None) for p in missing], generation, task, progress)
    first = first_samples(task.num_samples, racing.first_fraction, seed)
    first_stage = [(p._replace(key=first_stage_key(p.key)), first) for p in missing
                   if first_stage_key(p.key) not in memo]
    evaluated = _evaluate(executor, memo, first_stage, generation, task, progress, stage="first")
    front_F = task.objective_matrix(r.result for r in archive_front(memo, generation - 1, task.objectives))
    rest = [i for i in range(task.num_samples) if i not in first]
    promoted = [(p, rest) for p in missing
                if could_be_nondominated(optimistic_point(memo[first_stage_key(p.key)].result, task.objectives,
                                                          task.quality_metric, racing.z), front_F)
                and could_clear_floors(memo[first_stage_key(p.key)].result, task.floors, racing.z)]
    return evaluated + _evaluate(executor, memo, promoted, generation, task, progress)


def first_stage_key(key: str) -> str:
    return f"{key}@first"


def best_result(memo: Memo, key: str) -> CandidateResult:
    """The full evaluation if there is one, else racing's first-stage estimate."""
    return memo[key].result if key in memo else memo[first_stage_key(key)].result


def _evaluate(executor: Executor, memo: Memo, jobs: list[tuple[Proposal, list[int] | None]], generation: int,
              task: SearchTask, progress: bool, stage: str | None = None) -> int:
    """Evaluate each proposal on its samples (None: all); each result is in the memo as soon as it
    exists. A full evaluation on the samples racing left out is merged with the first-stage result."""
    proposals = {proposal.key: proposal for proposal, _ in jobs}
    images = {proposal.key: task.num_samples if samples is None else len(samples) for proposal, samples in jobs}
    quality_metric = task.quality_metric
    bar = tqdm(total=len(jobs), desc=f"gen {generation} candidates", unit="cand", leave=False, disable=not progress)

    def store(key: str, result: CandidateResult) -> None:
        if stage is None and first_stage_key(key) in memo:
            result = memo[first_stage_key(key)].result.merged(result, quality_metric)
        memo.add(MemoRecord(key=key, bits=proposals[key].genes, result=result, generation=generation,
                            label=proposals[key].label, stage=stage, images=images[key]))
        bar.update(1)

    try:
        if jobs:
            executor.evaluate([EvaluationJob(p.key, p.genes, samples) for p, samples in jobs], store)
    finally:
        bar.close()
    return len(jobs)


def archive_front(memo: Memo, up_to_generation: int | None = None, objectives: tuple[str, ...] = ()) -> list[MemoRecord]:
    """Nondominated records among everything evaluated (up to a generation), cheapest first."""
    records = memo.evaluated(up_to_generation)
    if not records:
        return []
    F = objective_matrix((r.result for r in records), objectives)
    front = [r for r, keep in zip(records, nondominated_mask(F)) if keep]
    # deterministic order: by cost, then quality, then key (independent of evaluation order)
    return sorted(front, key=lambda r: (r.result.cost, -r.result.quality, r.key))


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


def _finish_generation(folder: RunFolder, task: SearchTask, memo: Memo, state: SearchState, evaluated: int,
                       started: float, plot: bool) -> None:
    """Log record into the state, state saved atomically, one log line, the plot redrawn."""
    front = archive_front(memo, state.generation, task.objectives)
    record = {
        "generation": state.generation,
        "hypervolume": hypervolume(task.objective_matrix(r.result for r in front), *state.normalization),
        "front_size": len(front),
        "evaluated": evaluated,
        "evaluated_total": len(memo.evaluated(state.generation)),
        "images_total": sum(task.num_samples if r.images is None else r.images
                            for r in memo.records.values() if r.generation <= state.generation),
        "seconds": round(time.perf_counter() - started, 3),
    }
    state.history.append(record)
    folder.save_state(state, task.space)
    log.info("generation %d: hypervolume %.4f, front %d, %d new evaluations (%d total), %.1f s",
             record["generation"], record["hypervolume"], record["front_size"], record["evaluated"],
             record["evaluated_total"], record["seconds"])
    if plot:
        _plot(folder, task, memo, state)


def _plot(folder: RunFolder, task: SearchTask, memo: Memo, state: SearchState) -> None:
    try:
        from ecad.search.optimizer.plot import plot_search_front

        described = task.description
        plot_search_front(
            folder.plot_path,
            front=archive_front(memo, objectives=task.objectives),
            seed_records=_seed_records(task, memo),
            evaluated=memo.evaluated(),
            title=f"{described.name if described else 'ecad'} — generation {state.generation}",
            cost_label=described.cost_label if described else "cost",
            quality_label=described.quality_label if described else "quality",
            objectives=task.objectives,
        )
    except Exception as err:  # a plot must never stop a calibration
        log.warning("could not write %s: %s", folder.plot_path, err)
