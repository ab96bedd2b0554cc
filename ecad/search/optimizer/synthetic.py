"""A synthetic search problem with a known Pareto front, for tests, docs and benchmarks.

Quality is a positive weighted sum of recomputed bits, cost the fraction recomputed: the best
schedule with k recomputed bits recomputes the k heaviest ones, so the true front has exactly
``n_var + 1`` points. Weights decay with the step, like real caching damage does.

Metrics: ``weighted`` (that quality) and ``late`` (the same with the steps' weights reversed, a
second quality objective that conflicts with the first). With ``noise > 0`` each of
``num_samples`` samples (the stand-in for prompt x seed images) adds its own deterministic noise,
so noise-aware evaluation (racing on a subset of samples) can be tested without a model.

With ``levels`` > 2 each gene is an integer ``0..levels-1`` (an :class:`IntegerSpace`, the
stand-in for action genes) that counts as that fraction of a recomputed bit, in quality and cost.
"""

from __future__ import annotations

import os
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from ecad.search.optimizer.evaluation import CandidateResult
from ecad.search.optimizer.space import BitSpace, IntegerSpace, bits_key, pack_bits
from ecad.search.optimizer.task import SearchTask


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
    def __init__(self, weights, delay: float = 0.0, crash_on: str | None = None, crash_flag: str | None = None,
                 num_samples: int = 1, noise: float = 0.0, levels: int = 2):
        self.levels = levels
        self.weights = np.asarray(weights, dtype=float)
        self.late_weights = self.weights[::-1].copy()
        self.num_samples = num_samples
        self.noise = noise
        self.delay = delay
        self.crash_on = crash_on
        self.crash_flag = crash_flag
        self.references = None

    def compute_references(self):
        return None

    def set_references(self, references):
        self.references = references

    def _sample_noise(self, bits: np.ndarray, sample: int) -> float:
        """Deterministic in (schedule, sample): the same image always scores the same."""
        seed = int.from_bytes(bytes.fromhex(bits_key(bits)[:8]), "big")
        return float(np.random.default_rng([seed, sample]).normal(0.0, self.noise))

    def evaluate(self, bits, samples=None) -> CandidateResult:
        genes = np.asarray(bits)
        bits = np.asarray(bits, dtype=bool)  # the crash trigger and the noise seed
        if self.crash_on and pack_bits(bits) == self.crash_on and not Path(self.crash_flag).exists():
            Path(self.crash_flag).write_text(str(os.getpid()))
            os._exit(1)  # simulate a worker dying (OOM kill, segfault)
        if self.delay:
            time.sleep(self.delay)
        samples = range(self.num_samples) if samples is None else samples
        computed = genes.astype(float) / (self.levels - 1)
        true = {"weighted": float(self.weights @ computed / self.weights.sum()),
                "late": float(self.late_weights @ computed / self.late_weights.sum())}
        if self.noise:
            noise = [self._sample_noise(bits, i) for i in samples]
            per_sample = {name: [value + n for n in noise] for name, value in true.items()}
        else:
            per_sample = {name: [value] * len(samples) for name, value in true.items()}
        result = CandidateResult.from_samples(per_sample, [int(i) for i in samples], cost=float(computed.mean()),
                                              quality_metric="weighted")
        return result if self.noise else replace(result, samples={}, sample_ids=[])


@dataclass(frozen=True)
class SyntheticDescription:
    """The synthetic problem as its run folder records it."""

    shape: tuple[int, int, int]
    weight_seed: int
    name: ClassVar[str] = "synthetic"
    cost_label: ClassVar[str] = "cost"
    quality_label: ClassVar[str] = "quality"

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "shape": list(self.shape), "weight_seed": self.weight_seed}


@dataclass(frozen=True)
class SyntheticRecipe:
    """The synthetic evaluator's recipe (``kind`` "synthetic" in ``ecad.search.recipes``)."""

    kind: ClassVar[str] = "synthetic"
    weights: tuple[float, ...]
    delay: float = 0.0
    crash_on: str | None = None  # packed bits of a candidate that kills its worker once
    crash_flag: str | None = None  # file that records the crash happened
    num_samples: int = 1
    noise: float = 0.0
    levels: int = 2  # values per gene: 2 = bits

    def build(self) -> SyntheticEvaluator:
        return SyntheticEvaluator(self.weights, delay=self.delay, crash_on=self.crash_on, crash_flag=self.crash_flag,
                                  num_samples=self.num_samples, noise=self.noise, levels=self.levels)

    def to_dict(self) -> dict[str, Any]:
        data = {**asdict(self), "weights": list(self.weights)}
        if self.levels == 2:  # as bit-space runs have always recorded it
            data.pop("levels")
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "SyntheticRecipe":
        return cls(**{**data, "weights": tuple(float(w) for w in data["weights"])})


def synthetic_task(shape=(5, 2, 2), weight_seed: int = 0, delay: float = 0.0, objectives: tuple[str, ...] = (),
                   levels: int = 2, **evaluator_kwargs) -> SearchTask:
    bit_space = BitSpace(tuple(shape))
    weights = synthetic_weights(bit_space, weight_seed)
    recipe = SyntheticRecipe(tuple(float(w) for w in weights), delay=delay, levels=levels, **evaluator_kwargs)
    n = bit_space.n_var
    space = bit_space if levels == 2 else IntegerSpace(((n, 0, levels - 1, levels - 1),))
    every_other = np.zeros(n, dtype=int)
    every_other[::2] = levels - 1
    return SearchTask(
        space=space,
        recipe=recipe,
        seed_schedules=[("no-cache", space.all_recompute()), ("every-other", space.coerce(every_other))],
        description=SyntheticDescription(tuple(shape), weight_seed),
        objectives=tuple(objectives),
        num_samples=recipe.num_samples,
        quality_metric="weighted",
    )
