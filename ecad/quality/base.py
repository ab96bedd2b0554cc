"""One interface for every quality scorer (ImageReward, CLIP, fidelity, the bundled reward).

Scorers work on in-memory tensors: images are float ``[N, 3, H, W]`` in ``[0, 1]`` (what a
pipeline returns with ``output_type="pt"``), never PNG round trips.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Callable, Sequence

import torch
import torch.nn.functional as F


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

    def metrics(
        self,
        images: torch.Tensor,
        prompts: list[str],
        references: torch.Tensor | None = None,
    ) -> dict[str, torch.Tensor]:
        """Every per-image metric the scorer computes, by name; the bank records all of them.

        A scorer with one number reports it under its registry name; scorers with several
        (fidelity: PSNR and SSIM; combined: each part) override this.
        """
        return {self.name: self.score(images, prompts, references)}


def score_in_batches(
    images: torch.Tensor,
    prompts: Sequence[str],
    batch_size: int,
    score_batch: Callable[[torch.Tensor, list[str]], torch.Tensor],
) -> torch.Tensor:
    """``score_batch(images, prompts)`` over chunks of ``batch_size``: one float score per image.

    Model-based scorers run their network in chunks so memory stays bounded whatever the number
    of images; this checks that every image has its prompt and joins the chunks' scores.
    """
    if len(prompts) != len(images):
        raise ValueError(f"{len(images)} images but {len(prompts)} prompts")
    scores = [
        score_batch(images[start : start + batch_size], list(prompts[start : start + batch_size])).reshape(-1).float().cpu()
        for start in range(0, len(images), batch_size)
    ]
    return torch.cat(scores) if scores else torch.zeros(0)


def resize_crop_normalize(images: torch.Tensor, size: int, mean: Sequence[float], std: Sequence[float]) -> torch.Tensor:
    """float [N, 3, H, W] in [0, 1] -> shorter side to ``size`` (bicubic, antialiased), centre crop,
    ``(x - mean) / std``: the PIL transform of CLIP-style image processors, done in torch."""
    images = images.float().clamp(0, 1)
    height, width = images.shape[-2:]
    scale = size / min(height, width)
    new_h, new_w = max(size, round(height * scale)), max(size, round(width * scale))
    images = F.interpolate(images, size=(new_h, new_w), mode="bicubic", align_corners=False, antialias=True)
    top, left = (new_h - size) // 2, (new_w - size) // 2
    images = images[..., top : top + size, left : left + size].clamp(0, 1)
    mean = torch.tensor(mean, device=images.device).view(1, 3, 1, 1)
    std = torch.tensor(std, device=images.device).view(1, 3, 1, 1)
    return (images - mean) / std


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
