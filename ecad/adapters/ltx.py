"""LTX-Video (`LTXVideoTransformer3DModel`).

Each `transformer_blocks[i]` runs self-attention `attn1` over every latent frame's tokens,
cross-attention `attn2` over the T5 text tokens (padded to 128) and `ff`. The VAE compresses 32x
in space and 8x in time, one token per latent pixel: 161 frames at 512x704 are 21 x 16 x 22 =
7,392 tokens. CFG is one call on [uncond; cond] rows, so a schedule may reuse guidance.
"""

from __future__ import annotations

from diffusers import LTXVideoTransformer3DModel

from .recipe import (BATCHED, CROSS, IMAGE, SAMPLE, TEXT, Family, FamilyAdapter, Group, Video, attention, mlp,
                     register_family)


@register_family
class LTXVideoAdapter(FamilyAdapter):
    family = Family(
        name="LTX-Video",
        transformer_class=LTXVideoTransformer3DModel,
        groups=(Group("transformer_blocks", (attention("attn1", IMAGE), attention("attn2", IMAGE, CROSS), mlp("ff", IMAGE))),),
        guidance=BATCHED,
        outside={"proj_in": IMAGE, "time_embed": SAMPLE, "caption_projection": TEXT, "proj_out": IMAGE},
        max_sequence_length=128,
        vae_scale_factor=32,  # LTXPipeline has no `vae_scale_factor`; its VAE compresses 32x
        video=Video(temporal_compression=8, default_frames=161, fps=24),
        architectures=("LTX-Video",),
        pipelines=("LTXPipeline", "LTXImageToVideoPipeline"),
    )
