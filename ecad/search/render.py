"""The glue between the model-free search engine and a diffusers pipeline.

* :class:`RenderRecipe` — everything needed to render and score schedules (model, setting,
  scorer, prompts x seeds, cost); a frozen value that is also the JSON a Ray actor rebuilds from.
* :class:`PipelineEvaluator` — built from a recipe where the model lives: a loaded pipeline +
  scorer, rendering every candidate for the same prompts x seeds (so differences are the
  schedule's doing) and scoring it against the uncached images of those prompts and seeds
  when the scorer needs them. Cost: the analytic transformer MACs of one image relative to no
  caching (``cost="macs"``, deterministic) or the measured seconds per image (``"latency"``).
* :func:`build_model_task` — the search task for a model, built in the driver without loading
  its weights (the transformer on the meta device gives the block layout and fingerprint).
* :func:`front_to_bank` — the found front as a schedule bank (``ecad.bank``), what serving loads.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from ecad.paths import model_name
from ecad.search.engine.evaluation import CandidateResult
from ecad.search.engine.loop import SearchResult
from ecad.search.engine.space import BitSpace
from ecad.search.engine.task import SearchTask
from ecad.setting import Setting

COSTS = ("macs", "latency")
DTYPES = ("float32", "float16", "bfloat16")


@dataclass(frozen=True)
class RenderRecipe:
    """How to render and score schedules of ``model`` at ``setting`` (``kind`` "render")."""

    kind: ClassVar[str] = "render"
    model: str
    setting: Setting
    scorer: str
    prompts: tuple[str, ...]
    seeds: tuple[int, ...]
    scorer_kwargs: dict[str, Any] = field(default_factory=dict)
    cost: str = "macs"
    device: str = "cpu"
    dtype: str = "float32"
    batch_size: int | None = None
    num_threads: int | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "model", str(self.model))
        object.__setattr__(self, "prompts", tuple(self.prompts))
        object.__setattr__(self, "seeds", tuple(int(s) for s in self.seeds))
        if self.cost not in COSTS:
            raise ValueError(f"RenderRecipe.cost must be one of {COSTS}, got {self.cost!r}")
        if self.dtype not in DTYPES:
            raise ValueError(f"RenderRecipe.dtype must be one of {DTYPES}, got {self.dtype!r}")
        if not self.prompts or not self.seeds:
            raise ValueError("RenderRecipe needs at least one prompt and one seed")

    def build(self) -> "PipelineEvaluator":
        return PipelineEvaluator(self)

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "setting": self.setting.to_dict(), "prompts": list(self.prompts),
                "seeds": list(self.seeds)}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "RenderRecipe":
        return cls(**{**data, "setting": Setting.from_dict(data["setting"])})


class PipelineEvaluator:
    """A loaded pipeline + scorer that scores one schedule per ``evaluate`` call."""

    def __init__(self, recipe: RenderRecipe):
        import torch

        from ecad.adapters import get_adapter
        from ecad.generate import load_pipeline
        from ecad.quality import build_scorer

        if recipe.num_threads:
            torch.set_num_threads(recipe.num_threads)
        self.recipe = recipe
        self.setting = recipe.setting
        self.pipe = load_pipeline(recipe.model, device=recipe.device, dtype=getattr(torch, recipe.dtype))
        self.layout = get_adapter(self.pipe).layout(self.pipe.transformer)
        self.scorer = build_scorer(recipe.scorer, device=recipe.device, **recipe.scorer_kwargs)
        # prompts x seeds, the same for every candidate: differences are the schedule's doing
        self.prompts = [p for p in recipe.prompts for _ in recipe.seeds]
        self.seeds = [s for _ in recipe.prompts for s in recipe.seeds]
        self.batch_size = recipe.batch_size or len(self.prompts)
        self.space = BitSpace((self.setting.num_inference_steps, self.layout.num_blocks, self.layout.num_components))
        self.references = None
        self.full_macs = self._macs(self._schedule(self.space.all_recompute()))

    def _schedule(self, bits):
        from ecad.schedule import CacheSchedule

        return CacheSchedule(self.space.bits_to_mask(bits), self.layout)

    def _macs(self, schedule) -> int:
        from ecad.cost import image_macs

        return image_macs(self.pipe, self.setting, schedule)

    def _generate(self, schedule):
        import torch

        from ecad.generate import generate

        chunks = []
        for start in range(0, len(self.prompts), self.batch_size):
            end = start + self.batch_size
            chunks.append(generate(self.pipe, self.prompts[start:end], self.seeds[start:end],
                                   self.setting, schedule).cpu())
        return torch.cat(chunks)

    def compute_references(self) -> dict[str, Any] | None:
        if not self.scorer.needs_reference:
            return None
        return {"images": self._generate(None)}

    def set_references(self, references) -> None:
        self.references = None if references is None else references["images"]

    def _metrics(self, images) -> dict[str, float]:
        name = self.recipe.scorer
        references = self.references if self.scorer.needs_reference else None
        if self.scorer.needs_reference and references is None:
            raise RuntimeError("scorer needs reference images but none were set")
        if hasattr(self.scorer, "metrics"):
            per_image = self.scorer.metrics(images, self.prompts, references)
            score = per_image.get(name)
            if score is None:
                score = self.scorer.score(images, self.prompts, references)
        else:
            per_image = {}
            score = self.scorer.score(images, self.prompts, references)
        means = {metric: float(values.float().mean()) for metric, values in per_image.items()}
        means[name] = float(score.float().mean())
        return means

    def evaluate(self, bits: np.ndarray) -> CandidateResult:
        schedule = self._schedule(bits)
        started = time.perf_counter()
        images = self._generate(schedule)
        seconds_per_image = (time.perf_counter() - started) / len(self.prompts)
        metrics = self._metrics(images)
        macs = self._macs(schedule)
        cost = macs / self.full_macs if self.recipe.cost == "macs" else seconds_per_image
        return CandidateResult(
            quality=metrics[self.recipe.scorer], cost=float(cost), macs=int(macs), metrics=metrics,
            seconds=time.perf_counter() - started,
        )


def transformer_skeleton(model: str):
    """(transformer on the meta device, its config dict) for a local folder or hub id."""
    import diffusers
    from accelerate import init_empty_weights

    index = diffusers.DiffusionPipeline.load_config(model)
    _, class_name = index["transformer"]
    cls = getattr(diffusers, class_name)
    config = cls.load_config(model, subfolder="transformer")
    with init_empty_weights():
        transformer = cls.from_config(config)
    return transformer, dict(config)


def build_model_task(recipe: RenderRecipe) -> SearchTask:
    """The search over ``recipe``'s model: bit space, heuristic seeds, schedule hashes."""
    from ecad.adapters import get_adapter
    from ecad.bank import fingerprint
    from ecad.heuristics import heuristic_suite
    from ecad.schedule import CacheSchedule

    transformer, config = transformer_skeleton(recipe.model)
    layout = get_adapter(transformer).layout(transformer)
    steps = recipe.setting.num_inference_steps
    space = BitSpace((steps, layout.num_blocks, layout.num_components))
    seeds_bits = [(name, space.mask_to_bits(s.mask)) for name, s in heuristic_suite(layout, steps).items()]

    def schedule_hash(bits) -> str:
        return CacheSchedule(space.bits_to_mask(bits), layout).hash

    return SearchTask(
        space=space,
        recipe=recipe,
        seeds=seeds_bits,
        key_fn=schedule_hash,
        setting=recipe.setting,
        description={
            "name": f"{model_name(recipe.model)} {recipe.setting.name}",
            "model": recipe.model,
            "model_fingerprint": fingerprint(config),
            "layout": layout.to_dict(),
            "scorer": recipe.scorer,
            "cost": recipe.cost,
            "cost_label": "transformer MACs / no-cache MACs" if recipe.cost == "macs" else "seconds per image",
            "quality_label": recipe.scorer,
        },
    )


