"""Build the search task for a real diffusers model, without loading its weights in the driver.

The driver only needs the block layout (to size the bit vector, hash schedules and build the
heuristic seeds) and the transformer config (the bank's fingerprint): the transformer is built
on the meta device from its config. The pipeline itself is loaded where candidates are
evaluated (this process, or each Ray actor).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from ecad.search.evaluation import EvaluatorSpec
from ecad.search.space import BitSpace
from ecad.search.task import SearchTask


def transformer_skeleton(model: str):
    """(transformer on the meta device, its config dict) for a local folder or hub id."""
    import diffusers
    from accelerate import init_empty_weights

    index = diffusers.DiffusionPipeline.load_config(model)
    library, class_name = index["transformer"]
    cls = getattr(diffusers, class_name)
    config = cls.load_config(model, subfolder="transformer")
    with init_empty_weights():
        transformer = cls.from_config(config)
    return transformer, dict(config)


def setting_name(height: int, width: int, num_inference_steps: int) -> str:
    """The bank file's stem, e.g. ``32x32-20steps``."""
    return f"{height}x{width}-{num_inference_steps}steps"


def model_name(model: str) -> str:
    return Path(str(model).rstrip("/")).name


def build_model_task(
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
) -> SearchTask:
    from ecad.adapters import get_adapter
    from ecad.bank import fingerprint
    from ecad.heuristics import heuristic_suite
    from ecad.schedule import CacheSchedule

    transformer, config = transformer_skeleton(model)
    layout = get_adapter(transformer).layout(transformer)
    space = BitSpace((num_inference_steps, layout.num_blocks, layout.num_components))
    seeds_bits = [(name, space.mask_to_bits(s.mask)) for name, s in heuristic_suite(layout, num_inference_steps).items()]

    def schedule_hash(bits) -> str:
        return CacheSchedule(space.bits_to_mask(bits), layout).hash

    evaluator_kwargs = dict(
        model=str(model), scorer=scorer, scorer_kwargs=scorer_kwargs or {}, prompts=list(prompts),
        seeds=[int(s) for s in seeds], num_inference_steps=num_inference_steps,
        guidance_scale=float(guidance_scale), height=height, width=width, cost=cost, device=device,
        dtype=dtype, batch_size=batch_size, num_threads=num_threads,
    )
    json.dumps(evaluator_kwargs)  # must be JSON-able: it is the run's recipe
    return SearchTask(
        space=space,
        evaluator=EvaluatorSpec("ecad.search.pipeline_evaluator:build_pipeline_evaluator", evaluator_kwargs),
        seeds=seeds_bits,
        key_fn=schedule_hash,
        description={
            "name": f"{model_name(model)} {setting_name(height, width, num_inference_steps)}",
            "model": str(model),
            "model_fingerprint": fingerprint(config),
            "layout": layout.to_dict(),
            "scorer": scorer,
            "cost": cost,
            "cost_label": "transformer MACs / no-cache MACs" if cost == "macs" else "seconds per image",
            "quality_label": scorer,
        },
    )


def schedule_of(task: SearchTask, bits):
    from ecad.schedule import BlockLayout, CacheSchedule

    return CacheSchedule(task.space.bits_to_mask(bits), BlockLayout.from_dict(task.description["layout"]))
