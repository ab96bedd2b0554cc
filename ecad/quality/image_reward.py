"""ImageReward-v1.0 (BLIP ViT-L + MLP head) as a scorer, via the ``image-reward`` extra.

Scores in-memory image tensors: resize (bicubic, antialiased) + centre crop to 224 and CLIP
normalisation happen in torch, matching the package's PIL transform without a PNG round trip.
See ``_image_reward_compat.py`` for what it takes to run the package on transformers 5 offline.
"""

from __future__ import annotations

import torch

from ecad.quality._image_reward_compat import (
    HUB_REPO,
    IMAGE_MEAN,
    IMAGE_SIZE,
    IMAGE_STD,
    MAX_PROMPT_TOKENS,
    build_image_reward,
)
from ecad.quality.base import QualityScorer, register_scorer, resize_crop_normalize, score_in_batches


def preprocess_images(images: torch.Tensor, size: int = IMAGE_SIZE) -> torch.Tensor:
    """float [N, 3, H, W] in [0, 1] → BLIP input: shorter side to ``size``, centre crop, normalise."""
    return resize_crop_normalize(images, size, IMAGE_MEAN, IMAGE_STD)


@register_scorer("image-reward")
class ImageRewardScorer(QualityScorer):
    name = "image-reward"
    needs_reference = False

    def __init__(
        self,
        model: str = HUB_REPO,
        tokenizer: str | None = None,
        device: str = "cpu",
        batch_size: int = 8,
        random_init: bool = False,
    ):
        self.device = device
        self.batch_size = batch_size
        self.model = build_image_reward(model, tokenizer=tokenizer, device=device, random_init=random_init)

    @torch.no_grad()
    def _score_batch(self, images: torch.Tensor, prompts: list[str]) -> torch.Tensor:
        text = self.model.blip.tokenizer(
            prompts, padding="max_length", truncation=True, max_length=MAX_PROMPT_TOKENS, return_tensors="pt",
        ).to(self.device)
        return self.model.score_gard(text.input_ids, text.attention_mask, preprocess_images(images.to(self.device)))

    def score(self, images, prompts, references=None) -> torch.Tensor:
        return score_in_batches(images, prompts, self.batch_size, self._score_batch)
