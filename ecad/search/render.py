"""The glue between the model-free search engine and a diffusers pipeline.

* :class:`RenderRecipe` — everything needed to render and score schedules (model, setting,
  scorer, prompts x seeds, cost, the engine actions searched); a frozen value that is also the
  JSON a Ray actor rebuilds from.
* :func:`search_space` — the searched actions as genes: ``ecad.schedule.GeneSpace`` (what a gene
  vector means) and the engine's space over it (a :class:`BitSpace` for reuse-only, the v1
  search, else an :class:`IntegerSpace`).
* :class:`PipelineEvaluator` — built from a recipe where the model lives: a loaded pipeline +
  scorer, rendering every candidate for the same prompts x seeds (so differences are the
  schedule's doing) and scoring it against the uncached images of those prompts and seeds
  when the scorer needs them. Cost: the analytic transformer MACs of one image relative to no
  caching (``cost="macs"``, deterministic), the measured seconds per image (``"latency"``), or
  the seconds a per-hardware model fitted on timed schedules predicts, relative to no caching
  (``"fitted"``, deterministic; ``ecad.cost.FittedCost`` carried in the recipe).
* :func:`build_model_task` — the search task for a model, built in the driver without loading
  its weights (the transformer on the meta device gives the block layout and fingerprint);
  seeded with every heuristic of ``heuristic_suite`` the searched actions can express.
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
from ecad.search.engine.noise import NOISE_Z, bootstrap_interval, could_be_nondominated, optimistic_point
from ecad.search.engine.space import BitSpace, IntegerSpace
from ecad.search.engine.task import BANK_SEED_PREFIX, SearchTask
from ecad.setting import Setting

COSTS = ("macs", "latency", "fitted")
DTYPES = ("float32", "float16", "bfloat16")
#: the actions a search may use besides recompute (always searched): reuse the cached output,
#: forecast it (order 1), skip a whole block (replay its residual delta), reuse the guidance
#: difference at a step (run the conditional rows only; `ecad.hooks.guidance`)
ACTIONS = ("reuse", "forecast", "skip", "guidance")
#: the v1 search: recompute or reuse, nothing else
REUSE_ONLY = ("reuse",)


def parse_actions(names) -> tuple[str, ...]:
    """``"reuse,forecast"`` or a sequence of names → the searched actions, in canonical order."""
    if isinstance(names, str):
        names = [part.strip() for part in names.split(",") if part.strip()]
    names = tuple(names)
    unknown = sorted(set(names) - set(ACTIONS))
    if unknown or not names:
        raise ValueError(f"actions must be a non-empty subset of {', '.join(ACTIONS)} "
                         f"(recompute is always searched), got {', '.join(unknown) or 'none'}")
    if not {"reuse", "forecast"} & set(names):  # every component has a gene, which needs a second value
        raise ValueError(f"actions need reuse or forecast beside {', '.join(names)} (a component gene must "
                         "have something besides recompute)")
    return tuple(a for a in ACTIONS if a in names)


def search_space(layout, num_steps: int, actions: tuple[str, ...] = REUSE_ONLY):
    """(GeneSpace, the engine space over its genes) of the schedules using ``actions``."""
    from ecad.schedule import FORECAST, RECOMPUTE, REUSE, GeneSpace

    codes = {"reuse": REUSE, "forecast": FORECAST}
    genes = GeneSpace(layout, num_steps, actions=(RECOMPUTE, *(codes[a] for a in actions if a in codes)),
                      block_skip="skip" in actions, guidance_reuse="guidance" in actions)
    if actions == REUSE_ONLY:  # the v1 bit space: same config, packing and operators as before
        return genes, BitSpace((num_steps, layout.num_blocks, layout.num_components))
    segments = [(genes.num_action_genes, min(genes.actions), max(genes.actions), RECOMPUTE)]
    segments += [(count, 0, 1, 0) for count in (genes.num_skip_genes, genes.num_guidance_genes) if count]
    return genes, IntegerSpace(tuple(segments))


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
    #: more scorers whose metrics are also recorded (name -> constructor kwargs), e.g. for
    #: objectives the main scorer does not compute
    extra_scorers: dict[str, dict[str, Any]] = field(default_factory=dict)
    cost: str = "macs"
    device: str = "cpu"
    dtype: str = "float32"
    batch_size: int | None = None
    num_threads: int | None = None
    #: the actions searched besides recompute (``ACTIONS``); reuse only is the v1 search
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
        if self.dtype not in DTYPES:
            raise ValueError(f"RenderRecipe.dtype must be one of {DTYPES}, got {self.dtype!r}")
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
        self.scorers = {name: build_scorer(name, device=recipe.device, **kwargs)
                        for name, kwargs in {recipe.scorer: recipe.scorer_kwargs, **recipe.extra_scorers}.items()}
        # prompts x seeds, the same for every candidate: differences are the schedule's doing
        self.prompts = [p for p in recipe.prompts for _ in recipe.seeds]
        self.seeds = [s for _ in recipe.prompts for s in recipe.seeds]
        self.batch_size = recipe.batch_size or len(self.prompts)
        if "guidance" in recipe.actions and not (get_adapter(self.pipe).batched_guidance
                                                 and self.setting.guidance_scale > 1):
            raise ValueError(f"the 'guidance' action needs classifier-free guidance run as one batch; "
                             f"{type(self.pipe.transformer).__name__} at guidance scale "
                             f"{self.setting.guidance_scale} has none")
        self.genes, self.space = search_space(self.layout, self.setting.num_inference_steps, recipe.actions)
        self.references = None
        self.full_macs = self._macs(self._schedule(self.space.all_recompute()))
        self._predicted_speedup = None  # cost "fitted": schedule -> predicted speedup

    def _schedule(self, genes):
        return self.genes.from_genes(self.space.coerce(genes))

    def _fitted_speedup(self, schedule) -> float:
        if self._predicted_speedup is None:  # built once: no-cache's cost features do not change
            from ecad.cost import FittedCost, predicted_speedup

            self._predicted_speedup = predicted_speedup(FittedCost.from_dict(self.recipe.cost_model), self.pipe,
                                                        self.setting)
        return self._predicted_speedup(schedule)

    def _macs(self, schedule) -> int:
        from ecad.cost import image_macs

        return image_macs(self.pipe, self.setting, schedule)

    def _generate(self, schedule, samples: list[int]):
        import torch

        from ecad.generate import generate

        chunks = []
        for start in range(0, len(samples), self.batch_size):
            batch = samples[start : start + self.batch_size]
            chunks.append(generate(self.pipe, [self.prompts[i] for i in batch], [self.seeds[i] for i in batch],
                                   self.setting, schedule).cpu())
        return torch.cat(chunks)

    def compute_references(self) -> dict[str, Any] | None:
        if not any(scorer.needs_reference for scorer in self.scorers.values()):
            return None
        return {"images": self._generate(None, list(range(len(self.prompts))))}

    def set_references(self, references) -> None:
        self.references = None if references is None else references["images"]

    def _per_image(self, images, samples: list[int]) -> dict[str, list[float]]:
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

    def evaluate(self, bits: np.ndarray, samples=None) -> CandidateResult:
        samples = list(range(len(self.prompts))) if samples is None else [int(i) for i in samples]
        schedule = self._schedule(bits)
        started = time.perf_counter()
        images = self._generate(schedule, samples)
        seconds_per_image = (time.perf_counter() - started) / len(samples)
        per_image = self._per_image(images, samples)
        if self.recipe.cost == "latency":
            cost, macs = seconds_per_image, self._macs(schedule)
        else:
            cost, macs = self.cost(bits)
        return CandidateResult.from_samples(per_image, samples, cost=float(cost), quality_metric=self.recipe.scorer,
                                            macs=int(macs), seconds=time.perf_counter() - started)

    def cost(self, bits: np.ndarray) -> tuple[float, int]:
        """(cost objective, MACs per image) of a candidate, without rendering it: the deterministic
        costs only ("macs", "fitted"); a latency is measured while rendering."""
        schedule = self._schedule(bits)
        macs = self._macs(schedule)
        if self.recipe.cost == "macs":
            return macs / self.full_macs, macs
        if self.recipe.cost == "fitted":  # this hardware's predicted time relative to no-cache
            return 1.0 / self._fitted_speedup(schedule), macs
        raise ValueError(f"cost {self.recipe.cost!r} is measured while rendering, not computed")


def expressible_seeds(genes, space) -> list[tuple[str, np.ndarray]]:
    """Every heuristic of the suite as its real schedule's genes, if the searched actions can
    express it (a reuse-only search gets no forecast or block-skip heuristic, not a lookalike)."""
    from ecad.heuristics import heuristic_suite
    from ecad.schedule import ScheduleError

    seeds = []
    for name, schedule in heuristic_suite(genes.layout, genes.num_steps).items():
        try:
            seeds.append((name, space.coerce(genes.to_genes(schedule))))
        except ScheduleError:
            continue
    return seeds


def bank_seeds(task: SearchTask, bank) -> list[tuple[str, np.ndarray]]:
    """The entries of a schedule bank as seeds (``"bank:<id>"``), to warm-start a search from an
    earlier front. The bank must be for the task's layout and step count; entries the searched
    actions cannot express are left out (a reuse-only search gets no block-skip entry)."""
    from ecad.schedule import ScheduleError

    genes = gene_space_of(task)
    seeds = []
    for entry in bank.entries:
        schedule = entry.cache_schedule()
        if schedule.layout != genes.layout or schedule.num_steps != genes.num_steps:
            raise ValueError(f"seed bank entry {entry.id} is for another layout or {schedule.num_steps} steps, "
                             f"not {task.setting.num_inference_steps} steps of this model")
        try:
            seeds.append((BANK_SEED_PREFIX + entry.id, task.space.coerce(genes.to_genes(schedule))))
        except ScheduleError:
            continue
    return seeds


def build_model_task(recipe: RenderRecipe, objectives: tuple[str, ...] = ()) -> SearchTask:
    """The search over ``recipe``'s model: gene space, heuristic seeds, schedule hashes.

    ``objectives``: metric names maximised beside cost (empty: the scorer's score). A candidate's
    key is its decoded schedule's hash (reuse-only schedules keep their v1 hash, so memo and bank
    ids of v1 runs still match).
    """
    from ecad.adapters import get_adapter
    from ecad.bank import fingerprint

    from ecad.generate import transformer_skeleton

    transformer, config = transformer_skeleton(recipe.model)
    layout = get_adapter(transformer).layout(transformer)
    genes, space = search_space(layout, recipe.setting.num_inference_steps, recipe.actions)

    def schedule_hash(bits) -> str:
        return genes.from_genes(bits).hash

    return SearchTask(
        space=space,
        recipe=recipe,
        seeds=expressible_seeds(genes, space),
        key_fn=schedule_hash,
        setting=recipe.setting,
        objectives=tuple(objectives),
        num_samples=len(recipe.prompts) * len(recipe.seeds),
        quality_metric=recipe.scorer,
        description={
            "name": f"{model_name(recipe.model)} {recipe.setting.name}",
            "model": recipe.model,
            "model_fingerprint": fingerprint(config),
            "layout": layout.to_dict(),
            "scorer": recipe.scorer,
            "cost": recipe.cost,
            "cost_label": {"macs": "transformer MACs / no-cache MACs", "latency": "seconds per image",
                           "fitted": "fitted seconds / no-cache seconds"}[recipe.cost],
            "quality_label": recipe.scorer,
        },
    )


def gene_space_of(task: SearchTask):
    """The GeneSpace of a model task (its layout, steps and searched actions)."""
    from ecad.schedule import BlockLayout

    layout = BlockLayout.from_dict(task.description["layout"])
    return search_space(layout, task.setting.num_inference_steps, task.recipe.actions)[0]


def schedule_of(task: SearchTask, genes):
    """The schedule a model task's gene vector stands for."""
    return gene_space_of(task).from_genes(genes)


