"""Chroma (`ChromaTransformer2DModel`, FLUX.1-schnell's layout with pruned modulation).

As FLUX: double blocks (`attn` joint, `ff`, `ff_context`), then single blocks over text and image
tokens in one sequence (`attn`, `proj_mlp`, `proj_out`; they take and return that one sequence).
The per-block modulation comes from one approximator MLP (`distilled_guidance_layer`) run on
one row per modulation vector (344 at full size). T5 prompts padded to 512; CFG is two calls per
step (negative prompt).
"""

from __future__ import annotations

from diffusers import ChromaTransformer2DModel

from .recipe import (IMAGE, JOINT, JOINT_ATTENTION, TEXT, TWO_CALLS, Family, FamilyAdapter, Group, attention, mlp,
                     register_family)


def _modulation_rows(transformer) -> int:
    return int(transformer.time_text_embed.mod_proj.shape[0])


@register_family
class ChromaAdapter(FamilyAdapter):
    family = Family(
        name="Chroma",
        transformer_class=ChromaTransformer2DModel,
        groups=(
            Group("transformer_blocks", (attention("attn", IMAGE, JOINT_ATTENTION), mlp("ff", IMAGE), mlp("ff_context", TEXT)),
                  streams=(("encoder_hidden_states", TEXT), ("hidden_states", IMAGE))),
            Group("single_transformer_blocks", (attention("attn", JOINT), mlp("proj_mlp", JOINT), mlp("proj_out", JOINT)),
                  streams=(("hidden_states", JOINT),)),
        ),
        guidance=TWO_CALLS,
        outside={"distilled_guidance_layer": _modulation_rows, "context_embedder": TEXT, "x_embedder": IMAGE,
                 "proj_out": IMAGE},
        max_sequence_length=512,
        patch=2,  # the pipeline packs 2x2 latent patches into one token
        architectures=("Chroma1-HD",),
        pipelines=("ChromaPipeline", "ChromaImg2ImgPipeline"),
    )
