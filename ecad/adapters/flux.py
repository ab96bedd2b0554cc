"""FLUX (`FluxTransformer2DModel`).

`transformer_blocks[i]` (double-stream) runs joint attention `attn` (returns a tuple: image and
text outputs; both are cached), then the image feed-forward `ff` and text feed-forward
`ff_context`. `single_transformer_blocks[i]` runs `attn` (no output projection), `proj_mlp`
(before the activation) and `proj_out` over the concatenated text+image tokens.
True CFG calls the transformer twice per step (the hooks keep separate state per call).
"""

from __future__ import annotations

from typing import Any

import numpy as np
from diffusers import FluxTransformer2DModel

from ..schedule import BlockGroup, BlockLayout
from .base import TransformerAdapter, _tokenizer_max_length, attention_matmul_macs, linear_macs, register_adapter
from .pixart import sum_linear_macs

DOUBLE_COMPONENTS = ("attn", "ff", "ff_context")
SINGLE_COMPONENTS = ("attn", "proj_mlp", "proj_out")
# Element-wise ops outside the components, per element of a residual stream: a double block has two
# LayerNorms (~5 each), two modulations (2 each), two gates and two residual adds per stream (18);
# a single block one LayerNorm, one modulation, a gate and a residual add (9), plus the tanh-GELU
# (~8 ops) on its MLP hidden (mlp_ratio x wider).
DOUBLE_BLOCK_ELEMENTWISE_OPS = 18
SINGLE_BLOCK_ELEMENTWISE_OPS = 9
GELU_OPS = 8


def joint_attention_macs(attn, batch: int, n_img: int, n_txt: int, matmuls: bool = True) -> int:
    """FluxAttention: image projections on image rows, `add_*`/`to_add_out` on text rows, joint QK^T/AV
    unless `matmuls` is False."""
    img, txt = batch * n_img, batch * n_txt
    macs = sum(linear_macs(getattr(attn, name), img) for name in ("to_q", "to_k", "to_v"))
    if getattr(attn, "to_out", None) is not None:
        macs += linear_macs(attn.to_out[0], img)
    if getattr(attn, "add_q_proj", None) is not None:
        macs += sum(linear_macs(getattr(attn, name), txt) for name in ("add_q_proj", "add_k_proj", "add_v_proj"))
        macs += linear_macs(attn.to_add_out, txt)
    seq = n_img + n_txt
    return macs + (attention_matmul_macs(batch, 1, attn.to_q.out_features, seq, seq) if matmuls else 0)


