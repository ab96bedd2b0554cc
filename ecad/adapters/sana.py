"""Sana (`SanaTransformer2DModel`).

Each `transformer_blocks[i]` runs linear self-attention `attn1` (ReLU kernel: cost linear in the
tokens), cross-attention `attn2` over the Gemma-2 text tokens (padded to 300), and `ff`, a GLU
MLP of 1x1 and depth-wise 3x3 convolutions over the token grid. The DC-AE VAE compresses 32x, one
token per latent pixel. CFG is one call on [uncond; cond] rows.
"""

from __future__ import annotations

from diffusers import SanaTransformer2DModel

from .recipe import (BATCHED, CROSS, IMAGE, LINEAR, SAMPLE, TEXT, Family, FamilyAdapter, Group, attention, mlp,
                     register_family)


@register_family
class SanaAdapter(FamilyAdapter):
    family = Family(
        name="Sana",
        transformer_class=SanaTransformer2DModel,
        groups=(Group("transformer_blocks", (
            attention("attn1", IMAGE, LINEAR), attention("attn2", IMAGE, CROSS), mlp("ff", IMAGE))),),
        guidance=BATCHED,
        outside={"patch_embed": IMAGE, "time_embed": SAMPLE, "caption_projection": TEXT, "proj_out": IMAGE},
        max_sequence_length=300,
        call_kwargs={"use_resolution_binning": False},  # keep the requested size (binning knows 512-4096 px)
        architectures=("Sana_1600M_1024px_diffusers",),
        pipelines=("SanaPipeline",),
    )
