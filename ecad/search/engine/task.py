"""A search task: the bit space, how to name a candidate, which candidates seed the search, and
the recipe of the evaluator that scores one. Built in the driver without loading the model."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np

from ecad.search.engine.evaluation import Recipe
from ecad.search.engine.space import BitSpace, bits_key
from ecad.setting import Setting


@dataclass
class SearchTask:
    space: BitSpace
    recipe: Recipe
    #: labelled candidates that seed the initial population (heuristics, no-cache), in order
    seeds: list[tuple[str, np.ndarray]] = field(default_factory=list)
    #: memo key of a candidate; for real schedules the CacheSchedule hash
    key_fn: Callable[[np.ndarray], str] = bits_key
    #: JSON-able description stored in the run config (model, scorer, layout, ...)
    description: dict[str, Any] = field(default_factory=dict)
    #: the model setting the schedules are searched for (None for model-free problems)
    setting: Setting | None = None

    def key(self, bits: np.ndarray) -> str:
        return self.key_fn(np.asarray(bits, dtype=bool))
