"""What evaluating one candidate means, independent of the model and of where it runs.

An *evaluator* turns a gene vector into a :class:`CandidateResult` (quality, cost). It is built
from a *recipe*: a frozen dataclass that is also JSON (``to_dict``/``from_dict``), so the
in-process executor and every Ray actor build the same evaluator from the same value, and the
run folder records exactly what a run evaluated (no pickles, no import paths).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import asdict, dataclass, field
from typing import Any, Callable, ClassVar, NamedTuple, Protocol, Sequence

import numpy as np


@dataclass
class CandidateResult:
    """One evaluated candidate. ``quality``: higher is better; ``cost``: lower is better.

    ``metrics`` are means over the samples (prompt x seed images) that were rendered; when the
    evaluator reports them, ``samples`` holds each metric per sample and ``sample_ids`` which
    samples those were (indices into the recipe's prompt x seed list), so partial evaluations
    can be merged (racing) and intervals bootstrapped.
    """

    quality: float
    cost: float
    macs: int | None = None
    metrics: dict[str, float] = field(default_factory=dict)
    seconds: float = 0.0
    samples: dict[str, list[float]] = field(default_factory=dict)
    sample_ids: list[int] = field(default_factory=list)

    @classmethod
    def from_samples(cls, samples: dict[str, list[float]], sample_ids: list[int], *, cost: float,
                     quality_metric: str, macs: int | None = None, seconds: float = 0.0) -> "CandidateResult":
        metrics = {name: float(np.mean(values)) for name, values in samples.items()}
        return cls(quality=metrics[quality_metric], cost=cost, macs=macs, metrics=metrics, seconds=seconds,
                   samples={k: [float(v) for v in vs] for k, vs in samples.items()}, sample_ids=list(sample_ids))

    def merged(self, other: "CandidateResult", quality_metric: str) -> "CandidateResult":
        """This result and one on other samples of the same candidate, as one (cost: per-sample mean)."""
        if set(self.sample_ids) & set(other.sample_ids):
            raise ValueError("merged results must cover disjoint samples")
        n, m = len(self.sample_ids), len(other.sample_ids)
        samples = {k: self.samples[k] + other.samples[k] for k in self.samples}
        return CandidateResult.from_samples(samples, self.sample_ids + other.sample_ids,
                                            cost=(self.cost * n + other.cost * m) / (n + m), quality_metric=quality_metric,
                                            macs=self.macs, seconds=self.seconds + other.seconds)

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        if not self.samples:  # keep memo lines of evaluators without per-sample values as they were
            data.pop("samples"), data.pop("sample_ids")
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "CandidateResult":
        return cls(
            quality=float(data["quality"]),
            cost=float(data["cost"]),
            macs=None if data.get("macs") is None else int(data["macs"]),
            metrics={k: float(v) for k, v in (data.get("metrics") or {}).items()},
            seconds=float(data.get("seconds", 0.0)),
            samples={k: [float(v) for v in vs] for k, vs in (data.get("samples") or {}).items()},
            sample_ids=[int(i) for i in data.get("sample_ids") or []],
        )


class CandidateEvaluator(Protocol):
    """Lives where the model lives (this process, or a Ray actor); keeps it loaded."""

    def compute_references(self) -> dict[str, Any] | None:
        """Uncached outputs (tensors) the scorer compares against, or None if not needed."""

    def set_references(self, references: dict[str, Any] | None) -> None: ...

    def evaluate(self, genes: np.ndarray, samples: Sequence[int] | None = None) -> CandidateResult:
        """Score one candidate on ``samples`` (indices of prompt x seed pairs; None: all)."""


class Recipe(Protocol):
    """How to build an evaluator: a frozen dataclass whose ``to_dict`` is JSON.

    ``kind`` names the recipe type in ``ecad.search.recipes.RECIPES``, the explicit registry a
    Ray actor rebuilds it from.
    """

    kind: ClassVar[str]

    def build(self) -> CandidateEvaluator: ...

    def to_dict(self) -> dict[str, Any]: ...


class EvaluationJob(NamedTuple):
    """One evaluation an executor runs: a candidate's genes on some samples."""

    key: str  # the candidate's memo key; its result is reported under it
    genes: np.ndarray
    samples: Sequence[int] | None = None  # indices of prompt x seed pairs; None: all


ResultCallback = Callable[[str, CandidateResult], None]


class Executor(ABC):
    """Where candidates are evaluated (``ecad.search.executors``: in this process, or on Ray).

    An executor owns long-lived evaluators (pipeline + scorer loaded once) and evaluates a batch
    of jobs, calling ``on_result`` as each one finishes so the caller can persist
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
    def evaluate(self, jobs: Sequence[EvaluationJob], on_result: ResultCallback) -> None: ...

    def close(self) -> None:
        pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
