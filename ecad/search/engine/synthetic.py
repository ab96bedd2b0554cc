"""A synthetic search problem with a known Pareto front, for tests, docs and benchmarks.

Quality is a positive weighted sum of recomputed bits, cost the fraction recomputed: the best
schedule with k recomputed bits recomputes the k heaviest ones, so the true front has exactly
``n_var + 1`` points. Weights decay with the step, like real caching damage does.
"""

from __future__ import annotations

import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from ecad.search.engine.evaluation import CandidateResult
from ecad.search.engine.space import BitSpace, pack_bits
from ecad.search.engine.task import SearchTask


def synthetic_weights(space: BitSpace, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    steps = space.shape[0] - space.fixed_steps
    per_step = np.repeat(np.linspace(2.0, 0.5, steps), space.n_var // steps)
    return per_step * rng.uniform(0.5, 1.5, size=space.n_var)


def true_front(weights: np.ndarray) -> np.ndarray:
    """(−quality, cost) of the n_var + 1 Pareto-optimal bit vectors."""
    order = np.sort(np.asarray(weights))[::-1]
    quality = np.concatenate([[0.0], np.cumsum(order)]) / order.sum()
    cost = np.arange(len(order) + 1) / len(order)
    return np.column_stack([-quality, cost])


class SyntheticEvaluator:
    def __init__(self, weights, delay: float = 0.0, crash_on: str | None = None, crash_flag: str | None = None):
        self.weights = np.asarray(weights, dtype=float)
        self.delay = delay
        self.crash_on = crash_on
        self.crash_flag = crash_flag
        self.references = None

    def compute_references(self):
        return None

    def set_references(self, references):
        self.references = references

    def evaluate(self, bits) -> CandidateResult:
        bits = np.asarray(bits, dtype=bool)
        if self.crash_on and pack_bits(bits) == self.crash_on and not Path(self.crash_flag).exists():
            Path(self.crash_flag).write_text(str(os.getpid()))
            os._exit(1)  # simulate a worker dying (OOM kill, segfault)
        if self.delay:
            time.sleep(self.delay)
        quality = float(self.weights @ bits / self.weights.sum())
        return CandidateResult(quality=quality, cost=float(bits.mean()), metrics={"weighted": quality})


@dataclass(frozen=True)
class SyntheticRecipe:
    """The synthetic evaluator's recipe (``kind`` "synthetic" in ``ecad.search.recipes``)."""

    kind: ClassVar[str] = "synthetic"
    weights: tuple[float, ...]
    delay: float = 0.0
    crash_on: str | None = None  # packed bits of a candidate that kills its worker once
    crash_flag: str | None = None  # file that records the crash happened

    def build(self) -> SyntheticEvaluator:
        return SyntheticEvaluator(self.weights, delay=self.delay, crash_on=self.crash_on, crash_flag=self.crash_flag)

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "weights": list(self.weights)}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "SyntheticRecipe":
        return cls(**{**data, "weights": tuple(float(w) for w in data["weights"])})


def synthetic_task(shape=(5, 2, 2), weight_seed: int = 0, delay: float = 0.0, **evaluator_kwargs) -> SearchTask:
    space = BitSpace(tuple(shape))
    weights = synthetic_weights(space, weight_seed)
    recipe = SyntheticRecipe(tuple(float(w) for w in weights), delay=delay, **evaluator_kwargs)
    n = space.n_var
    every_other = np.zeros(n, dtype=bool)
    every_other[::2] = True
    return SearchTask(
        space=space,
        recipe=recipe,
        seeds=[("no-cache", space.all_recompute()), ("every-other", every_other)],
        description={"name": "synthetic", "shape": list(shape), "weight_seed": weight_seed},
    )
