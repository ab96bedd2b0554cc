"""Where candidates are evaluated: in this process (default) or on Ray actors (ray_executor.py).

An executor owns long-lived evaluators (pipeline + scorer loaded once) and evaluates a batch of
``(key, bits)`` jobs, calling ``on_result`` as each one finishes so the caller can persist it
immediately. Results are keyed, so the order in which workers finish never matters.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any, Callable, Sequence

import numpy as np

from ecad.search.evaluation import CandidateEvaluator, CandidateResult, EvaluatorSpec

Job = tuple[str, np.ndarray]
ResultCallback = Callable[[str, CandidateResult], None]


class Executor(ABC):
    num_workers: int = 1

    @abstractmethod
    def compute_references(self) -> dict[str, Any] | None:
        """Uncached outputs, computed once by one worker (None if the scorer needs none)."""

    @abstractmethod
    def set_references(self, references: dict[str, Any] | None) -> None:
        """Hand the references to every worker (also to workers started later)."""

    @abstractmethod
    def evaluate(self, jobs: Sequence[Job], on_result: ResultCallback) -> None: ...

    def close(self) -> None:
        pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


class LocalExecutor(Executor):
    """Evaluates in this process with one evaluator built lazily from the spec."""

    def __init__(self, spec: EvaluatorSpec, evaluator: CandidateEvaluator | None = None):
        self.spec = spec
        self._evaluator = evaluator

    @property
    def evaluator(self) -> CandidateEvaluator:
        if self._evaluator is None:
            self._evaluator = self.spec.build()
        return self._evaluator

    def compute_references(self):
        return self.evaluator.compute_references()

    def set_references(self, references):
        self.evaluator.set_references(references)

    def evaluate(self, jobs, on_result):
        for key, bits in jobs:
            on_result(key, self.evaluator.evaluate(bits))


def make_executor(
    spec: EvaluatorSpec, *, ray_address: str | None = None, num_workers: int | None = None, **ray_options
) -> Executor:
    """``ray_address`` None → in-process; ``"auto"``/``"local"``/``"ray://..."`` → Ray actors."""
    if not ray_address:
        return LocalExecutor(spec)
    from ecad.search.ray_executor import RayExecutor

    return RayExecutor(spec, address=ray_address, num_workers=num_workers, **ray_options)
