"""HunyuanVideo (`HunyuanVideoTransformer3DModel`, FLUX's layout over video tokens).

Double blocks (`attn` joint, `ff`, `ff_context`), then single blocks (`attn`, `proj_mlp`,
`proj_out`) over text and image tokens in one sequence; every block takes and returns
(hidden_states, encoder_hidden_states). Tokens are 1x2x2 patches of the latent video (VAE: 8x
spatial, 4x temporal). The Llama prompt (256 tokens after the template) passes a small token
refiner (`context_embedder`) first. Guidance is distilled into an embedding: one call per step,
two with true CFG.
"""

from __future__ import annotations

from diffusers import HunyuanVideoTransformer3DModel

from .recipe import (EMBEDDED, IMAGE, JOINT, JOINT_ATTENTION, SAMPLE, TEXT, Family, FamilyAdapter, Group, Video,
                     attention, mlp, register_family)

_STREAMS = (("hidden_states", IMAGE), ("encoder_hidden_states", TEXT))


@register_family
class HunyuanVideoAdapter(FamilyAdapter):
    family = Family(
        name="HunyuanVideo",
        transformer_class=HunyuanVideoTransformer3DModel,
        groups=(
            Group("transformer_blocks", (attention("attn", IMAGE, JOINT_ATTENTION), mlp("ff", IMAGE), mlp("ff_context", TEXT)),
                  streams=_STREAMS),
            Group("single_transformer_blocks", (attention("attn", JOINT), mlp("proj_mlp", JOINT), mlp("proj_out", JOINT)),
                  streams=_STREAMS),
        ),
        guidance=EMBEDDED,
        outside={"x_embedder": IMAGE, "context_embedder": TEXT, "context_embedder.time_text_embed": SAMPLE,
                 "context_embedder.token_refiner.refiner_blocks.*.norm_out": SAMPLE,
                 "time_text_embed": SAMPLE, "norm_out": SAMPLE, "proj_out": IMAGE},
        max_sequence_length=256,
        video=Video(temporal_compression=4, default_frames=129, fps=15),
        architectures=("HunyuanVideo",),
        pipelines=("HunyuanVideoPipeline",),
    )
