"""The bundled model's reward (`scenes-reward`): high on real renders, low on noise and wrong prompts."""

import numpy as np
import pytest
import torch

from ecad.quality.base import available_scorers, build_scorer
from ecad.quality.scenes_reward import DEFAULT_MODEL_DIR, scenes_fid
from ecad.zoo import scenes

pytestmark = pytest.mark.skipif(not (DEFAULT_MODEL_DIR / "reward").is_dir(), reason="bundled model not present")


@pytest.fixture(scope="module")
def scorer():
    return build_scorer("scenes-reward")


@pytest.fixture(scope="module")
def held_out():
    # A seed the reward network never trained on; includes the DiT's held-out colour x shape pairs.
    scene_list, images = scenes.random_batch(256, np.random.default_rng(20261124))
    return [s.prompt for s in scene_list], images


def test_registered():
    assert "scenes-reward" in available_scorers()


def test_real_held_out_renders_score_high(scorer, held_out):
    prompts, images = held_out
    scores = scorer.score(images, prompts)
    assert scores.shape == (len(prompts),)
    assert scores.mean() > 0.9
    assert scorer.accuracy(images, prompts).mean() > 0.95


def test_noise_and_wrong_prompts_score_low(scorer, held_out):
    prompts, images = held_out
    right = scorer.score(images, prompts).mean()
    noise = scorer.score(torch.rand_like(images), prompts).mean()
    black = scorer.score(torch.zeros_like(images), prompts).mean()
    # Wrong prompt: same cells, every object recoloured to the next palette colour.
    recoloured = [" and ".join(
        f"a {scenes.COLOUR_NAMES[(scenes.COLOUR_NAMES.index(o.colour) + 1) % 6]} {o.shape} at the {scenes.CELL_NAMES[o.cell]}"
        for o in scenes.parse_prompt(p).objects) for p in prompts]
    wrong_colour = scorer.score(images, recoloured).mean()
    shuffled = scorer.score(images, prompts[1:] + prompts[:1]).mean()
    assert noise < 0.1 and black < 0.1
    assert wrong_colour < 0.1
    assert shuffled < 0.35 < right


def test_reward_falls_with_damage(scorer, held_out):
    prompts, images = held_out
    blurred = torch.nn.functional.avg_pool2d(images, 5, stride=1, padding=2)
    assert scorer.score(blurred, prompts).mean() < scorer.score(images, prompts).mean()


def test_unparseable_prompt_names_it(scorer):
    with pytest.raises(ValueError, match="a photo of a cat"):
        scorer.score(torch.zeros(1, 3, 32, 32), ["a photo of a cat"])
    with pytest.raises(ValueError, match="top left"):  # the same cell twice
        scorer.score(torch.zeros(1, 3, 32, 32), ["a red circle at the top left and a blue cross at the top left"])


def test_feature_fid_separates_real_from_noise(held_out):
    _, images = held_out
    other = scenes.random_batch(256, np.random.default_rng(7))[1]
    real_vs_real = scenes_fid(other, images)
    noise_vs_real = scenes_fid(torch.rand_like(other), images)
    assert real_vs_real < 0.2 * noise_vs_real
