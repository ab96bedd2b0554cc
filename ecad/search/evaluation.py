"""What evaluating one candidate means, independent of where it runs.

An *evaluator* turns a bit vector into a :class:`CandidateResult` (quality, cost). It is built
from an :class:`EvaluatorSpec` — a JSON-able ``factory`` import path plus keyword arguments — so
that the in-process executor and every Ray actor build the same thing from the same recipe, and
so that the run folder can record exactly what a run evaluated (no pickles).
"""

from __future__ import annotations

import hashlib
import importlib
import json
from dataclasses import asdict, dataclass, field
from typing import Any, Protocol

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


@dataclass(frozen=True)
class EvaluatorSpec:
    """``factory`` is ``"package.module:function"``; ``kwargs`` must be JSON-serialisable."""

    factory: str
    kwargs: dict[str, Any] = field(default_factory=dict)

    def build(self) -> CandidateEvaluator:
        module_name, _, attr = self.factory.partition(":")
        if not attr:
            raise ValueError(f"evaluator factory {self.factory!r} must look like 'module:function'")
        return getattr(importlib.import_module(module_name), attr)(**self.kwargs)

    def to_dict(self) -> dict[str, Any]:
        return {"factory": self.factory, "kwargs": self.kwargs}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "EvaluatorSpec":
        return cls(factory=data["factory"], kwargs=dict(data.get("kwargs") or {}))

    def fingerprint(self) -> str:
        return hashlib.sha256(json.dumps(self.to_dict(), sort_keys=True).encode()).hexdigest()
