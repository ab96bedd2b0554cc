"""One interface for every quality scorer (ImageReward, CLIP, fidelity, the bundled reward).

Scorers work on in-memory tensors: images are float ``[N, 3, H, W]`` in ``[0, 1]`` (what a
pipeline returns with ``output_type="pt"``), never PNG round trips.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Callable

import torch


class QualityScorer(ABC):
    """Scores generated images; higher is better."""

    #: registry name, e.g. "image-reward", "clip", "fidelity", "scenes-reward"
    name: str = ""
    #: True when ``score`` needs the uncached images of the same prompt and seed
    needs_reference: bool = False

    @abstractmethod
    def score(
        self,
        images: torch.Tensor,
        prompts: list[str],
        references: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Return one float score per image, shape ``[N]``."""


_SCORERS: dict[str, Callable[..., QualityScorer]] = {}


def register_scorer(name: str):
    """Class/factory decorator: ``build_scorer(name, **kwargs)`` then calls it."""

    def wrap(factory):
        _SCORERS[name] = factory
        return factory

    return wrap


def available_scorers() -> list[str]:
    _import_builtin_scorers()
    return sorted(_SCORERS)


def build_scorer(name: str, **kwargs) -> QualityScorer:
    _import_builtin_scorers()
    if name not in _SCORERS:
        raise ValueError(f"unknown scorer {name!r}; available: {', '.join(sorted(_SCORERS))}")
    return _SCORERS[name](**kwargs)


def _import_builtin_scorers() -> None:
    # Each module registers itself on import. Modules import their optional extras lazily
    # (in the scorer's constructor), so importing them here never needs an extra.
    import importlib
    import pkgutil

    import ecad.quality

    for info in pkgutil.iter_modules(ecad.quality.__path__):
        if info.name != "base":
            importlib.import_module(f"ecad.quality.{info.name}")