def schedule_of(task: SearchTask, bits):
    from ecad.schedule import BlockLayout, CacheSchedule

    return CacheSchedule(task.space.bits_to_mask(bits), BlockLayout.from_dict(task.description["layout"]))


def front_to_bank(setting: Setting, task: SearchTask, result: SearchResult, *, calibration: dict[str, Any]):
    """Front entries (ids ``ecad-...``/heuristic names), no-cache always included, cheapest first."""
    from ecad.bank import BankEntry, ScheduleBank

    scorer = task.description["scorer"]
    records = list(result.front)
    no_cache_key = task.key(task.space.all_recompute())
    if all(r.key != no_cache_key for r in records):
        records.append(result.memo[no_cache_key])
    entries = []
    for record in sorted(records, key=lambda r: (r.result.cost, -r.result.quality, r.key)):
        if record.key == no_cache_key:
            entry_id, source = "no-cache", "no-cache"
        elif record.label:
            entry_id, source = record.label, "heuristic"
        else:
            entry_id, source = f"ecad-g{record.generation}-{record.key[:8]}", "ecad"
        entries.append(
            BankEntry(
                id=entry_id,
                schedule=schedule_of(task, record.bits).to_dict(),
                macs=int(record.result.macs or 0),
                quality={**record.result.metrics, scorer: record.result.quality},
                source=source,
            )
        )
    return ScheduleBank(
        model=task.description["model"],
        model_fingerprint=task.description["model_fingerprint"],
        **setting.to_dict(),
        scorer=scorer,
        quality_metric=scorer,
        calibration=calibration,
        entries=entries,
    )


def write_bank(task: SearchTask, result: SearchResult, path: str | Path, *, calibration: dict[str, Any]) -> Path:
    return front_to_bank(task.setting, task, result, calibration=calibration).save(path)
