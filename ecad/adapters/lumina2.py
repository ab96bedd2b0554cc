"""Lumina-Image 2.0 (`Lumina2Transformer2DModel`, a unified single-stream DiT).

Three groups of `Lumina2TransformerBlock` (self-attention `attn`, gated feed-forward
`feed_forward`), in the order they run: `context_refiner` over the Gemma text tokens,
`noise_refiner` over the image tokens, then `layers` over text and image tokens in one sequence.
CFG is two calls per step. The pipeline pads prompts to `max_sequence_length` (256); the joint
layers see the prompt's own tokens (MACs count the padded length, an upper bound).
"""

from __future__ import annotations

from diffusers import Lumina2Transformer2DModel

from .recipe import (IMAGE, JOINT, SAMPLE, TEXT, TWO_CALLS, Family, FamilyAdapter, Group, attention, mlp,
                     register_family)


def _group(name: str, rows: str) -> Group:
    return Group(name, (attention("attn", rows), mlp("feed_forward", rows)), streams=(("hidden_states", rows),))


@register_family
class Lumina2Adapter(FamilyAdapter):
    family = Family(
        name="Lumina-Image 2.0",
        transformer_class=Lumina2Transformer2DModel,
        groups=(_group("context_refiner", TEXT), _group("noise_refiner", IMAGE), _group("layers", JOINT)),
        guidance=TWO_CALLS,
        outside={"x_embedder": IMAGE, "time_caption_embed.timestep_embedder": SAMPLE,
                 "time_caption_embed.caption_embedder": TEXT, "norm_out.linear_1": SAMPLE, "norm_out.linear_2": JOINT},
        max_sequence_length=256,
        architectures=("Lumina-Image-2.0",),
        pipelines=("Lumina2Pipeline",),
    )
