"""The real evaluator: a loaded diffusers pipeline + scorer, scoring one schedule per call.

Every candidate is rendered for the same calibration prompts x seeds (fixed for the run), in
batches, and scored against the uncached references of those same prompts and seeds when the
scorer needs them. Cost is the analytic transformer MACs of one image relative to no caching
(``cost="macs"``, deterministic) or the measured seconds per image (``cost="latency"``).
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np
import torch

from ecad.search.evaluation import CandidateResult
from ecad.search.space import BitSpace
from ecad.setting import Setting


def _dtype(name: str) -> torch.dtype:
    return {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}[name]


class PipelineEvaluator:
    def __init__(
        self,
        *,
        model: str,
        scorer: str,
        prompts: list[str],
        seeds: list[int],
        num_inference_steps: int,
        guidance_scale: float,
        height: int,
        width: int,
        scorer_kwargs: dict[str, Any] | None = None,
        cost: str = "macs",
        device: str = "cpu",
        dtype: str = "float32",
        batch_size: int | None = None,
        num_threads: int | None = None,
    ):
        from ecad.adapters import get_adapter
        from ecad.generate import load_pipeline
        from ecad.quality import build_scorer

        if num_threads:
            torch.set_num_threads(num_threads)
        if cost not in ("macs", "latency"):
            raise ValueError(f"cost must be 'macs' or 'latency', got {cost!r}")
        self.pipe = load_pipeline(model, device=device, dtype=_dtype(dtype))
        self.adapter = get_adapter(self.pipe)
        self.layout = self.adapter.layout(self.pipe.transformer)
        self.scorer = build_scorer(scorer, device=device, **(scorer_kwargs or {}))
        self.scorer_name = scorer
        # prompts x seeds, the same for every candidate: differences are the schedule's doing
        self.prompts = [p for p in prompts for _ in seeds]
        self.seeds = [int(s) for _ in prompts for s in seeds]
        self.batch_size = batch_size or len(self.prompts)
        self.setting = Setting(height, width, num_inference_steps, guidance_scale)
        self.space = BitSpace((num_inference_steps, self.layout.num_blocks, self.layout.num_components))
        self.cost = cost
        self.references: torch.Tensor | None = None
        self.full_macs = self._macs(self._schedule(self.space.all_recompute()))

    def _schedule(self, bits):
        from ecad.schedule import CacheSchedule

        return CacheSchedule(self.space.bits_to_mask(bits), self.layout)

    def _macs(self, schedule) -> int:
        from ecad.cost import image_macs

        return image_macs(self.pipe, self.setting, schedule)

    def _generate(self, schedule) -> torch.Tensor:
        from ecad.generate import generate

        chunks = []
        for start in range(0, len(self.prompts), self.batch_size):
            end = start + self.batch_size
            chunks.append(generate(self.pipe, self.prompts[start:end], self.seeds[start:end],
                                   self.setting, schedule).cpu())
        return torch.cat(chunks)

    def compute_references(self) -> dict[str, torch.Tensor] | None:
        if not self.scorer.needs_reference:
            return None
        return {"images": self._generate(None)}

    def set_references(self, references) -> None:
        self.references = None if references is None else references["images"]

    def _metrics(self, images: torch.Tensor) -> dict[str, float]:
        references = self.references if self.scorer.needs_reference else None
        if self.scorer.needs_reference and references is None:
            raise RuntimeError("scorer needs reference images but none were set")
        if hasattr(self.scorer, "metrics"):
            per_image = self.scorer.metrics(images, self.prompts, references)
            score = per_image.get(self.scorer_name)
            if score is None:
                score = self.scorer.score(images, self.prompts, references)
        else:
            per_image = {}
            score = self.scorer.score(images, self.prompts, references)
        means = {name: float(values.float().mean()) for name, values in per_image.items()}
        means[self.scorer_name] = float(score.float().mean())
        return means

    def evaluate(self, bits: np.ndarray) -> CandidateResult:
        schedule = self._schedule(bits)
        started = time.perf_counter()
        images = self._generate(schedule)
        seconds_per_image = (time.perf_counter() - started) / len(self.prompts)
        metrics = self._metrics(images)
        macs = self._macs(schedule)
        cost = macs / self.full_macs if self.cost == "macs" else seconds_per_image
        return CandidateResult(
            quality=metrics[self.scorer_name], cost=float(cost), macs=int(macs), metrics=metrics,
            seconds=time.perf_counter() - started,
        )


def build_pipeline_evaluator(**kwargs) -> PipelineEvaluator:
    return PipelineEvaluator(**kwargs)
