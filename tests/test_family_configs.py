"""The families at full size, on the meta device (no weights): published configs against their
parameter counts, the cost model's frames axis, the committed heuristic banks, the family listing
and the error for a transformer no adapter knows."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from torch import nn

from ecad.adapters import ADDING_A_FAMILY, UnsupportedModelError, get_adapter, supported_families
from ecad.adapters.recipe import FamilyAdapter
from ecad.bank_catalog import choose_bank, find_banks
from ecad.configs import architecture_names, get_architecture
from ecad.configs.banks import BANKED, default_setting, main as banks_main
from ecad.cost import image_macs
from ecad.reference import QUALITY_PROXY_METRIC

FAMILY_ARCHITECTURES = [n for n in architecture_names() if not n.startswith(("PixArt", "FLUX"))]
REPO = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("name", FAMILY_ARCHITECTURES)
def test_published_config_builds_at_its_published_size(name):
    """The meta model of each published config has the model card's parameter count (cards round:
    SD3.5-Medium's '2.5B' is 2.24B of transformer, Wan 1.3B's 1.42B) and the adapter's pipeline
    constants (padded prompt length, default frames) agree with the config file's."""
    arch = get_architecture(name)
    transformer = get_architecture(name).shared_meta_transformer()
    assert type(transformer).__name__ == arch.transformer_class
    params = sum(p.numel() for p in transformer.parameters())
    assert abs(params / arch.published_parameters - 1) < 0.12, f"{params / 1e9:.2f}B vs {arch.published_parameters / 1e9}B"
    assert arch.source and arch.default_num_inference_steps
    adapter = get_adapter(transformer)
    assert isinstance(adapter, FamilyAdapter) and name in adapter.family.architectures
    family = adapter.family
    text = family.max_sequence_length + (77 if arch.transformer_class == "SD3Transformer2DModel" else 0)
    assert arch.max_sequence_length == text
    assert arch.default_num_frames == (family.video.default_frames if family.video else None)
    assert (family.vae_scale_factor or arch.vae_scale_factor) == arch.vae_scale_factor


@pytest.mark.parametrize("name", FAMILY_ARCHITECTURES)
def test_every_linear_layer_is_counted_once_per_row_it_runs_on(name):
    """Linear MACs (no attention matmuls) are affine in the image tokens n and the text tokens t:
    M(n, t) = M0 + a n + b t. Each layer runs once per sample (M0), per image token (a) or per text
    token (b), so M0 + a + b is the linear parameter count, exactly, where no layer runs on text and
    image tokens in one sequence; where some do (single-stream blocks, Lumina's joint layers) they
    count twice, so it lies between 1x and 2x. Chroma's approximator runs on 344 rows per sample."""
    arch = get_architecture(name)
    transformer = get_architecture(name).shared_meta_transformer()
    adapter = get_adapter(transformer)
    height, width = arch.default_size

    def linear_macs(h, text):
        kw = dict(arch.shape(h, width, 1.0), batch_size=1, text_len=text)
        return int(adapter.component_macs(transformer, attention_matmuls=False, **kw).sum()
                   + adapter.block_linear_macs(transformer, **kw).sum() + adapter.other_macs(transformer, **kw))

    frames = {"num_frames": arch.default_num_frames} if arch.default_num_frames else {}
    n = adapter.num_tokens(transformer, height=height, width=width, vae_scale_factor=arch.vae_scale_factor, **frames)
    m0 = linear_macs(0, 0)
    per_image_token = (linear_macs(height, 0) - m0) / n
    per_text_token = linear_macs(0, 100) - m0
    assert (per_text_token % 100, linear_macs(height, 100)) == (0, m0 + per_image_token * n + per_text_token)
    weights = sum(m.weight.numel() for m in transformer.modules() if isinstance(m, (nn.Linear, nn.modules.conv._ConvNd)))
    counted = m0 + per_image_token + per_text_token // 100
    if name == "Chroma1-HD":  # its modulation approximator runs on one row per modulation vector
        approximator = sum(m.weight.numel() for m in transformer.distilled_guidance_layer.modules()
                           if isinstance(m, nn.Linear))
        counted -= (transformer.time_text_embed.mod_proj.shape[0] - 1) * approximator
    joint = any(c.rows == "joint" for g in adapter.family.groups for c in g.components) or name == "Lumina-Image-2.0"
    if joint:
        assert weights < counted < 2 * weights
    else:
        assert counted == weights
    assert per_image_token <= weights


