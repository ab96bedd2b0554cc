"""A search task: the gene space (bits, or integer action genes), how to name a candidate, which candidates seed the search, and
the recipe of the evaluator that scores one. Built in the driver without loading the model
(``ecad.search.task.build_model_task`` for a model, ``synthetic.synthetic_task`` for tests)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Protocol

import numpy as np

from ecad.search.optimizer.evaluation import Recipe
from ecad.search.optimizer.space import BitSpace, IntegerSpace, bits_key
from ecad.setting import Setting


#: label prefix of a seed taken from an earlier front (``ecad-calibrate --seed-bank``), not a heuristic
BANK_SEED_PREFIX = "bank:"


@dataclass(frozen=True)
class QualityFloor:
    """A region of interest: candidates whose ``metric`` (a key of ``CandidateResult.metrics``, e.g.
    "psnr") is below ``minimum`` are infeasible for NSGA-II's selection, so the population is
    spent where a bank entry could be used (a 14 dB schedule 18x cheaper is on the front but
    serves no one). The archive front, and so the bank, still holds every non-dominated record."""

    metric: str
    minimum: float

    @classmethod
    def parse(cls, text: str) -> "QualityFloor":
        """``"psnr=29"`` → QualityFloor("psnr", 29.0)."""
        name, sep, value = text.partition("=")
        try:
            if not sep or not name.strip():
                raise ValueError
            return cls(name.strip(), float(value))
        except ValueError:
            raise ValueError(f"a quality floor is METRIC=VALUE, e.g. psnr=29; got {text!r}") from None

    def to_dict(self) -> dict:
        return {"metric": self.metric, "minimum": self.minimum}


class TaskDescription(Protocol):
    """What a run searches: recorded in its config under "task" (``to_dict``, JSON), and the
    names its plot uses."""

    name: str
    cost_label: str
    quality_label: str

    def to_dict(self) -> dict[str, Any]: ...


@dataclass
class SearchTask:
    space: BitSpace | IntegerSpace
    recipe: Recipe
    #: labelled gene vectors that seed the initial population (heuristics, no-cache, an earlier
    #: front's entries), in order
    seed_schedules: list[tuple[str, np.ndarray]] = field(default_factory=list)
    #: memo key of a candidate; for real schedules the CacheSchedule hash
    key_fn: Callable[[np.ndarray], str] = bits_key
    #: what is searched (model, scorer, layout, ...); None: an anonymous problem (recorded as {})
    description: TaskDescription | None = None
    #: the model setting the schedules are searched for (None for model-free problems)
    setting: Setting | None = None
    #: metric names (keys of CandidateResult.metrics) maximised as separate objectives beside
    #: cost; empty: the one objective CandidateResult.quality (the scorer's score)
    objectives: tuple[str, ...] = ()
    #: samples (prompt x seed images) a full evaluation renders; racing renders a subset first
    num_samples: int = 1
    #: the metric CandidateResult.quality is (racing bounds it when no objectives are chosen)
    quality_metric: str = "quality"
    #: constraints of NSGA-II's selection (empty: none; see QualityFloor)
    floors: tuple[QualityFloor, ...] = ()

    def objective_matrix(self, results) -> np.ndarray:
        """The minimised objectives NSGA-II sees, one row per result: (−quality..., cost)."""
        return objective_matrix(results, self.objectives)

    def constraint_matrix(self, results) -> np.ndarray | None:
        """pymoo's inequality constraints, one row per result: ``minimum − value`` per floor
        (<= 0 is feasible); None without floors."""
        if not self.floors:
            return None
        results = list(results)
        missing = sorted({f.metric for f in self.floors for r in results if f.metric not in r.metrics})
        if missing:
            raise KeyError(f"quality floor metric(s) {missing} not among the evaluator's metrics "
                           f"{sorted(results[0].metrics) if results else []}")
        return np.array([[f.minimum - r.metrics[f.metric] for f in self.floors] for r in results],
                        dtype=float).reshape(len(results), len(self.floors))

    def key(self, bits: np.ndarray) -> str:
        return self.key_fn(self.space.coerce(bits))


def objective_matrix(results, objectives: tuple[str, ...] = ()) -> np.ndarray:
    """Rows (−objective_1, ..., −objective_k, cost); ``objectives`` empty: (−quality, cost)."""
    results = list(results)
    if not objectives:
        qualities = [[r.quality] for r in results]
    else:
        missing = sorted({o for r in results for o in objectives if o not in r.metrics})
        if missing:
            raise KeyError(f"objective(s) {missing} not among the evaluator's metrics "
                           f"{sorted(results[0].metrics) if results else []}")
        qualities = [[r.metrics[o] for o in objectives] for r in results]
    costs = [[r.cost] for r in results]
    return np.hstack([-np.array(qualities, dtype=float).reshape(len(results), -1),
                      np.array(costs, dtype=float).reshape(len(results), 1)])