def bank_records(task: SearchTask, result: SearchResult, z: float = NOISE_Z) -> list:
    """The records a bank holds: the front; every seeded heuristic the front does not beat beyond
    its noise (racing's test: its optimistic bound, mean + ``z`` standard errors on each quality
    objective, is not dominated), so a bank never drops a named baseline on a few images' luck; and
    no-cache."""
    records = list(result.front)
    on_bank = {r.key for r in records}
    front_F = task.objective_matrix(r.result for r in records)
    for seed in result.seeds:
        heuristic = not (seed.label or "").startswith(BANK_SEED_PREFIX)
        if heuristic and seed.key not in on_bank and seed.stage is None and seed.result.samples and could_be_nondominated(
                optimistic_point(seed.result, task.objectives, task.quality_metric, z), front_F):
            records.append(seed)
            on_bank.add(seed.key)
    no_cache_key = task.key(task.space.all_recompute())
    if no_cache_key not in on_bank:
        records.append(result.memo[no_cache_key])
    return records


def _intervals(result: CandidateResult | None) -> dict[str, tuple[float, float]] | None:
    if result is None or not result.samples:
        return None
    return {name: bootstrap_interval(values) for name, values in sorted(result.samples.items())}


def front_to_bank(setting: Setting, task: SearchTask, result: SearchResult, *, calibration: dict[str, Any],
                  validation: dict[str, CandidateResult] | None = None):
    """Front entries (ids ``ecad-...``/heuristic names), no-cache always included, cheapest first.

    ``validation``: the records re-scored on validation prompts (``engine.loop.rescore``); entries
    then carry those means, and bootstrap intervals over the validation images (else over the
    calibration images, when the evaluator reported per-image values).
    """
    from ecad.bank import BankEntry, ScheduleBank

    scorer = task.description["scorer"]
    records = bank_records(task, result)
    no_cache_key = task.key(task.space.all_recompute())
    entries = []
    for record in sorted(records, key=lambda r: (r.result.cost, -r.result.quality, r.key)):
        if record.key == no_cache_key:
            entry_id, source = "no-cache", "no-cache"
        elif record.label and record.label.startswith(BANK_SEED_PREFIX):  # an earlier search's entry
            entry_id, source = record.label[len(BANK_SEED_PREFIX):], "ecad"
        elif record.label:
            entry_id, source = record.label, "heuristic"
        else:
            entry_id, source = record.searched_id(), "ecad"
        entries.append(
            BankEntry(
                id=entry_id,
                schedule=schedule_of(task, record.bits).to_dict(),
                macs=int(record.result.macs or 0),
                quality={**record.result.metrics, scorer: record.result.quality},
                source=source,
                validation=None if validation is None else validation[record.key].metrics,
                interval=_intervals(record.result if validation is None else validation[record.key]),
            )
        )
    return ScheduleBank(
        model=task.description["model"],
        model_fingerprint=task.description["model_fingerprint"],
        **setting.to_dict(),
        scorer=scorer,
        quality_metric=task.objectives[0] if task.objectives else scorer,
        objectives=list(task.objectives) or None,
        calibration=calibration,
        entries=entries,
    )


def write_bank(task: SearchTask, result: SearchResult, path: str | Path, *, calibration: dict[str, Any],
               validation: dict[str, CandidateResult] | None = None) -> Path:
    return front_to_bank(task.setting, task, result, calibration=calibration, validation=validation).save(path)
