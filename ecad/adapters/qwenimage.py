"""Qwen-Image (`QwenImageTransformer2DModel`, MMDiT; also Qwen-Image-Edit).

Each `transformer_blocks[i]` runs joint attention `attn` (image rows through `to_*`, text rows
through `add_*`; returns both outputs), then the image MLP `img_mlp` and the text MLP `txt_mlp`.
The pipeline packs 2x2 latent patches into one token. Classifier-free guidance is true CFG (a
negative prompt and `true_cfg_scale` > 1): a second transformer call per step. Prompts are not
padded: the text tokens are the prompt's own, at most `max_sequence_length` (512; MACs count that
bound).
"""

from __future__ import annotations

from diffusers import QwenImageTransformer2DModel

from .recipe import (EMBEDDED, IMAGE, JOINT_ATTENTION, SAMPLE, TEXT, Family, FamilyAdapter, Group, attention, mlp,
                     register_family)


@register_family
class QwenImageAdapter(FamilyAdapter):
    family = Family(
        name="Qwen-Image",
        transformer_class=QwenImageTransformer2DModel,
        groups=(Group("transformer_blocks", (
            attention("attn", IMAGE, JOINT_ATTENTION), mlp("img_mlp", IMAGE), mlp("txt_mlp", TEXT),
        ), streams=(("encoder_hidden_states", TEXT), ("hidden_states", IMAGE))),),
        guidance=EMBEDDED,
        outside={"time_text_embed": SAMPLE, "img_in": IMAGE, "txt_in": TEXT, "norm_out": SAMPLE, "proj_out": IMAGE},
        max_sequence_length=512,
        architectures=("Qwen-Image",),
        pipelines=("QwenImagePipeline", "QwenImageEditPipeline", "QwenImageImg2ImgPipeline"),
    )