@register_adapter(FluxTransformer2DModel)
class FluxAdapter(TransformerAdapter):
    family_name = "FLUX.1 (dev, schnell, Kontext)"

    def layout(self, transformer: FluxTransformer2DModel) -> BlockLayout:
        return BlockLayout((
            BlockGroup("transformer_blocks", len(transformer.transformer_blocks), DOUBLE_COMPONENTS),
            BlockGroup("single_transformer_blocks", len(transformer.single_transformer_blocks), SINGLE_COMPONENTS),
        ))

    def residual_streams(self, group: str) -> tuple[str, ...]:
        # Double and single blocks both take (hidden_states, encoder_hidden_states) and return
        # (encoder_hidden_states, hidden_states).
        return ("encoder_hidden_states", "hidden_states")

    def num_tokens(self, transformer, *, height, width, vae_scale_factor=8) -> int:
        # The pipeline packs 2x2 latent patches into one token.
        return (height // vae_scale_factor // 2) * (width // vae_scale_factor // 2)

    def spatial_multiple(self, pipe: Any) -> int:
        return int(pipe.vae_scale_factor) * 2  # 2x2 latent packing

    def component_macs(self, transformer, *, height, width, batch_size, text_len, vae_scale_factor=8,
                       attention_matmuls=True) -> np.ndarray:
        n = self.num_tokens(transformer, height=height, width=width, vae_scale_factor=vae_scale_factor)
        b, seq = batch_size, n + text_len
        rows = []
        for block in transformer.transformer_blocks:
            rows.append([
                joint_attention_macs(block.attn, b, n, text_len, attention_matmuls),
                sum_linear_macs(block.ff, b * n),
                sum_linear_macs(block.ff_context, b * text_len),
            ])
        for block in transformer.single_transformer_blocks:
            rows.append([
                joint_attention_macs(block.attn, b, seq, 0, attention_matmuls),
                linear_macs(block.proj_mlp, b * seq),
                linear_macs(block.proj_out, b * seq),
            ])
        return np.array(rows, dtype=np.int64)

    def other_macs(self, transformer, *, height, width, batch_size, text_len, vae_scale_factor=8) -> int:
        n = self.num_tokens(transformer, height=height, width=width, vae_scale_factor=vae_scale_factor)
        b = batch_size
        macs = linear_macs(transformer.x_embedder, b * n) + linear_macs(transformer.context_embedder, b * text_len)
        macs += sum_linear_macs(transformer.time_text_embed, b)
        # the blocks' AdaLN-Zero modulation is in block_linear_macs (a skipped block saves it)
        macs += sum_linear_macs(transformer.norm_out, b) + linear_macs(transformer.proj_out, b * n)
        return int(macs)

    def transformer_batch(self, pipe, num_images, *, guidance_scale, true_cfg=False):
        # FLUX-dev's guidance is an embedding, not CFG; true CFG is a second call per step.
        return num_images, (2 if true_cfg else 1)

    def pipeline_call_kwargs(self, pipe: Any) -> dict[str, Any]:
        return {"max_sequence_length": _tokenizer_max_length(getattr(pipe, "tokenizer_2", None), 512)}

    # -- action costs (skip-block, forecast): separate from component_macs ----------------------
    def _streams(self, transformer, height, width, batch_size, text_len, vae_scale_factor=8, **_):
        """(image rows, text rows, width) of the residual streams for one call."""
        n = self.num_tokens(transformer, height=height, width=width, vae_scale_factor=vae_scale_factor)
        dim = transformer.config.num_attention_heads * transformer.config.attention_head_dim
        return batch_size * n, batch_size * text_len, dim

    def block_linear_macs(self, transformer, *, batch_size, **shape) -> np.ndarray:
        rows = [sum_linear_macs(blk.norm1, batch_size) + sum_linear_macs(blk.norm1_context, batch_size)
                for blk in transformer.transformer_blocks]
        rows += [sum_linear_macs(blk.norm, batch_size) for blk in transformer.single_transformer_blocks]
        return np.array(rows, dtype=np.int64)

    def block_elementwise_ops(self, transformer, **shape) -> np.ndarray:
        img, txt, dim = self._streams(transformer, **shape)
        ops = [DOUBLE_BLOCK_ELEMENTWISE_OPS * (img + txt) * dim] * len(transformer.transformer_blocks)
        ops += [(img + txt) * (SINGLE_BLOCK_ELEMENTWISE_OPS * dim + GELU_OPS * blk.proj_mlp.out_features)
                for blk in transformer.single_transformer_blocks]
        return np.array(ops, dtype=np.int64)

    def component_output_elements(self, transformer, **shape) -> np.ndarray:
        img, txt, dim = self._streams(transformer, **shape)
        rows = [[(img + txt) * dim, img * dim, txt * dim]] * len(transformer.transformer_blocks)
        rows += [[(img + txt) * dim, (img + txt) * blk.proj_mlp.out_features, (img + txt) * dim]
                 for blk in transformer.single_transformer_blocks]
        return np.array(rows, dtype=np.int64)

    def block_output_elements(self, transformer, **shape) -> np.ndarray:
        img, txt, dim = self._streams(transformer, **shape)
        return np.full(len(self.block_modules(transformer)), (img + txt) * dim, dtype=np.int64)
