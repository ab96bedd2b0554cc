"""Tiny random diffusers pipelines of every supported family, built from configs, for tests.

Everything is built locally (no hub): tokenizers from a small vocabulary, random weights with a
fixed seed, `save_pretrained` to a folder that `DiffusionPipeline.from_pretrained(path)` loads.
The "tiny" scale is < 1 MB and takes a few ms per step; the "small" scale (8 blocks of width 256,
256 image tokens) is a fairer stand-in for benchmarking hook overhead.

    path = build_tiny_pipeline("pixart-sigma", tmp_path / "pixart-sigma")
    pipe = load_pipeline(path)

Images: TINY_IMAGE_SIZE x TINY_IMAGE_SIZE pixels for PixArt and FLUX at every scale; the other
families (tiny scale only) at `TINY_SHAPES[kind]` = (height, width, frames or None), the smallest
shape that gives every block a few tokens of each stream (LTX-Video's VAE compresses 32x in space,
8x in time, as the real one does, so the cost model's constants hold for the tiny model too).
Every text encoder is built locally too (CLIP, T5, UMT5, Gemma-2, Qwen2.5-VL, Llama), with
character-level tokenizers.
"""

from __future__ import annotations

import json
import os
import string
from pathlib import Path

import torch

#: new kinds go at the end: a kind's default seed is its index, so existing folders stay identical
KINDS = ("pixart-alpha", "pixart-sigma", "flux", "sd3", "qwen-image", "wan", "lumina2", "sana", "chroma",
         "ltx-video", "hunyuan-video")
SCALES = ("tiny", "small")
TINY_IMAGE_SIZE = 32
#: (height, width, frames; None for images) each kind is run at in tests
TINY_SHAPES = {**{kind: (TINY_IMAGE_SIZE, TINY_IMAGE_SIZE, None) for kind in KINDS},
               "lumina2": (64, 64, None), "wan": (32, 32, 5), "ltx-video": (64, 64, 9), "hunyuan-video": (32, 32, 5)}
#: extra `pipe(...)` kwargs a kind needs in tests: HunyuanVideo's template without its system prompt
TINY_CALL_KWARGS = {"hunyuan-video": {"prompt_template": {"template": "{}", "crop_start": 0}}}
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


