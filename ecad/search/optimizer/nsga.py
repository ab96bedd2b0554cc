"""pymoo NSGA-II driven through ask/tell, rebuilt from the saved population every generation.

Why rebuild: the run must continue identically after ``kill -9``. Instead of pickling pymoo's
algorithm object, each generation constructs a fresh NSGA-II whose initial population is the
saved one (with its known objectives) and whose random generator is seeded from
``(seed, generation)``. An uninterrupted run does exactly the same, so interrupted and
uninterrupted runs produce the same offspring, bit for bit.

Operators: k-point crossover on the gene vectors (any integers); mutation flips bits in a bit
space (pymoo's bitflip, as the v1 search always did) and, in an integer space (actions genes),
redraws a gene as one of the *other* values its range allows (:class:`ResampleMutation`).
Optionally (``step_mutation_prob``) an offspring also gets one step-aligned move
(:class:`StepPlaneMutation`): gene-wise flips almost never turn a whole step into a skip, the
move that FirstBlockCache makes on every cheap step.

Constraints (``G``, e.g. a quality floor): pymoo's constraint domination — a feasible candidate
beats an infeasible one, two infeasible ones compare by their violation.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
from pymoo.algorithms.moo.nsga2 import NSGA2
from pymoo.core.mutation import Mutation
from pymoo.core.problem import Problem
from pymoo.core.termination import NoTermination
from pymoo.operators.crossover.pntx import PointCrossover
from pymoo.operators.mutation.bitflip import BitflipMutation
from pymoo.problems.static import StaticProblem


@dataclass(frozen=True)
class GeneticSettings:
    """NSGA-II operators. Defaults follow the ECAD paper (population 72, 4-point crossover 0.9)."""

    population: int = 72
    crossover_points: int = 4
    crossover_prob: float = 0.9
    #: chance that an offspring is mutated at all (pymoo's ``prob``)
    mutation_prob: float = 1.0
    #: chance per bit, given the offspring mutates; None = 1 / n_var (pymoo's default)
    mutation_bit_prob: float | None = None
    #: chance an offspring also gets a step-aligned move (StepPlaneMutation); 0 = off
    step_mutation_prob: float = 0.0
    #: step planes each gene segment is cut into (the searched steps); needed when the above is on
    step_planes: int = 0

    def __post_init__(self) -> None:
        if not 0 <= self.step_mutation_prob <= 1:
            raise ValueError(f"GeneticSettings.step_mutation_prob must be in [0, 1], got {self.step_mutation_prob}")
        if self.step_mutation_prob and self.step_planes < 2:
            raise ValueError("GeneticSettings.step_planes (the searched steps, >= 2) is needed for step mutation")

    def to_dict(self) -> dict:
        data = asdict(self)
        if not self.step_mutation_prob:  # as runs from before step mutation recorded their settings
            del data["step_mutation_prob"], data["step_planes"]
        return data


class GeneProblem(Problem):
    """Only declares the variables (bits, or integers within the space's bounds); objectives and
    constraints are computed outside pymoo (ask/tell)."""

    def __init__(self, space, n_obj: int = 2, n_constraints: int = 0):
        low, high = space.bounds()
        super().__init__(n_var=space.n_var, n_obj=n_obj, n_ieq_constr=n_constraints, xl=low, xu=high,
                         vtype=bool if space.is_binary else int)


def _static(problem: GeneProblem, F, G=None) -> StaticProblem:
    values = {"F": np.asarray(F, dtype=float)}
    if G is not None:
        values["G"] = np.asarray(G, dtype=float)
    return StaticProblem(problem, **values)


class ResampleMutation(Mutation):
    """Each gene, with probability ``prob_var`` (default 1 / n_var), takes another value of its
    range ``xl..xu``, uniformly: the integer analogue of a bit flip."""

    def _do(self, problem, X, random_state=None, **kwargs):
        X = np.asarray(X, dtype=np.int64).copy()
        prob_var = self.get_prob_var(problem, size=len(X))
        low, high = np.asarray(problem.xl, dtype=np.int64), np.asarray(problem.xu, dtype=np.int64)
        chosen = random_state.random(X.shape) < np.asarray(prob_var).reshape(-1, 1)
        # a uniform draw among the span - 1 other values: shift past the current one
        span = high - low + 1
        draw = low + np.floor(random_state.random(X.shape) * (span - 1)).astype(np.int64)
        draw = np.where(draw >= X, draw + 1, draw)
        return np.where(chosen, draw, X)


class StepPlaneMutation(Mutation):
    """``inner`` mutation, then, with probability ``move_prob`` per offspring, one step-aligned move.

    The genes of each segment (``space.value_segments()``) are ``planes`` step planes in step
    order (``GeneSpace``: the actions of steps 1.., then the skip plane of steps 1..). A move
    picks a segment and a step and either fills that step's plane with one value of the
    segment's range (every block skipped or run; every component reused, recomputed, ...), or
    copies the plane of the step before or after it (a pattern shifted by one step).
    """

    def __init__(self, inner: Mutation, space, planes: int, move_prob: float, prob: float = 1.0):
        super().__init__(prob=prob)  # which offspring take the mutated genes at all, as inner's prob
        self.inner, self.space, self.planes, self.move_prob = inner, space, planes, move_prob
        for start, count, _, _ in space.value_segments():
            if count % planes:
                raise ValueError(f"a gene segment of {count} genes does not split into {planes} step planes")

    def _do(self, problem, X, random_state=None, **kwargs):
        X = np.asarray(self.inner._do(problem, X, random_state=random_state, **kwargs)).copy()
        segments = self.space.value_segments()
        for row in np.flatnonzero(random_state.random(len(X)) < self.move_prob):
            start, count, low, high = segments[random_state.integers(len(segments))]
            size = count // self.planes
            step = int(random_state.integers(self.planes))
            plane = slice(start + step * size, start + (step + 1) * size)
            if random_state.random() < 0.5:
                X[row, plane] = random_state.integers(low, high + 1)
            else:
                source = step + (1 if step == 0 or (step < self.planes - 1 and random_state.random() < 0.5) else -1)
                X[row, plane] = X[row, start + source * size: start + (source + 1) * size]
        return X


def generation_seed(seed: int, generation: int) -> int:
    """A portable per-generation seed: no RNG state needs saving."""
    return int(np.random.SeedSequence([int(seed), int(generation)]).generate_state(1)[0])


def _nsga2(settings: GeneticSettings, space, sampling: np.ndarray, n_offsprings: int | None = None) -> NSGA2:
    kind = BitflipMutation if space.is_binary else ResampleMutation
    mutation = (
        kind(prob=settings.mutation_prob)
        if settings.mutation_bit_prob is None
        else kind(prob=settings.mutation_prob, prob_var=settings.mutation_bit_prob)
    )
    if settings.step_mutation_prob:
        mutation = StepPlaneMutation(mutation, space, settings.step_planes, settings.step_mutation_prob,
                                     prob=settings.mutation_prob)
    return NSGA2(
        pop_size=settings.population,
        n_offsprings=n_offsprings,
        # a bool array for bits: an int 0/1 array makes BitflipMutation produce -1/-2
        sampling=space.coerce(sampling),
        crossover=PointCrossover(n_points=settings.crossover_points, prob=settings.crossover_prob),
        mutation=mutation,
        eliminate_duplicates=True,
    )


class Generation:
    """One NSGA-II step: ``offspring()`` to ask, ``survivors(F, chosen)`` to tell.

    ``pool_factor`` > 1 asks for that many times the population in offspring, of which the
    caller evaluates and tells only the ``chosen`` ones (a surrogate's pre-screen). ``G``: the
    population's constraint values (<= 0 feasible), if the search has constraints.
    """

    def __init__(self, settings: GeneticSettings, space, bits: np.ndarray, F: np.ndarray, seed: int, generation: int,
                 pool_factor: int = 1, G: np.ndarray | None = None):
        self.space = space
        self.problem = GeneProblem(space, np.asarray(F).shape[1], 0 if G is None else np.asarray(G).shape[1])
        self.algorithm = _nsga2(settings, space, bits, None if pool_factor == 1 else pool_factor * settings.population)
        self.algorithm.setup(self.problem, seed=generation_seed(seed, generation), termination=NoTermination())
        parents = self.algorithm.ask()
        if len(parents) != len(bits):
            raise ValueError("the saved population contains duplicates")
        self._tell(parents, F, G)
        self._offspring = None

    def _tell(self, pop, F, G=None) -> None:
        self.algorithm.evaluator.eval(_static(self.problem, F, G), pop)
        self.algorithm.tell(infills=pop)

    def offspring(self) -> np.ndarray:
        self._offspring = self.algorithm.ask()
        return self.space.coerce(self._offspring.get("X"))

    def survivors(self, F_offspring: np.ndarray, chosen: np.ndarray | None = None,
                  G_offspring: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Tell the objectives (and constraints) of the ``chosen`` offspring (all by default);
        return the next (bits, F)."""
        told = self._offspring if chosen is None else self._offspring[np.asarray(chosen, dtype=int)]
        self._tell(told, F_offspring, G_offspring)
        pop = self.algorithm.pop
        return self.space.coerce(pop.get("X")), np.asarray(pop.get("F"), dtype=float)


def select_initial(settings: GeneticSettings, space, bits: np.ndarray, F: np.ndarray, seed: int,
                   G: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """NSGA-II survival over the evaluated initial candidates, down to the population size.

    ``bits`` must be free of duplicates (the caller dedupes by schedule hash).
    """
    from pymoo.core.population import Population

    problem = GeneProblem(space, np.asarray(F).shape[1], 0 if G is None else np.asarray(G).shape[1])
    algorithm = _nsga2(settings, space, bits)
    algorithm.setup(problem, seed=generation_seed(seed, 0), termination=NoTermination())
    pop = Population.new(X=space.coerce(bits))
    algorithm.evaluator.eval(_static(problem, F, G), pop)
    survivors = algorithm.survival.do(
        problem, pop, n_survive=min(len(pop), settings.population), random_state=algorithm.random_state, algorithm=algorithm
    )
    return space.coerce(survivors.get("X")), np.asarray(survivors.get("F"), dtype=float)
