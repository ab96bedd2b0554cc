"""Tiny random diffusers pipelines (PixArt-alpha, PixArt-Sigma, FLUX) built from configs, for tests.

Everything is built locally (no hub): tokenizers from a small vocabulary, random weights with a
fixed seed, `save_pretrained` to a folder that `DiffusionPipeline.from_pretrained(path)` loads.
The "tiny" scale is < 1 MB and takes a few ms per step; the "small" scale (8 blocks of width 256,
256 image tokens) is a fairer stand-in for benchmarking hook overhead.

    path = build_tiny_pipeline("pixart-sigma", tmp_path / "pixart-sigma")
    pipe = load_pipeline(path)

Images: TINY_IMAGE_SIZE x TINY_IMAGE_SIZE pixels for every kind and scale.
"""

from __future__ import annotations

import json
import os
import string
from pathlib import Path

import torch

KINDS = ("pixart-alpha", "pixart-sigma", "flux")
SCALES = ("tiny", "small")
TINY_IMAGE_SIZE = 32
_TEXT_LEN = 16  # tokenizer model_max_length, so pipelines pad prompts to 16 tokens
_MARKER = "ecad_tiny.json"  # written last: a folder with it is complete

# Enough words that test prompts tokenize to distinct ids.
_WORDS = (
    "a an the of on in with and red green blue yellow black white small large cat dog bird car "
    "house tree flower sky sea mountain city street photo painting portrait scene sunset night "
    "day snow rain field forest river boat person robot castle"
).split()


