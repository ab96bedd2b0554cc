"""Full-size transformer architectures without weights: every supported family's published models.

Each JSON file here holds one published transformer config (the hyper-parameters of the hub's
``transformer/config.json``) plus what the pipeline adds around it (VAE factor, padded prompt
length, its default size, steps and frame count), where the numbers come from (``source``) and
the published parameter count they are checked against. `Architecture.meta_transformer()` builds
the real module tree on the meta device: no memory, no weights, yet the real block layout for
`apply_cache_schedule` and the real shapes for the cost model.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from functools import cache
from importlib import resources
from typing import Any

import numpy as np
from torch import nn


@dataclass(frozen=True)
class Architecture:
    name: str  # file stem, also the last part of the hub id
    hub_id: str
    transformer_class: str
    pipeline_class: str
    vae_scale_factor: int
    max_sequence_length: int  # padded prompt length the pipeline gives the transformer
    default_resolution: int
    default_guidance_scale: float  # the pipeline's default
    config: dict[str, Any] = field(compare=False)
    default_height: int | None = None  # where the default size is not square (video)
    default_width: int | None = None
    default_num_inference_steps: int | None = None  # the pipeline's default
    default_num_frames: int | None = None  # video: the pipeline's default `num_frames`
    published_parameters: int | None = None  # the model card's size, which the meta model must match
    source: str = field(default="", compare=False)  # where the numbers come from
    #: the pipeline's scheduler ({"class": diffusers class name, "config": {...}}): its noise levels
    #: move schedules between step counts and sizes without the weights (`ecad.transfer`)
    scheduler: dict[str, Any] | None = field(default=None, compare=False)

    @property
    def default_size(self) -> tuple[int, int]:
        """(height, width) the pipeline makes when none is given."""
        return (self.default_height or self.default_resolution, self.default_width or self.default_resolution)

    def meta_transformer(self) -> nn.Module:
        """A new transformer with this config on the meta device (parameters and buffers have
        shapes, no data: SD3.5's positional-embedding table is never computed)."""
        import diffusers
        import torch

        with torch.device("meta"):
            return getattr(diffusers, self.transformer_class)(**self.config)

    def shared_meta_transformer(self) -> nn.Module:
        """One read-only meta-device instance per architecture, for MACs and fingerprints (never hook it)."""
        return _shared_meta_transformer(self.name)

    def fingerprint(self) -> str:
        """`ecad.bank.fingerprint` of the config the instantiated transformer reports (defaults filled
        in), which is what a user's `pipe.transformer.config` from the hub gives too."""
        from ecad.bank import fingerprint

        return fingerprint(dict(_shared_meta_transformer(self.name).config))

    def layout(self):
        """Our `BlockLayout` of this transformer."""
        from ecad.adapters import get_adapter

        transformer = _shared_meta_transformer(self.name)
        return get_adapter(transformer).layout(transformer)

    def transformer_batch(self, guidance_scale: float) -> int:
        """Batch of one transformer call for one image (PixArt batches CFG as 2; FLUX-dev embeds guidance)."""
        from ecad.adapters import get_adapter

        return get_adapter(_shared_meta_transformer(self.name)).transformer_batch(
            None, 1, guidance_scale=guidance_scale)[0]

    def transformer_calls(self, guidance_scale: float) -> int:
        """Transformer calls per denoising step for one image (2 where CFG is a second call)."""
        from ecad.adapters import get_adapter

        return get_adapter(_shared_meta_transformer(self.name)).transformer_batch(
            None, 1, guidance_scale=guidance_scale)[1]

    def shape(self, height: int, width: int, guidance_scale: float, *, text_len: int | None = None,
              num_frames: int | None = None) -> dict[str, Any]:
        """The shape keywords of the adapter's MACs methods for one transformer call for one image
        (`num_frames` only for video: default the pipeline's)."""
        kw = dict(height=height, width=width, batch_size=self.transformer_batch(guidance_scale),
                  text_len=text_len or self.max_sequence_length, vae_scale_factor=self.vae_scale_factor)
        if self.default_num_frames is not None:
            kw["num_frames"] = num_frames or self.default_num_frames
        return kw

    def step_macs(self, height: int, width: int, guidance_scale: float, *,
                  attention_matmuls: bool = True, text_len: int | None = None,
                  num_frames: int | None = None) -> tuple[np.ndarray, int]:
        """(component MACs [blocks, components], other MACs) of one transformer call for one image
        (`text_len` defaults to the pipeline's padded prompt length, `num_frames` to its frames)."""
        from ecad.adapters import get_adapter

        transformer = _shared_meta_transformer(self.name)
        adapter = get_adapter(transformer)
        kw = self.shape(height, width, guidance_scale, text_len=text_len, num_frames=num_frames)
        # linears inside a block but outside its cacheable components (FLUX's per-block AdaLN)
        # are MACs every call pays, as the reference counts them
        block_linears = int(adapter.block_linear_macs(transformer, **kw).sum())
        return (adapter.component_macs(transformer, attention_matmuls=attention_matmuls, **kw),
                adapter.other_macs(transformer, **kw) + block_linears)


def architecture_names() -> list[str]:
    return sorted(p.name.removesuffix(".json") for p in resources.files(__package__).iterdir()
                  if p.name.endswith(".json"))


@cache
def get_architecture(model: str) -> Architecture:
    """By hub id (``PixArt-alpha/PixArt-XL-2-256x256``) or its last part (``PixArt-XL-2-256x256``)."""
    name = str(model).rstrip("/").rsplit("/", 1)[-1]
    if name not in architecture_names():
        raise KeyError(f"no bundled architecture {model!r}; known: {', '.join(architecture_names())}")
    data = json.loads(resources.files(__package__).joinpath(f"{name}.json").read_text(encoding="utf-8"))
    return Architecture(name=name, **data)


@cache
def _shared_meta_transformer(name: str) -> nn.Module:
    """One read-only instance per architecture for MACs and fingerprints (never hooked)."""
    return get_architecture(name).meta_transformer()
