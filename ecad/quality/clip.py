"""CLIP score: 100 x cosine similarity of a ``transformers`` CLIP model's image and text embeddings.

The model comes from a local folder or a hub id (``openai/clip-vit-large-patch14`` for the
usual CLIPScore). Images are resized/cropped/normalised in torch from the model's image
processor settings, so no PIL round trip. Unlike torchmetrics' ``CLIPScore`` nothing is clamped
at zero: a search needs the ordering of bad images too.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
import torch.nn.functional as F

from ecad.quality.base import QualityScorer, register_scorer, resize_crop_normalize, score_in_batches

DEFAULT_CLIP_MODEL = "openai/clip-vit-large-patch14"
_CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
_CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


def _image_settings(model_path: str, image_size: int) -> tuple[int, tuple, tuple]:
    """(size, mean, std) from preprocessor_config.json when present, else CLIP's defaults."""
    config_file = Path(model_path) / "preprocessor_config.json"
    if config_file.is_file():
        config = json.loads(config_file.read_text())
        crop = config.get("crop_size", image_size)
        size = crop.get("height", image_size) if isinstance(crop, dict) else int(crop)
        return size, tuple(config.get("image_mean", _CLIP_MEAN)), tuple(config.get("image_std", _CLIP_STD))
    return image_size, _CLIP_MEAN, _CLIP_STD


@register_scorer("clip")
class ClipScorer(QualityScorer):
    name = "clip"
    needs_reference = False

    def __init__(self, model: str = DEFAULT_CLIP_MODEL, device: str = "cpu", batch_size: int = 16):
        from transformers import AutoTokenizer, CLIPModel

        try:
            self.model = CLIPModel.from_pretrained(model).to(device).eval()
            self.tokenizer = AutoTokenizer.from_pretrained(model)
        except OSError as err:
            raise RuntimeError(
                f"cannot load CLIP model {model!r} ({err}); pass a local folder with "
                "config.json, model weights and tokenizer files (model=PATH), or allow hub access"
            ) from None
        self.device = device
        self.batch_size = batch_size
        self.size, self.mean, self.std = _image_settings(model, self.model.config.vision_config.image_size)
        self.max_length = min(
            self.model.config.text_config.max_position_embeddings,
            getattr(self.tokenizer, "model_max_length", 77) or 77,
        )

    @staticmethod
    def _embedding(output) -> torch.Tensor:
        # transformers 5 may return a model output instead of a bare tensor
        return output if isinstance(output, torch.Tensor) else output.pooler_output

    @torch.no_grad()
    def _score_batch(self, images: torch.Tensor, prompts: list[str]) -> torch.Tensor:
        pixels = resize_crop_normalize(images, self.size, self.mean, self.std).to(self.device)
        text = self.tokenizer(
            prompts, padding=True, truncation=True, max_length=self.max_length, return_tensors="pt",
        ).to(self.device)
        image_embeds = F.normalize(self._embedding(self.model.get_image_features(pixel_values=pixels)), dim=-1)
        text_embeds = F.normalize(self._embedding(self.model.get_text_features(**text)), dim=-1)
        return 100.0 * (image_embeds * text_embeds).sum(-1)

    def score(self, images, prompts, references=None) -> torch.Tensor:
        return score_in_batches(images, prompts, self.batch_size, self._score_batch)
