"""Stable Diffusion 3 / 3.5 (`SD3Transformer2DModel`, MMDiT).

Each `transformer_blocks[i]` (`JointTransformerBlock`) runs joint attention `attn` over image and
text tokens (returns both outputs), the image feed-forward `ff` and the text feed-forward
`ff_context`. SD3.5-Medium's first 13 blocks add a second image self-attention `attn2`; the last
block ends the text stream (no `ff_context`, returns None for it). CFG is one call on [uncond;
cond] rows. The text tokens are CLIP's (77) followed by T5's (`max_sequence_length`, 256).
"""

from __future__ import annotations

from typing import Any

from diffusers import SD3Transformer2DModel

from .recipe import (BATCHED, IMAGE, JOINT_ATTENTION, SAMPLE, TEXT, Family, FamilyAdapter, Group, attention, mlp,
                     register_family)


@register_family
class SD3Adapter(FamilyAdapter):
    family = Family(
        name="SD3 / SD3.5",
        transformer_class=SD3Transformer2DModel,
        groups=(Group("transformer_blocks", (
            attention("attn", IMAGE, JOINT_ATTENTION),
            attention("attn2", IMAGE, optional=True),  # SD3.5-Medium's dual-attention blocks
            mlp("ff", IMAGE),
            mlp("ff_context", TEXT, optional=True),  # not in the last block
        ), streams=(("encoder_hidden_states", TEXT), ("hidden_states", IMAGE))),),
        guidance=BATCHED,
        outside={"pos_embed": IMAGE, "time_text_embed": SAMPLE, "context_embedder": TEXT,
                 "norm_out": SAMPLE, "proj_out": IMAGE},
        max_sequence_length=256,
        tokenizer="tokenizer_3",
        architectures=("stable-diffusion-3.5-large", "stable-diffusion-3.5-medium"),
        pipelines=("StableDiffusion3Pipeline", "StableDiffusion3Img2ImgPipeline"),
    )

    def text_len(self, pipe: Any) -> int:
        """CLIP's padded prompt (the tokenizer's length, 77) then T5's (`max_sequence_length`)."""
        clip = getattr(getattr(pipe, "tokenizer", None), "model_max_length", 77)
        return int(clip) + super().text_len(pipe)