def _t5_tokenizer():
    from transformers import T5Tokenizer

    vocab = [("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0), ("▁", -2.0)]
    vocab += [("▁" + w, -5.0) for w in _WORDS]
    vocab += [(c, -10.0) for c in string.ascii_lowercase + string.digits + string.punctuation]
    return T5Tokenizer(vocab=vocab, extra_ids=0, model_max_length=_TEXT_LEN)


def _clip_tokenizer():
    from transformers import CLIPTokenizer
    from tokenizers.pre_tokenizers import ByteLevel

    alphabet = sorted(ByteLevel.alphabet())
    vocab = {ch: i for i, ch in enumerate(alphabet)}
    vocab.update({ch + "</w>": len(alphabet) + i for i, ch in enumerate(alphabet)})
    for tok in ("<|startoftext|>", "<|endoftext|>"):
        vocab[tok] = len(vocab)
    return CLIPTokenizer(vocab=vocab, merges=[], model_max_length=77)


def _t5_encoder(vocab_size: int, d_model: int):
    from transformers import T5Config, T5EncoderModel

    cfg = T5Config(
        vocab_size=vocab_size, d_model=d_model, d_kv=8, d_ff=2 * d_model, num_layers=1,
        num_heads=2, relative_attention_num_buckets=8, dropout_rate=0.0,
    )
    return T5EncoderModel(cfg)


def _vae(latent_channels: int, flux: bool):
    from diffusers import AutoencoderKL

    # two resolution levels: vae_scale_factor 2
    return AutoencoderKL(
        in_channels=3, out_channels=3, latent_channels=latent_channels,
        down_block_types=("DownEncoderBlock2D",) * 2, up_block_types=("UpDecoderBlock2D",) * 2,
        block_out_channels=(8, 8), layers_per_block=1, norm_num_groups=4, sample_size=TINY_IMAGE_SIZE,
        **({"shift_factor": 0.1, "scaling_factor": 0.5, "use_quant_conv": False,
            "use_post_quant_conv": False} if flux else {}),
    )


def _pixart(kind: str, scale: str):
    from diffusers import DPMSolverMultistepScheduler, PixArtAlphaPipeline, PixArtSigmaPipeline, PixArtTransformer2DModel

    tokenizer = _t5_tokenizer()
    text_dim = 16
    heads, head_dim, layers = (2, 8, 3) if scale == "tiny" else (4, 64, 8)
    latent = TINY_IMAGE_SIZE // 2
    transformer = PixArtTransformer2DModel(
        num_attention_heads=heads, attention_head_dim=head_dim, in_channels=4, out_channels=8,
        num_layers=layers, cross_attention_dim=heads * head_dim, caption_channels=text_dim,
        sample_size=latent, patch_size=2 if scale == "tiny" else 1, norm_num_groups=1,
        use_additional_conditions=False, interpolation_scale=1,
    )
    scheduler = DPMSolverMultistepScheduler(
        beta_start=0.0001, beta_end=0.02, beta_schedule="linear", prediction_type="epsilon",
    )
    pipeline_cls = PixArtAlphaPipeline if kind == "pixart-alpha" else PixArtSigmaPipeline
    return pipeline_cls(
        tokenizer=tokenizer, text_encoder=_t5_encoder(len(tokenizer), text_dim),
        vae=_vae(4, flux=False), transformer=transformer, scheduler=scheduler,
    )


def _flux(scale: str):
    from diffusers import FlowMatchEulerDiscreteScheduler, FluxPipeline, FluxTransformer2DModel
    from transformers import CLIPTextConfig, CLIPTextModel

    clip_tok = _clip_tokenizer()
    clip = CLIPTextModel(CLIPTextConfig(
        vocab_size=len(clip_tok), hidden_size=16, intermediate_size=32, num_hidden_layers=1,
        num_attention_heads=2, max_position_embeddings=77, projection_dim=16,
        bos_token_id=clip_tok.bos_token_id, eos_token_id=clip_tok.eos_token_id,
        pad_token_id=clip_tok.pad_token_id,
    ))
    t5_tok = _t5_tokenizer()
    heads, head_dim, layers, single = (2, 8, 2, 2) if scale == "tiny" else (4, 64, 4, 8)
    rope = (2, 2, 4) if head_dim == 8 else (16, 24, 24)
    transformer = FluxTransformer2DModel(
        patch_size=1, in_channels=16, num_layers=layers, num_single_layers=single,
        attention_head_dim=head_dim, num_attention_heads=heads, joint_attention_dim=16,
        pooled_projection_dim=16, guidance_embeds=False, axes_dims_rope=rope,
    )
    return FluxPipeline(
        scheduler=FlowMatchEulerDiscreteScheduler(), vae=_vae(4, flux=True),
        text_encoder=clip, tokenizer=clip_tok, text_encoder_2=_t5_encoder(len(t5_tok), 16),
        tokenizer_2=t5_tok, transformer=transformer,
    )


def build_tiny_pipeline(kind: str, path: str | os.PathLike, *, scale: str = "tiny", seed: int | None = None) -> Path:
    """Build a random pipeline of `kind` and save it to `path` (idempotent: reuses a complete folder).

    kind: "pixart-alpha" | "pixart-sigma" | "flux"; scale: "tiny" (tests) | "small" (benchmarks).
    Returns the folder, loadable with `DiffusionPipeline.from_pretrained(path)`.
    """
    if kind not in KINDS:
        raise ValueError(f"unknown tiny pipeline kind {kind!r}; choose from {KINDS}")
    if scale not in SCALES:
        raise ValueError(f"unknown scale {scale!r}; choose from {SCALES}")
    seed = KINDS.index(kind) if seed is None else seed  # alpha and sigma get different weights
    path = Path(path)
    marker = path / _MARKER
    spec = {"kind": kind, "scale": scale, "seed": seed, "image_size": TINY_IMAGE_SIZE}
    if marker.exists() and json.loads(marker.read_text()) == spec:
        return path
    # Random init is seeded so a folder is reproducible; restore the global RNG afterwards.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        pipe = _flux(scale) if kind == "flux" else _pixart(kind, scale)
    pipe.save_pretrained(path, safe_serialization=True)
    marker.write_text(json.dumps(spec))
    return path
