"""Wan 2.1 text-to-video (`WanTransformer3DModel`).

Each `blocks[i]` runs self-attention `attn1` over all latent frames' tokens, cross-attention
`attn2` over the UMT5 text tokens (padded to `max_sequence_length`, 512), and the feed-forward
`ffn`. A token is a 1x2x2 patch of the latent video (VAE: 8x spatial, 4x temporal), so 81 frames
at 480x832 are 21 x 30 x 52 = 32,760 tokens. CFG is two calls per step (conditional, then
unconditional). Wan 2.2 A14B's second expert (`transformer_2`) is not hooked.
"""

from __future__ import annotations

from diffusers import WanTransformer3DModel

from .recipe import (CROSS, IMAGE, SAMPLE, TEXT, TWO_CALLS, Family, FamilyAdapter, Group, Video, attention, mlp,
                     register_family)


@register_family
class WanAdapter(FamilyAdapter):
    family = Family(
        name="Wan 2.1",
        transformer_class=WanTransformer3DModel,
        groups=(Group("blocks", (attention("attn1", IMAGE), attention("attn2", IMAGE, CROSS), mlp("ffn", IMAGE))),),
        guidance=TWO_CALLS,
        outside={"patch_embedding": IMAGE, "condition_embedder": SAMPLE,
                 "condition_embedder.text_embedder": TEXT, "proj_out": IMAGE},
        max_sequence_length=512,
        video=Video(temporal_compression=4, default_frames=81, fps=16),
        architectures=("Wan2.1-T2V-14B-Diffusers", "Wan2.1-T2V-1.3B-Diffusers"),
        pipelines=("WanPipeline",),
    )
