"""How a candidate is rendered and scored: the recipe, and the evaluator built from it.

* :class:`RenderRecipe` — everything needed to render and score schedules (model, setting,
  scorer, prompts x seeds, cost, the actions searched); a frozen value that is also the JSON a
  Ray actor rebuilds from, and what a run folder records under "evaluator".
* :class:`PipelineEvaluator` — built from a recipe where the model lives: a loaded pipeline +
  scorers. ``evaluate`` decodes the genes once (``Genome.decode``), renders the same prompts x
  seeds for every candidate (so differences are the schedule's doing), scores the images (against
  the uncached images of those prompts and seeds when a scorer needs them) and costs the schedule:
  the analytic transformer MACs of one image relative to no caching (``cost="macs"``,
  deterministic), the measured seconds per image (``"latency"``), or the seconds a per-hardware
  model fitted on timed schedules predicts, relative to no caching (``"fitted"``, deterministic;
  ``ecad.cost.FittedCost`` carried in the recipe).

Rendering (``render``), scoring (``score``) and costing (``schedule_cost``) are separate methods:
what calls the model is in the first two only.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from typing import Any, ClassVar

import numpy as np

from ecad.search.genome import REUSE_ONLY, Genome, parse_actions
from ecad.search.optimizer.evaluation import CandidateResult
from ecad.setting import Setting

#: the cost objectives, and how a plot labels each
COST_LABELS = {"macs": "transformer MACs / no-cache MACs", "latency": "seconds per image",
               "fitted": "fitted seconds / no-cache seconds"}
COSTS = tuple(COST_LABELS)


@dataclass(frozen=True)
class RenderRecipe:
    """How to render and score schedules of ``model`` at ``setting`` (``kind`` "render")."""

    kind: ClassVar[str] = "render"
    model: str
    setting: Setting
    scorer: str
    prompts: tuple[str, ...]
    #: image seeds: every prompt is rendered once per seed, for every candidate
    seeds: tuple[int, ...]
    scorer_kwargs: dict[str, Any] = field(default_factory=dict)
    #: more scorers whose metrics are also recorded (name -> constructor kwargs), e.g. for
    #: objectives the main scorer does not compute
    extra_scorers: dict[str, dict[str, Any]] = field(default_factory=dict)
    cost: str = "macs"
    device: str = "cpu"
    #: a torch floating-point dtype's name, e.g. "bfloat16"
    dtype: str = "float32"
    batch_size: int | None = None
    num_threads: int | None = None
    #: the actions searched besides recompute (``ecad.search.genome.ACTIONS``); reuse only is the v1 search
    actions: tuple[str, ...] = REUSE_ONLY
    #: ``FittedCost.to_dict()`` for ``cost="fitted"``
    cost_model: dict[str, Any] | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "actions", parse_actions(self.actions))
        object.__setattr__(self, "model", str(self.model))
        object.__setattr__(self, "prompts", tuple(self.prompts))
        object.__setattr__(self, "seeds", tuple(int(s) for s in self.seeds))
        if self.cost not in COSTS:
            raise ValueError(f"RenderRecipe.cost must be one of {COSTS}, got {self.cost!r}")
        if (self.cost == "fitted") != (self.cost_model is not None):
            raise ValueError("RenderRecipe.cost_model (a fitted cost) is needed for, and only for, cost='fitted'")
        if not self.prompts or not self.seeds:
            raise ValueError("RenderRecipe needs at least one prompt and one seed")

    def build(self) -> "PipelineEvaluator":
        return PipelineEvaluator(self)

    def to_dict(self) -> dict[str, Any]:
        data = {**asdict(self), "setting": self.setting.to_dict(), "prompts": list(self.prompts),
                "seeds": list(self.seeds), "actions": list(self.actions)}
        if self.actions == REUSE_ONLY:  # as v1 runs recorded their evaluator, so they still resume
            data.pop("actions")
        if self.cost_model is None:
            data.pop("cost_model")
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "RenderRecipe":
        return cls(**{**data, "setting": Setting.from_dict(data["setting"])})


class PipelineEvaluator:
    """A loaded pipeline + scorers that scores one candidate per ``evaluate`` call."""

    def __init__(self, recipe: RenderRecipe):
        import torch

        from ecad.adapters import get_adapter
        from ecad.generate import load_pipeline
        from ecad.quality import build_scorer

        if recipe.num_threads:
            torch.set_num_threads(recipe.num_threads)
        dtype = getattr(torch, recipe.dtype, None)
        if not isinstance(dtype, torch.dtype) or not dtype.is_floating_point:
            raise ValueError(f"RenderRecipe.dtype must name a torch floating-point dtype, got {recipe.dtype!r}")
        self.recipe = recipe
        self.setting = recipe.setting
        self.pipe = load_pipeline(recipe.model, device=recipe.device, dtype=dtype)
        adapter = get_adapter(self.pipe)
        self.scorers = {name: build_scorer(name, device=recipe.device, **kwargs)
                        for name, kwargs in {recipe.scorer: recipe.scorer_kwargs, **recipe.extra_scorers}.items()}
        # prompts x seeds, the same for every candidate: differences are the schedule's doing
        self.prompts = [p for p in recipe.prompts for _ in recipe.seeds]
        self.seeds = [s for _ in recipe.prompts for s in recipe.seeds]
        self.batch_size = recipe.batch_size or len(self.prompts)
        if "guidance" in recipe.actions and not (adapter.batched_guidance and self.setting.guidance_scale > 1):
            raise ValueError(f"the 'guidance' action needs classifier-free guidance run as one batch; "
                             f"{type(self.pipe.transformer).__name__} at guidance scale "
                             f"{self.setting.guidance_scale} has none")
        self.genome = Genome(adapter.layout(self.pipe.transformer), self.setting.num_inference_steps, recipe.actions)
        self.references = None
        self.full_macs = self._macs(self.genome.decode(self.genome.space.all_recompute()))
        self._predicted_speedup = None  # cost "fitted": schedule -> predicted speedup

    # -- the optimizer's interface (CandidateEvaluator) -------------------------------------------

    def compute_references(self) -> dict[str, Any] | None:
        if not any(scorer.needs_reference for scorer in self.scorers.values()):
            return None
        return {"images": self.render(None, list(range(len(self.prompts))))}

    def set_references(self, references) -> None:
        self.references = None if references is None else references["images"]

    def evaluate(self, genes: np.ndarray, samples=None) -> CandidateResult:
        samples = list(range(len(self.prompts))) if samples is None else [int(i) for i in samples]
        schedule = self.genome.decode(genes)
        started = time.perf_counter()
        images = self.render(schedule, samples)
        seconds_per_image = (time.perf_counter() - started) / len(samples)
        per_image = self.score(images, samples)
        if self.recipe.cost == "latency":
            cost, macs = seconds_per_image, self._macs(schedule)
        else:
            cost, macs = self.schedule_cost(schedule)
        return CandidateResult.from_samples(per_image, samples, cost=float(cost), quality_metric=self.recipe.scorer,
                                            macs=int(macs), seconds=time.perf_counter() - started)

    def cost(self, genes: np.ndarray) -> tuple[float, int]:
        """(cost objective, MACs per image) of a candidate, without rendering it (``schedule_cost``)."""
        return self.schedule_cost(self.genome.decode(genes))

    # -- rendering and scoring: the model's part ---------------------------------------------------

    def render(self, schedule, samples: list[int]):
        """The images of ``samples`` (indices into prompts x seeds) under ``schedule`` (None: no cache)."""
        import torch

        from ecad.generate import generate

        chunks = []
        for start in range(0, len(samples), self.batch_size):
            batch = samples[start : start + self.batch_size]
            chunks.append(generate(self.pipe, [self.prompts[i] for i in batch], [self.seeds[i] for i in batch],
                                   self.setting, schedule).cpu())
        return torch.cat(chunks)

    def score(self, images, samples: list[int]) -> dict[str, list[float]]:
        """Every metric of every scorer, one value per image (the scorer's own score under its name)."""
        prompts = [self.prompts[i] for i in samples]
        values: dict[str, Any] = {}
        for name, scorer in self.scorers.items():
            references = None
            if scorer.needs_reference:
                if self.references is None:
                    raise RuntimeError(f"scorer {name!r} needs reference images but none were set")
                references = self.references[samples]
            per_image = scorer.metrics(images, prompts, references)
            values.update(per_image)
            if name not in per_image:  # registered under another name than the scorer reports
                values[name] = scorer.score(images, prompts, references)
        return {name: [float(v) for v in tensor.float().reshape(-1)] for name, tensor in values.items()}

    # -- cost ----------------------------------------------------------------------------------------

    def schedule_cost(self, schedule) -> tuple[float, int]:
        """(cost objective, MACs per image) of a schedule: the deterministic costs only ("macs",
        "fitted"); a latency is measured while rendering."""
        macs = self._macs(schedule)
        if self.recipe.cost == "macs":
            return macs / self.full_macs, macs
        if self.recipe.cost == "fitted":  # this hardware's predicted time relative to no-cache
            return 1.0 / self._fitted_speedup(schedule), macs
        raise ValueError(f"cost {self.recipe.cost!r} is measured while rendering, not computed")

    def _macs(self, schedule) -> int:
        from ecad.cost import image_macs

        return image_macs(self.pipe, self.setting, schedule)

    def _fitted_speedup(self, schedule) -> float:
        if self._predicted_speedup is None:  # built once: no-cache's cost features do not change
            from ecad.cost import FittedCost, predicted_speedup

            self._predicted_speedup = predicted_speedup(FittedCost.from_dict(self.recipe.cost_model), self.pipe,
                                                        self.setting)
        return self._predicted_speedup(schedule)
