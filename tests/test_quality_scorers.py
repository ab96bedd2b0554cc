"""Scorers' real behaviour: fidelity against references, CLIP on a tiny random CLIP, combinations."""

from __future__ import annotations

import math

import pytest
import torch

from ecad.quality import available_scorers, build_scorer


def images(n=3, size=32, seed=0):
    return torch.rand(n, 3, size, size, generator=torch.Generator().manual_seed(seed))


def noisy(x, sigma, seed=1):
    return (x + sigma * torch.randn(x.shape, generator=torch.Generator().manual_seed(seed))).clamp(0, 1)


def test_registry_names_every_scorer():
    assert {"fidelity", "clip", "image-reward", "combined"} <= set(available_scorers())


def test_fidelity_is_capped_for_identical_images_and_falls_with_noise():
    ref = images()
    scorer = build_scorer("fidelity")
    assert scorer.needs_reference
    same = scorer.metrics(ref, ["p"] * 3, ref)
    assert torch.allclose(same["psnr"], torch.full((3,), 60.0))
    assert torch.allclose(same["ssim"], torch.ones(3), atol=1e-5)
    uncapped = build_scorer("fidelity", max_psnr=None)
    assert math.isinf(float(uncapped.score(ref, ["p"] * 3, ref)[0]))

    slight, strong = noisy(ref, 0.02), noisy(ref, 0.2)
    for metric in ("psnr", "ssim", "psnr_norm"):
        s = build_scorer("fidelity", metric=metric)
        a, b = s.score(slight, ["p"] * 3, ref), s.score(strong, ["p"] * 3, ref)
        assert a.shape == (3,) and bool((a > b).all()), metric
    psnr = build_scorer("fidelity").score(slight, ["p"] * 3, ref)
    assert 30 < float(psnr.mean()) < 40  # sigma 0.02 -> about 34 dB (before clamping)


def test_fidelity_refuses_missing_or_mismatched_references():
    scorer = build_scorer("fidelity")
    with pytest.raises(ValueError, match="reference"):
        scorer.score(images(), ["p"] * 3)
    with pytest.raises(ValueError, match="shape"):
        scorer.score(images(), ["p"] * 3, images(size=16))


def test_combined_is_the_weighted_sum_of_its_parts():
    ref = images()
    damaged = noisy(ref, 0.1)
    combined = build_scorer("combined", components="fidelity/ssim:0.25,fidelity/psnr_norm:0.75")
    assert combined.needs_reference
    parts = combined.metrics(damaged, ["p"] * 3, ref)
    expected = 0.25 * parts["fidelity/ssim"] + 0.75 * parts["fidelity/psnr_norm"]
    assert torch.allclose(parts["combined"], expected)
    assert torch.allclose(combined.score(damaged, ["p"] * 3, ref), expected)
    assert bool((combined.score(ref, ["p"] * 3, ref) > parts["combined"]).all())


@pytest.fixture(scope="module")
def tiny_clip(tmp_path_factory):
    from transformers import CLIPConfig, CLIPModel

    from ecad.tiny import _clip_tokenizer

    tokenizer = _clip_tokenizer()
    config = CLIPConfig(
        text_config=dict(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=2, max_position_embeddings=77, projection_dim=16,
                         bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id),
        vision_config=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
                           image_size=32, patch_size=8, projection_dim=16),
        projection_dim=16,
    )
    torch.manual_seed(0)
    folder = tmp_path_factory.mktemp("tiny-clip")
    CLIPModel(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def test_clip_scores_a_tiny_random_clip_from_a_local_folder(tiny_clip):
    scorer = build_scorer("clip", model=str(tiny_clip), batch_size=2)
    x = images(4, size=48)
    prompts = ["a red cat", "a blue dog", "a red cat", "a tree"]
    scores = scorer.score(x, prompts)
    assert scores.shape == (4,) and torch.isfinite(scores).all()
    assert bool((scores.abs() <= 100).all())
    assert torch.allclose(scores, build_scorer("clip", model=str(tiny_clip), batch_size=8).score(x, prompts), atol=1e-4)
    assert not torch.allclose(scores, scorer.score(x.flip(0), prompts))  # depends on the image
    assert not torch.allclose(scores, scorer.score(x, prompts[::-1]))  # and on the prompt
    # one-number scorers report it under their registry name (the base class's metrics())
    assert list(scorer.metrics(x, prompts)) == ["clip"]
    assert torch.equal(scorer.metrics(x, prompts)["clip"], scores)
    with pytest.raises(ValueError, match="4 images but 3 prompts"):
        scorer.score(x, prompts[:3])


def test_clip_names_the_missing_model(tmp_path):
    with pytest.raises(RuntimeError, match="cannot load CLIP model"):
        build_scorer("clip", model=str(tmp_path / "absent"))


def test_batching_and_resizing_helpers():
    from ecad.quality.base import resize_crop_normalize, score_in_batches

    calls = []

    def per_batch(chunk, prompts):
        calls.append((len(chunk), prompts))
        return chunk.mean(dim=(1, 2, 3))

    x = images(5)
    scores = score_in_batches(x, list("abcde"), 2, per_batch)
    assert [c[0] for c in calls] == [2, 2, 1] and calls[-1][1] == ["e"]
    assert torch.allclose(scores, x.mean(dim=(1, 2, 3)))
    # 48x64 -> shorter side 32 (32x43), centre crop 32x32; a constant image stays constant
    flat = resize_crop_normalize(torch.full((1, 3, 48, 64), 0.5), 32, (0.5, 0.25, 0.0), (0.5, 0.5, 0.25))
    assert flat.shape == (1, 3, 32, 32)
    assert torch.allclose(flat[0, :, 0, 0], torch.tensor([0.0, 0.5, 2.0]), atol=1e-5)


def test_scenes_reward_does_not_import_the_zoo():
    """The reward stands on the scene grammar (ecad.scenes_vocab); only the zoo imports the reward."""
    import subprocess
    import sys

    code = "import sys, ecad.quality.scenes_reward; print('ecad.zoo' in sys.modules or 'ecad.zoo.scenes' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
