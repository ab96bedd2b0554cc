"""What evaluating one candidate means, independent of the model and of where it runs.

An *evaluator* turns a bit vector into a :class:`CandidateResult` (quality, cost). It is built
from a *recipe*: a frozen dataclass that is also JSON (``to_dict``/``from_dict``), so the
in-process executor and every Ray actor build the same evaluator from the same value, and the
run folder records exactly what a run evaluated (no pickles, no import paths).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import asdict, dataclass, field
from typing import Any, Callable, ClassVar, Protocol, Sequence

import numpy as np


@dataclass
class CandidateResult:
    """One evaluated candidate. ``quality``: higher is better; ``cost``: lower is better."""

    quality: float
    cost: float
    macs: int | None = None
    metrics: dict[str, float] = field(default_factory=dict)
    seconds: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "CandidateResult":
        return cls(
            quality=float(data["quality"]),
            cost=float(data["cost"]),
            macs=None if data.get("macs") is None else int(data["macs"]),
            metrics={k: float(v) for k, v in (data.get("metrics") or {}).items()},
            seconds=float(data.get("seconds", 0.0)),
        )


class CandidateEvaluator(Protocol):
    """Lives where the model lives (this process, or a Ray actor); keeps it loaded."""

    def compute_references(self) -> dict[str, Any] | None:
        """Uncached outputs (tensors) the scorer compares against, or None if not needed."""

    def set_references(self, references: dict[str, Any] | None) -> None: ...

    def evaluate(self, bits: np.ndarray) -> CandidateResult: ...


class Recipe(Protocol):
    """How to build an evaluator: a frozen dataclass whose ``to_dict`` is JSON.

    ``kind`` names the recipe type in ``ecad.search.recipes.RECIPES``, the explicit registry a
    Ray actor rebuilds it from.
    """

    kind: ClassVar[str]

    def build(self) -> CandidateEvaluator: ...

    def to_dict(self) -> dict[str, Any]: ...


Job = tuple[str, np.ndarray]
ResultCallback = Callable[[str, CandidateResult], None]


class Executor(ABC):
    """Where candidates are evaluated (``ecad.search.executors``: in this process, or on Ray).

    An executor owns long-lived evaluators (pipeline + scorer loaded once) and evaluates a batch
    of ``(key, bits)`` jobs, calling ``on_result`` as each one finishes so the caller can persist
    it immediately. Results are keyed, so the order in which workers finish never matters.
    """

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