def _vae(latent_channels: int, flux: bool, levels: int = 2):
    from diffusers import AutoencoderKL

    # two resolution levels: vae_scale_factor 2 (Lumina2's pipeline assumes 8: four levels)
    return AutoencoderKL(
        in_channels=3, out_channels=3, latent_channels=latent_channels,
        down_block_types=("DownEncoderBlock2D",) * levels, up_block_types=("UpDecoderBlock2D",) * levels,
        block_out_channels=(8,) * levels, layers_per_block=1, norm_num_groups=4, sample_size=TINY_IMAGE_SIZE,
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


# -- the other families: tiny scale only ---------------------------------------------------------
_CHARS = string.ascii_lowercase + string.digits + string.punctuation + " \n▁"


def _char_vocab(specials: tuple[str, ...]) -> dict[str, int]:
    """Special tokens first, then one token per character (no merges: every prompt is characters)."""
    vocab = {tok: i for i, tok in enumerate(specials)}
    for ch in _CHARS:
        vocab.setdefault(ch, len(vocab))
    return vocab


def _gemma_tokenizer():
    from transformers import GemmaTokenizer

    vocab = _char_vocab(("<pad>", "<eos>", "<bos>", "<unk>", "<mask>", "<start_of_turn>", "<end_of_turn>"))
    return GemmaTokenizer(vocab=vocab, merges=[], model_max_length=_TEXT_LEN)


def _gemma2_encoder(vocab_size: int, hidden: int):
    from transformers import Gemma2Config, Gemma2Model

    return Gemma2Model(Gemma2Config(
        vocab_size=vocab_size, hidden_size=hidden, intermediate_size=2 * hidden, num_hidden_layers=2,
        num_attention_heads=2, num_key_value_heads=1, head_dim=8, max_position_embeddings=512,
        attn_implementation="eager",
    ))


def _byte_bpe_vocab(specials: tuple[str, ...]) -> dict[str, int]:
    from tokenizers.pre_tokenizers import ByteLevel

    vocab = {ch: i for i, ch in enumerate(sorted(ByteLevel.alphabet()))}
    for tok in specials:
        vocab[tok] = len(vocab)
    return vocab


def _clip_text_model(tokenizer, hidden: int, projection: bool):
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    config = CLIPTextConfig(
        vocab_size=len(tokenizer), hidden_size=hidden, intermediate_size=2 * hidden, num_hidden_layers=1,
        num_attention_heads=2, max_position_embeddings=77, projection_dim=hidden,
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
    )
    return CLIPTextModelWithProjection(config) if projection else CLIPTextModel(config)


def _sd3():
    from diffusers import FlowMatchEulerDiscreteScheduler, SD3Transformer2DModel, StableDiffusion3Pipeline

    clip_tokens = 8  # CLIP's padded length (77 in the real pipeline)
    tok, tok2 = _clip_tokenizer(), _clip_tokenizer()
    tok.model_max_length = tok2.model_max_length = clip_tokens
    t5_tok = _t5_tokenizer()
    # block 0 has SD3.5-Medium's second attention `attn2`; the last block ends the text stream
    transformer = SD3Transformer2DModel(
        sample_size=TINY_IMAGE_SIZE // 2, patch_size=2, in_channels=4, out_channels=4, num_layers=3,
        attention_head_dim=8, num_attention_heads=2, joint_attention_dim=16, caption_projection_dim=16,
        pooled_projection_dim=16, pos_embed_max_size=16, dual_attention_layers=(0,), qk_norm="rms_norm",
    )
    return StableDiffusion3Pipeline(
        transformer=transformer, scheduler=FlowMatchEulerDiscreteScheduler(), vae=_vae(4, flux=True),
        text_encoder=_clip_text_model(tok, 8, projection=True), tokenizer=tok,
        text_encoder_2=_clip_text_model(tok2, 8, projection=True), tokenizer_2=tok2,
        text_encoder_3=_t5_encoder(len(t5_tok), 16), tokenizer_3=t5_tok,
    )


def _qwen_image():
    from diffusers import (AutoencoderKLQwenImage, FlowMatchEulerDiscreteScheduler, QwenImagePipeline,
                           QwenImageTransformer2DModel)
    from transformers import Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration, Qwen2Tokenizer

    tokenizer = Qwen2Tokenizer(vocab=_byte_bpe_vocab(("<|endoftext|>", "<|im_start|>", "<|im_end|>")), merges=[],
                               model_max_length=_TEXT_LEN)
    # The pipeline drops the first 34 tokens (its system prompt, as Qwen's tokenizer splits it):
    # these words as whole tokens make the tiny tokenizer split it into 34 too, so the prompt is kept.
    words = ("the image by detailing color shape size texture quantity text spatial relationships of objects and "
             "background").split()
    tokenizer.add_tokens(["system", "Describe", "user", "assistant"] + [" " + w for w in words])
    tokenizer.add_special_tokens({"additional_special_tokens": ["<|im_start|>", "<|im_end|>"]})
    config = Qwen2_5_VLConfig(
        text_config={"vocab_size": len(tokenizer), "hidden_size": 16, "intermediate_size": 32, "num_hidden_layers": 1,
                     "num_attention_heads": 2, "num_key_value_heads": 1,
                     "rope_parameters": {"rope_type": "default", "mrope_section": [1, 1, 2], "rope_theta": 10000.0}},
        vision_config={"depth": 1, "hidden_size": 16, "intermediate_size": 16, "num_heads": 2, "out_hidden_size": 16,
                       "fullatt_block_indexes": [0]},
        vocab_size=len(tokenizer),
    )
    text_encoder = Qwen2_5_VLForConditionalGeneration(config)
    transformer = QwenImageTransformer2DModel(
        patch_size=2, in_channels=16, out_channels=4, num_layers=2, attention_head_dim=8, num_attention_heads=2,
        joint_attention_dim=16, axes_dims_rope=(2, 2, 4),
    )
    vae = AutoencoderKLQwenImage(base_dim=4, z_dim=4, dim_mult=[1, 1, 1, 1], num_res_blocks=1,
                                 temperal_downsample=[False, True, True], latents_mean=[0.0] * 4, latents_std=[1.0] * 4)
    return QwenImagePipeline(scheduler=FlowMatchEulerDiscreteScheduler(), vae=vae, text_encoder=text_encoder,
                             tokenizer=tokenizer, transformer=transformer)


def _umt5_encoder(vocab_size: int, d_model: int):
    from transformers import UMT5Config, UMT5EncoderModel

    return UMT5EncoderModel(UMT5Config(
        vocab_size=vocab_size, d_model=d_model, d_kv=8, d_ff=2 * d_model, num_layers=1, num_heads=2,
        relative_attention_num_buckets=8, dropout_rate=0.0,
    ))


def _wan():
    from diffusers import AutoencoderKLWan, UniPCMultistepScheduler, WanPipeline, WanTransformer3DModel

    tokenizer = _t5_tokenizer()
    transformer = WanTransformer3DModel(
        patch_size=(1, 2, 2), num_attention_heads=2, attention_head_dim=8, in_channels=4, out_channels=4,
        text_dim=16, freq_dim=32, ffn_dim=32, num_layers=3, cross_attn_norm=True,
        qk_norm="rms_norm_across_heads", rope_max_seq_len=32,
    )
    vae = AutoencoderKLWan(base_dim=4, z_dim=4, dim_mult=[1, 1, 1, 1], num_res_blocks=1,
                           temperal_downsample=[False, True, True], latents_mean=[0.0] * 4, latents_std=[1.0] * 4)
    scheduler = UniPCMultistepScheduler(prediction_type="flow_prediction", use_flow_sigmas=True, flow_shift=3.0)
    return WanPipeline(tokenizer=tokenizer, text_encoder=_umt5_encoder(len(tokenizer), 16), vae=vae,
                       scheduler=scheduler, transformer=transformer)


def _lumina2():
    from diffusers import FlowMatchEulerDiscreteScheduler, Lumina2Pipeline, Lumina2Transformer2DModel

    tokenizer = _gemma_tokenizer()
    transformer = Lumina2Transformer2DModel(
        sample_size=8, patch_size=2, in_channels=4, hidden_size=16, num_layers=2,
        num_refiner_layers=1, num_attention_heads=2, num_kv_heads=1, multiple_of=16, norm_eps=1e-5,
        axes_dim_rope=(4, 2, 2), axes_lens=(64, 16, 16), cap_feat_dim=16,
    )
    pipe = Lumina2Pipeline(transformer=transformer, scheduler=FlowMatchEulerDiscreteScheduler(),
                           vae=_vae(4, flux=True, levels=4), text_encoder=_gemma2_encoder(len(tokenizer), 16),
                           tokenizer=tokenizer)
    # The pipeline puts a long system prompt before every prompt: one token each, so that the 16
    # tokens the tiny model keeps hold the prompt itself.
    tokenizer.add_tokens([pipe.system_prompt, "<Prompt Start>"], special_tokens=True)
    pipe.text_encoder.resize_token_embeddings(len(tokenizer), mean_resizing=False)
    return pipe


def _sana():
    from diffusers import AutoencoderDC, DPMSolverMultistepScheduler, SanaPipeline, SanaTransformer2DModel

    import inspect

    tokenizer = _gemma_tokenizer()
    # Sana puts its "complex human instruction" before every prompt: one token, not ~1,000 characters
    instruction = inspect.signature(SanaPipeline.__call__).parameters["complex_human_instruction"].default
    tokenizer.add_tokens(["\n".join(instruction)], special_tokens=True)
    transformer = SanaTransformer2DModel(
        patch_size=2, in_channels=4, out_channels=4, num_layers=3, num_attention_heads=2, attention_head_dim=8,
        num_cross_attention_heads=2, cross_attention_head_dim=8, cross_attention_dim=16, caption_channels=16,
        sample_size=TINY_IMAGE_SIZE // 2,
    )
    vae = AutoencoderDC(  # two levels: 2x compression
        in_channels=3, latent_channels=4, attention_head_dim=2,
        encoder_block_types=("ResBlock", "EfficientViTBlock"), decoder_block_types=("ResBlock", "EfficientViTBlock"),
        encoder_block_out_channels=(8, 8), decoder_block_out_channels=(8, 8),
        encoder_qkv_multiscales=((), (5,)), decoder_qkv_multiscales=((), (5,)),
        encoder_layers_per_block=(1, 1), decoder_layers_per_block=(1, 1), downsample_block_type="conv",
        upsample_block_type="interpolate", decoder_norm_types="rms_norm", decoder_act_fns="silu", scaling_factor=0.41407,
    )
    scheduler = DPMSolverMultistepScheduler(prediction_type="flow_prediction", use_flow_sigmas=True, flow_shift=3.0)
    return SanaPipeline(tokenizer=tokenizer, text_encoder=_gemma2_encoder(len(tokenizer), 16), vae=vae,
                        transformer=transformer, scheduler=scheduler)


def _chroma():
    from diffusers import ChromaPipeline, ChromaTransformer2DModel, FlowMatchEulerDiscreteScheduler

    tokenizer = _t5_tokenizer()
    transformer = ChromaTransformer2DModel(
        patch_size=1, in_channels=16, num_layers=2, num_single_layers=2, attention_head_dim=8, num_attention_heads=2,
        joint_attention_dim=16, axes_dims_rope=(2, 2, 4), approximator_num_channels=8, approximator_hidden_dim=16,
        approximator_layers=1,
    )
    return ChromaPipeline(scheduler=FlowMatchEulerDiscreteScheduler(), vae=_vae(4, flux=True),
                          text_encoder=_t5_encoder(len(tokenizer), 16), tokenizer=tokenizer, transformer=transformer)


def _ltx_video():
    from diffusers import AutoencoderKLLTXVideo, FlowMatchEulerDiscreteScheduler, LTXPipeline, LTXVideoTransformer3DModel

    tokenizer = _t5_tokenizer()
    transformer = LTXVideoTransformer3DModel(
        in_channels=8, out_channels=8, patch_size=1, patch_size_t=1, num_attention_heads=2, attention_head_dim=8,
        cross_attention_dim=16, num_layers=3, caption_channels=16,
    )
    # 32x in space (patch 4, three 2x levels) and 8x in time, as the real VAE
    vae = AutoencoderKLLTXVideo(
        in_channels=3, out_channels=3, latent_channels=8, block_out_channels=(8, 8, 8, 8),
        decoder_block_out_channels=(8, 8, 8, 8), layers_per_block=(1, 1, 1, 1, 1),
        decoder_layers_per_block=(1, 1, 1, 1, 1), spatio_temporal_scaling=(True, True, True, False),
        decoder_spatio_temporal_scaling=(True, True, True, False), decoder_inject_noise=(False,) * 5,
        upsample_residual=(False,) * 4, upsample_factor=(1,) * 4, timestep_conditioning=False, patch_size=4,
        patch_size_t=1, encoder_causal=True, decoder_causal=False,
    )
    return LTXPipeline(scheduler=FlowMatchEulerDiscreteScheduler(), vae=vae, text_encoder=_t5_encoder(len(tokenizer), 16),
                       tokenizer=tokenizer, transformer=transformer)


def _hunyuan_video():
    from diffusers import (AutoencoderKLHunyuanVideo, FlowMatchEulerDiscreteScheduler, HunyuanVideoPipeline,
                           HunyuanVideoTransformer3DModel)
    from transformers import LlamaConfig, LlamaModel, LlamaTokenizer

    # The pipeline crops the first 95 tokens of its Llama-3 template; a character tokenizer splits the
    # template into many more, so prompts differ only when called with `TINY_CALL_KWARGS`.
    tokenizer = LlamaTokenizer(vocab=_char_vocab(("<unk>", "<s>", "</s>", "<pad>")), merges=[], pad_token="<pad>",
                               model_max_length=_TEXT_LEN)
    llama = LlamaModel(LlamaConfig(vocab_size=len(tokenizer), hidden_size=16, intermediate_size=32, num_hidden_layers=3,
                                   num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=512))
    clip_tok = _clip_tokenizer()
    transformer = HunyuanVideoTransformer3DModel(
        in_channels=4, out_channels=4, num_attention_heads=2, attention_head_dim=8, num_layers=2, num_single_layers=2,
        num_refiner_layers=1, patch_size=2, patch_size_t=1, guidance_embeds=True, text_embed_dim=16,
        pooled_projection_dim=8, rope_axes_dim=(2, 2, 4),
    )
    vae = AutoencoderKLHunyuanVideo(
        in_channels=3, out_channels=3, latent_channels=4, down_block_types=("HunyuanVideoDownBlock3D",) * 4,
        up_block_types=("HunyuanVideoUpBlock3D",) * 4, block_out_channels=(8, 8, 8, 8), layers_per_block=1,
        norm_num_groups=4, spatial_compression_ratio=8, temporal_compression_ratio=4, mid_block_add_attention=False,
    )
    return HunyuanVideoPipeline(text_encoder=llama, tokenizer=tokenizer, transformer=transformer, vae=vae,
                                scheduler=FlowMatchEulerDiscreteScheduler(), text_encoder_2=_clip_text_model(clip_tok, 8, False),
                                tokenizer_2=clip_tok)


_FAMILY_BUILDERS = {"sd3": _sd3, "qwen-image": _qwen_image, "wan": _wan, "lumina2": _lumina2, "sana": _sana,
                    "chroma": _chroma, "ltx-video": _ltx_video, "hunyuan-video": _hunyuan_video}


def build_tiny_pipeline(kind: str, path: str | os.PathLike, *, scale: str = "tiny", seed: int | None = None) -> Path:
    """Build a random pipeline of `kind` and save it to `path` (idempotent: reuses a complete folder).

    kind: one of `KINDS`; scale: "tiny" (tests) | "small" (benchmarks; PixArt and FLUX only).
    Returns the folder, loadable with `DiffusionPipeline.from_pretrained(path)`.
    """
    if kind not in KINDS:
        raise ValueError(f"unknown tiny pipeline kind {kind!r}; choose from {KINDS}")
    if scale not in SCALES:
        raise ValueError(f"unknown scale {scale!r}; choose from {SCALES}")
    if scale != "tiny" and kind in _FAMILY_BUILDERS:
        raise ValueError(f"{kind!r} is built at the 'tiny' scale only")
    seed = KINDS.index(kind) if seed is None else seed  # alpha and sigma get different weights
    path = Path(path)
    marker = path / _MARKER
    spec = {"kind": kind, "scale": scale, "seed": seed, "image_size": TINY_IMAGE_SIZE}
    if marker.exists() and json.loads(marker.read_text()) == spec:
        return path
    # Random init is seeded so a folder is reproducible; restore the global RNG afterwards.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        if kind in _FAMILY_BUILDERS:
            pipe = _FAMILY_BUILDERS[kind]()
        else:
            pipe = _flux(scale) if kind == "flux" else _pixart(kind, scale)
    pipe.save_pretrained(path, safe_serialization=True)
    marker.write_text(json.dumps(spec))
    return path
