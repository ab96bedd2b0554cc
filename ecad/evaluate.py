"""The one path from (pipeline, setting, schedule, prompts x seeds) to images and to scores.

Calibration (`ecad.search.evaluator`), rescoring and validating a bank (`ecad.rescore`),
the benchmark (`ecad.bench.runner`) and the model card (`scripts/eval_bundled.py`) all render and
score through here:

* `ImageGrid` — which images: every prompt with every seed, image ``i`` = prompt ``i // len(seeds)``
  with seed ``i % len(seeds)``; the same grid for every schedule, so differences between schedules
  are the schedule's doing.
* `render` — the images of a grid (or of some of its items) at a setting under a schedule (None:
  no caching, or whatever cache method the caller has enabled on the pipeline), in batches.
* `Scoring` — scorers from the registry (`ecad.quality`), each metric per image; scorers that need
  the uncached image of the same prompt and seed get it.
* `Evaluation` — the three together, with the reference images rendered once.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import torch

from ecad.generate import generate
from ecad.quality import QualityScorer, build_scorer
from ecad.schedule import CacheSchedule
from ecad.setting import Setting


@dataclass(frozen=True)
class ImageGrid:
    """Every prompt with every seed (prompt-major)."""

    prompts: tuple[str, ...]
    seeds: tuple[int, ...]

    def __post_init__(self) -> None:
        object.__setattr__(self, "prompts", tuple(self.prompts))
        object.__setattr__(self, "seeds", tuple(int(s) for s in self.seeds))
        if not self.prompts or not self.seeds:
            raise ValueError("an image grid needs at least one prompt and one seed")

    def __len__(self) -> int:
        return len(self.prompts) * len(self.seeds)

    def items(self, samples: Sequence[int] | None = None) -> list[tuple[str, int]]:
        """(prompt, seed) of each image, or of the images numbered ``samples``."""
        every = [(p, s) for p in self.prompts for s in self.seeds]
        return every if samples is None else [every[int(i)] for i in samples]


def render(pipe: Any, setting: Setting, schedule: CacheSchedule | None, items: Sequence[tuple[str, int]], *,
           batch_size: int | None = None) -> torch.Tensor:
    """float [N, 3, H, W] in [0, 1] on the CPU: one image per (prompt, seed), ``batch_size`` per
    pipeline call (default: all in one)."""
    items = list(items)
    size = batch_size or len(items)
    chunks = [generate(pipe, [p for p, _ in batch], [s for _, s in batch], setting, schedule).cpu()
              for batch in (items[i:i + size] for i in range(0, len(items), size))]
    return torch.cat(chunks)


class Scoring:
    """Named scorers; `per_image` gives every metric of every scorer, one value per image."""

    def __init__(self, scorers: Mapping[str, QualityScorer]):
        if not scorers:
            raise ValueError("scoring needs at least one scorer")
        self.scorers = dict(scorers)

    @classmethod
    def build(cls, specs: Mapping[str, Mapping[str, Any]], device: str = "cpu") -> "Scoring":
        """From registry names -> constructor kwargs, e.g. ``{"fidelity": {"max_psnr": 100}}``."""
        return cls({name: build_scorer(name, device=device, **dict(kwargs)) for name, kwargs in specs.items()})

    @property
    def needs_reference(self) -> bool:
        return any(s.needs_reference for s in self.scorers.values())

    def per_image(self, images: torch.Tensor, prompts: Sequence[str],
                  references: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        """Metric name -> float [N]. A scorer's own score is also reported under the name it is
        registered by here, when its metrics do not carry that name."""
        prompts = list(prompts)
        values: dict[str, torch.Tensor] = {}
        for name, scorer in self.scorers.items():
            refs = None
            if scorer.needs_reference:
                if references is None:
                    raise RuntimeError(f"scorer {name!r} needs the uncached reference images, none were given")
                refs = references
            metrics = scorer.metrics(images, prompts, refs)
            values.update(metrics)
            if name not in metrics:
                values[name] = scorer.score(images, prompts, refs)
        return {name: tensor.detach().float().reshape(-1).cpu() for name, tensor in values.items()}


class Evaluation:
    """A pipeline at a setting, an image grid and a scoring: images and scores of any schedule.

    The uncached images of the grid (what fidelity scorers compare with) are rendered on first
    need, or handed in (`set_references`: calibration renders them once in the driver and gives
    them to every worker).
    """

    def __init__(self, pipe: Any, setting: Setting, grid: ImageGrid, scoring: Scoring, *,
                 batch_size: int | None = None):
        self.pipe, self.setting, self.grid, self.scoring = pipe, setting, grid, scoring
        self.batch_size = batch_size or len(grid)
        self._references: torch.Tensor | None = None

    def images(self, schedule: CacheSchedule | None, samples: Sequence[int] | None = None) -> torch.Tensor:
        return render(self.pipe, self.setting, schedule, self.grid.items(samples), batch_size=self.batch_size)

    @property
    def references(self) -> torch.Tensor | None:
        """The uncached images of the whole grid, where a scorer needs them (else None)."""
        if self._references is None and self.scoring.needs_reference:
            self._references = self.images(None)
        return self._references

    def set_references(self, images: torch.Tensor | None) -> None:
        if images is not None and len(images) != len(self.grid):
            raise ValueError(f"{len(images)} reference images for a grid of {len(self.grid)}")
        self._references = images

    def scores(self, images: torch.Tensor, samples: Sequence[int] | None = None) -> dict[str, torch.Tensor]:
        """Every metric per image of ``images`` (the grid's images numbered ``samples``, default all)."""
        index = list(range(len(self.grid))) if samples is None else [int(i) for i in samples]
        if len(index) != len(images):
            raise ValueError(f"{len(images)} images for {len(index)} samples")
        references = self.references
        return self.scoring.per_image(images, [p for p, _ in self.grid.items(index)],
                                      None if references is None else references[index])

    def evaluate(self, schedule: CacheSchedule | None,
                 samples: Sequence[int] | None = None) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """(images, every metric per image) of ``schedule`` on the grid's images ``samples``."""
        images = self.images(schedule, samples)
        return images, self.scores(images, samples)