def test_wan_frames_axis():
    """Wan 2.1 at 480x832: 30 x 52 tokens per latent frame, (frames - 1) / 4 + 1 latent frames; the
    linear MACs grow linearly with the latent frames, self-attention's matmuls quadratically."""
    arch = get_architecture("Wan2.1-T2V-14B-Diffusers")
    transformer = arch.shared_meta_transformer()
    adapter = get_adapter(transformer)
    latent = {frames: (frames - 1) // 4 + 1 for frames in (17, 33, 81)}
    for frames, n in latent.items():
        assert adapter.num_tokens(transformer, height=480, width=832, num_frames=frames) == n * 30 * 52
    kw = {f: arch.shape(480, 832, 5.0, num_frames=f) for f in latent}
    linear = {f: int(adapter.component_macs(transformer, attention_matmuls=False, **kw[f]).sum()
                     + adapter.other_macs(transformer, **kw[f])) for f in latent}
    assert (linear[81] - linear[33]) * (latent[33] - latent[17]) == (linear[33] - linear[17]) * (latent[81] - latent[33])
    matmuls = {f: adapter.component_macs(transformer, **kw[f])[:, 0] - adapter.component_macs(
        transformer, attention_matmuls=False, **kw[f])[:, 0] for f in latent}  # attn1: over every frame's tokens
    assert np.array_equal(matmuls[81] * latent[17] ** 2, matmuls[17] * latent[81] ** 2)
    assert arch.step_macs(480, 832, 5.0)[0].sum() == arch.step_macs(480, 832, 5.0, num_frames=81)[0].sum()
    assert arch.transformer_calls(5.0) == 2 and arch.transformer_calls(1.0) == 1


@pytest.mark.parametrize("name", BANKED)
def test_committed_bank_is_found_for_the_model_and_counted_by_the_cost_model(name):
    arch = get_architecture(name)
    setting = default_setting(arch)
    banks = find_banks(arch.hub_id)
    assert [path.parent.name for path in banks] == [name]
    copy = find_banks("/models/local-copy", transformer_config=dict(arch.shared_meta_transformer().config))
    assert list(copy) == list(banks)  # found by the transformer's config under another name too
    chosen, note = choose_bank({str(path): bank.setting for path, bank in banks.items()}, setting)
    assert note is None  # made for the pipeline's default setting
    bank = banks[Path(chosen)]
    assert bank.model == arch.hub_id
    assert bank.scorer == "unmeasured" and not any(e.quality_measured for e in bank.entries)
    assert bank.quality_metric == QUALITY_PROXY_METRIC and bank.no_cache_entry().score(QUALITY_PROXY_METRIC) == 1.0
    layouts = {e.cache_schedule().layout for e in bank.entries}
    assert layouts == {arch.layout()}
    # the MACs are the cost model's; the no-cache entry is steps x calls x one call's work
    for entry_id in ("no-cache", "fora-2", "block-skip-2", "taylorseer-2"):
        entry = bank.entry(entry_id)
        assert entry.macs == image_macs(arch, setting, entry.cache_schedule())
    component, other = arch.step_macs(setting.height, setting.width, setting.guidance_scale)
    transformer = get_architecture(name).shared_meta_transformer()
    elementwise = get_adapter(transformer).block_elementwise_ops(transformer, **arch.shape(
        setting.height, setting.width, setting.guidance_scale)).sum()
    assert bank.no_cache_entry().macs == (setting.num_inference_steps * arch.transformer_calls(setting.guidance_scale)
                                          * int(component.sum() + other + elementwise))
    assert bank.entry("fora-2").macs < bank.no_cache_entry().macs / 1.9


def test_bank_generator_reproduces_the_committed_bank():
    assert banks_main(["--check", "Lumina-Image-2.0"]) == 0


def test_a_transformer_without_adapter_names_the_families_and_the_recipe():
    with pytest.raises(UnsupportedModelError) as error:
        get_adapter(nn.Linear(2, 2))
    message = str(error.value)
    for family, cls in supported_families():
        assert family in message and cls in message
    assert ADDING_A_FAMILY in message and (REPO / ADDING_A_FAMILY).is_file()


def test_python_m_ecad_adapters_lists_every_family(capsys):
    from ecad.adapters.__main__ import main

    assert main([]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == len(supported_families()) >= 10
    by_class = {cls: line for line in lines for _, cls in supported_families() if f" {cls} " in line}
    assert len(by_class) == len(lines)
    assert "blocks[40]x(attn1, attn2, ffn)" in by_class["WanTransformer3DModel"]
    assert "Wan2.1-T2V-14B-Diffusers/480x832-50steps" in by_class["WanTransformer3DModel"]
    assert "transformer_blocks[38]x(attn, ff, ff_context)" in by_class["SD3Transformer2DModel"]
    assert "FLUX.1-dev/1024x1024-20steps" in by_class["FluxTransformer2DModel"]


def test_the_recipe_counts_pixart_and_flux_as_their_hand_written_adapters():
    """PixArt and FLUX keep their hand-written adapters (their MACs match the ECAD paper's files and
    the committed banks), but as recipes they would count the same MACs in every component and
    outside the blocks; only the element-wise estimate of the blocks differs."""
    from ecad.adapters.recipe import (BATCHED, CROSS, EMBEDDED, IMAGE, JOINT, JOINT_ATTENTION, SAMPLE, TEXT, Family,
                                      Group, attention, mlp)

    pixart = Family(name="PixArt as a recipe", transformer_class=object, guidance=BATCHED, max_sequence_length=120,
                    groups=(Group("transformer_blocks", (attention("attn1"), attention("attn2", IMAGE, CROSS), mlp("ff"))),),
                    outside={"pos_embed": IMAGE, "adaln_single": SAMPLE, "caption_projection": TEXT, "proj_out": IMAGE})
    flux = Family(name="FLUX as a recipe", transformer_class=object, guidance=EMBEDDED, max_sequence_length=512, patch=2,
                  groups=(Group("transformer_blocks", (attention("attn", IMAGE, JOINT_ATTENTION), mlp("ff"), mlp("ff_context", TEXT)),
                                streams=(("encoder_hidden_states", TEXT), ("hidden_states", IMAGE))),
                          Group("single_transformer_blocks", (attention("attn", JOINT), mlp("proj_mlp", JOINT), mlp("proj_out", JOINT)),
                                streams=(("encoder_hidden_states", TEXT), ("hidden_states", IMAGE)))),
                  outside={"x_embedder": IMAGE, "context_embedder": TEXT, "time_text_embed": SAMPLE, "norm_out": SAMPLE,
                           "proj_out": IMAGE})
    for name, family in (("PixArt-XL-2-512x512", pixart), ("FLUX.1-dev", flux)):
        recipe = type("RecipeAdapter", (FamilyAdapter,), {"family": family})()
        arch = get_architecture(name)
        transformer = get_architecture(name).shared_meta_transformer()
        hand = get_adapter(transformer)
        for size in (256, 1024):
            kw = arch.shape(size, size, 4.5)
            assert recipe.layout(transformer) == hand.layout(transformer)
            assert np.array_equal(recipe.component_macs(transformer, **kw), hand.component_macs(transformer, **kw))
            assert (recipe.other_macs(transformer, **kw) + recipe.block_linear_macs(transformer, **kw).sum()
                    == hand.other_macs(transformer, **kw) + hand.block_linear_macs(transformer, **kw).sum())
