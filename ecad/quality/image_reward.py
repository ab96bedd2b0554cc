"""ImageReward-v1.0 (BLIP ViT-L + MLP head) as a scorer, via the ``image-reward`` extra.

Scores in-memory image tensors: resize (bicubic, antialiased) + centre crop to 224 and CLIP
normalisation happen in torch, matching the package's PIL transform without a PNG round trip.
See ``_image_reward_compat.py`` for what it takes to run the package on transformers 5 offline.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ecad.quality._image_reward_compat import (
    HUB_REPO,
    IMAGE_MEAN,
    IMAGE_SIZE,
    IMAGE_STD,
    MAX_PROMPT_TOKENS,
    build_image_reward,
)
from ecad.quality.base import QualityScorer, register_scorer


def preprocess_images(images: torch.Tensor, size: int = IMAGE_SIZE) -> torch.Tensor:
    """float [N, 3, H, W] in [0, 1] → BLIP input: shorter side to ``size``, centre crop, normalise."""
    images = images.float().clamp(0, 1)
    height, width = images.shape[-2:]
    scale = size / min(height, width)
    new_h, new_w = max(size, round(height * scale)), max(size, round(width * scale))
    images = F.interpolate(images, size=(new_h, new_w), mode="bicubic", align_corners=False, antialias=True)
    top, left = (new_h - size) // 2, (new_w - size) // 2
    images = images[..., top : top + size, left : left + size].clamp(0, 1)
    mean = torch.tensor(IMAGE_MEAN, device=images.device).view(1, 3, 1, 1)
    std = torch.tensor(IMAGE_STD, device=images.device).view(1, 3, 1, 1)
    return (images - mean) / std


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
    def score(self, images, prompts, references=None) -> torch.Tensor:
        if len(prompts) != len(images):
            raise ValueError(f"{len(images)} images but {len(prompts)} prompts")
        scores = []
        for start in range(0, len(images), self.batch_size):
            chunk = preprocess_images(images[start : start + self.batch_size].to(self.device))
            text = self.model.blip.tokenizer(
                list(prompts[start : start + self.batch_size]),
                padding="max_length",
                truncation=True,
                max_length=MAX_PROMPT_TOKENS,
                return_tensors="pt",
            ).to(self.device)
            rewards = self.model.score_gard(text.input_ids, text.attention_mask, chunk)
            scores.append(rewards.reshape(-1).float().cpu())
        return torch.cat(scores)
