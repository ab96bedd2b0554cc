"""PixArt-alpha and PixArt-Sigma (`PixArtTransformer2DModel`).

Each `transformer_blocks[i]` is a `BasicTransformerBlock` (AdaLN-single): self-attention
`attn1`, cross-attention `attn2` over the T5 text tokens, feed-forward `ff`. The block applies
its gates and residuals around these modules, so hooking them caches the raw outputs.
Classifier-free guidance runs as one transformer call on a batch of 2B.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from diffusers import PixArtTransformer2DModel
from torch import nn

from ..schedule import BlockGroup, BlockLayout
from .base import TransformerAdapter, _tokenizer_max_length, attention_matmul_macs, linear_macs, register_adapter

PIXART_COMPONENTS = ("attn1", "attn2", "ff")
# Element-wise ops per hidden element in a BasicTransformerBlock (AdaLN-single), outside attn1,
# attn2 and ff: two LayerNorms (~5 each), two modulations x * (1 + scale) + shift (2 each), two
# gates (1 each) and three residual adds.
BLOCK_ELEMENTWISE_OPS = 19


def sum_linear_macs(module: nn.Module, rows: int) -> int:
    """MACs of every `nn.Linear` under `module`, each applied to `rows` rows."""
    return sum(linear_macs(m, rows) for m in module.modules() if isinstance(m, nn.Linear))


def attention_macs(attn: nn.Module, batch: int, q_len: int, kv_len: int, matmuls: bool = True) -> int:
    """diffusers `Attention`: q/out projections on q_len rows, k/v on kv_len rows, plus QK^T and AV
    unless `matmuls` is False."""
    inner = attn.to_q.out_features
    macs = linear_macs(attn.to_q, batch * q_len)
    macs += linear_macs(attn.to_k, batch * kv_len) + linear_macs(attn.to_v, batch * kv_len)
    if getattr(attn, "to_out", None) is not None:
        macs += linear_macs(attn.to_out[0], batch * q_len)
    return macs + (attention_matmul_macs(batch, 1, inner, q_len, kv_len) if matmuls else 0)


@register_adapter(PixArtTransformer2DModel)
class PixArtAdapter(TransformerAdapter):
    family_name = "PixArt-α / PixArt-Σ"
    default_max_sequence_length = {"PixArtAlphaPipeline": 120, "PixArtSigmaPipeline": 300}
    batched_guidance = True  # the pipeline concatenates [negative; prompt] embeddings

    def layout(self, transformer: PixArtTransformer2DModel) -> BlockLayout:
        return BlockLayout((BlockGroup("transformer_blocks", len(transformer.transformer_blocks), PIXART_COMPONENTS),))

    def residual_streams(self, group: str) -> tuple[str, ...]:
        return ("hidden_states",)  # BasicTransformerBlock returns hidden_states

    def num_tokens(self, transformer, *, height, width, vae_scale_factor=8) -> int:
        p = transformer.config.patch_size
        return (height // vae_scale_factor // p) * (width // vae_scale_factor // p)

    def spatial_multiple(self, pipe: Any) -> int:
        return int(pipe.vae_scale_factor) * int(pipe.transformer.config.patch_size)

    def component_macs(self, transformer, *, height, width, batch_size, text_len, vae_scale_factor=8,
                       attention_matmuls=True) -> np.ndarray:
        n = self.num_tokens(transformer, height=height, width=width, vae_scale_factor=vae_scale_factor)
        out = np.zeros((len(transformer.transformer_blocks), 3), dtype=np.int64)
        for i, block in enumerate(transformer.transformer_blocks):
            out[i, 0] = attention_macs(block.attn1, batch_size, n, n, attention_matmuls)
            out[i, 1] = attention_macs(block.attn2, batch_size, n, text_len, attention_matmuls)
            out[i, 2] = sum_linear_macs(block.ff, batch_size * n)
        return out

    def other_macs(self, transformer, *, height, width, batch_size, text_len, vae_scale_factor=8) -> int:
        n = self.num_tokens(transformer, height=height, width=width, vae_scale_factor=vae_scale_factor)
        conv = transformer.pos_embed.proj  # patchify conv: one (C*p*p -> D) product per token
        macs = batch_size * n * conv.in_channels * conv.kernel_size[0] * conv.kernel_size[1] * conv.out_channels
        macs += sum_linear_macs(transformer.adaln_single, batch_size)
        if transformer.caption_projection is not None:
            macs += sum_linear_macs(transformer.caption_projection, batch_size * text_len)
        macs += linear_macs(transformer.proj_out, batch_size * n)
        # Blocks hold only norms and the cached components (AdaLN-single uses a parameter table).
        return int(macs)

    def transformer_batch(self, pipe, num_images, *, guidance_scale, true_cfg=False):
        return (2 * num_images if guidance_scale > 1.0 else num_images), 1

    def pipeline_call_kwargs(self, pipe: Any) -> dict[str, Any]:
        default = self.default_max_sequence_length.get(type(pipe).__name__, 120)
        return {
            "use_resolution_binning": False,  # keep the requested size (binning only knows 256-2048 px)
            "clean_caption": False,  # needs bs4 + ftfy; prompts are used as given
            "max_sequence_length": _tokenizer_max_length(getattr(pipe, "tokenizer", None), default),
        }

    # -- action costs (skip-block, forecast): separate from component_macs ----------------------
    def _hidden_elements(self, transformer, height, width, batch_size, vae_scale_factor=8, **_) -> int:
        n = self.num_tokens(transformer, height=height, width=width, vae_scale_factor=vae_scale_factor)
        return batch_size * n * transformer.config.num_attention_heads * transformer.config.attention_head_dim

    def block_elementwise_ops(self, transformer, **shape) -> np.ndarray:
        blocks = len(transformer.transformer_blocks)
        return np.full(blocks, BLOCK_ELEMENTWISE_OPS * self._hidden_elements(transformer, **shape), dtype=np.int64)

    def component_output_elements(self, transformer, **shape) -> np.ndarray:
        blocks = len(transformer.transformer_blocks)
        return np.full((blocks, 3), self._hidden_elements(transformer, **shape), dtype=np.int64)

    def block_output_elements(self, transformer, **shape) -> np.ndarray:
        return np.full(len(transformer.transformer_blocks), self._hidden_elements(transformer, **shape), dtype=np.int64)
