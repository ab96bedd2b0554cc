"""A surrogate pre-screen: render only the offspring a cheap model of earlier results ranks best.

Each generation, ridge regression (scikit-learn) is refitted on the schedule genes (bits as they
are, integer action genes one-hot: ``space.features``) of every
candidate fully evaluated in earlier generations, one model per objective. NSGA-II is asked for
``pool_factor`` times the population in offspring; the surrogate predicts their objectives and
only the best ``population`` by predicted non-dominated rank (then crowding distance) are
rendered; with quality floors, the predicted-feasible ones first, as NSGA-II would rank them.
Fit and choice depend only on earlier generations' results and the offspring, so a resumed run
chooses the same.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from ecad.search.optimizer.run_folder import MemoRecord
from ecad.search.optimizer.task import SearchTask


@dataclass(frozen=True)
class SurrogateSettings:
    #: offspring asked per generation, in populations; the surrogate keeps one population of them
    pool_factor: int = 4
    #: ridge regularisation
    alpha: float = 1.0

    def __post_init__(self) -> None:
        if self.pool_factor < 2:
            raise ValueError(f"SurrogateSettings.pool_factor must be >= 2, got {self.pool_factor}")
        if self.alpha <= 0:
            raise ValueError(f"SurrogateSettings.alpha must be > 0, got {self.alpha}")

    def to_dict(self) -> dict:
        return asdict(self)


def predict_objectives(task: SearchTask, evaluated: list[MemoRecord], bits: np.ndarray, alpha: float) -> np.ndarray:
    """Predicted minimised objectives of ``bits`` from a ridge fit on the ``evaluated`` records."""
    return _predict(task, evaluated, bits, alpha, task.objective_matrix(r.result for r in evaluated))


def predict_constraints(task: SearchTask, evaluated: list[MemoRecord], bits: np.ndarray, alpha: float
                        ) -> np.ndarray | None:
    """Predicted constraint values (``SearchTask.constraint_matrix``) of ``bits``; None without floors."""
    G = task.constraint_matrix(r.result for r in evaluated)
    return None if G is None else _predict(task, evaluated, bits, alpha, G)


def _predict(task: SearchTask, evaluated: list[MemoRecord], bits: np.ndarray, alpha: float, Y: np.ndarray) -> np.ndarray:
    from sklearn.linear_model import Ridge

    X = task.space.features(np.array([r.bits for r in evaluated]))
    model = Ridge(alpha=alpha).fit(X, Y)
    return np.asarray(model.predict(task.space.features(bits)), dtype=float).reshape(len(bits), Y.shape[1])


def rank_and_crowding_order(F: np.ndarray) -> np.ndarray:
    """Indices of ``F`` best first: by non-dominated front, then larger crowding distance (pymoo's,
    as its NSGA-II survival computes it), then index."""
    from pymoo.operators.survival.rank_and_crowding.metrics import get_crowding_function
    from pymoo.util.nds.non_dominated_sorting import NonDominatedSorting

    crowding_distance = get_crowding_function("cd")
    order = []
    for front in NonDominatedSorting().do(F):
        front = np.sort(np.asarray(front))
        crowding = crowding_distance.do(F[front])
        order.extend(front[np.lexsort((front, -crowding))])
    return np.array(order, dtype=int)


def prescreen(task: SearchTask, evaluated: list[MemoRecord], offspring: np.ndarray, keep: int,
              settings: SurrogateSettings) -> np.ndarray:
    """Indices (sorted) of the ``keep`` offspring worth rendering."""
    if len(offspring) <= keep:
        return np.arange(len(offspring))
    predicted = predict_objectives(task, evaluated, offspring, settings.alpha)
    G = predict_constraints(task, evaluated, offspring, settings.alpha)
    if G is None:
        return np.sort(rank_and_crowding_order(predicted)[:keep])
    # as NSGA-II ranks them: the predicted-feasible by rank and crowding, then the rest by violation
    violation = np.clip(G, 0, None).sum(axis=1)
    feasible = np.flatnonzero(violation == 0)
    infeasible = np.flatnonzero(violation > 0)
    order = np.concatenate([feasible[rank_and_crowding_order(predicted[feasible])] if len(feasible) else feasible,
                            infeasible[np.lexsort((infeasible, violation[infeasible]))]]).astype(int)
    return np.sort(order[:keep])
