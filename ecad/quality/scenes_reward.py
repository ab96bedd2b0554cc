"""The bundled model's reward: does the image show the prompted objects, and nothing else?

A small CNN trained on rendered scenes (and on VAE reconstructions of them, so the VAE's own blur
is not punished) predicts, for each of the four grid cells, the shape (or empty) and the colour (or
none). The reward of an image for its prompt is soft:

    reward = mean over prompted objects of p(shape) * p(colour)  x  mean over empty cells of p(empty)

so a colour drifting towards another palette colour, a shape losing its corners or an extra blob
in an empty cell lowers it smoothly; this is what caching damages. ``accuracy`` is the hard
version (every cell's argmax right). ``scenes_fid`` is a Frechet distance between the network's
features of generated and real images (torchmetrics' FID with this network as the feature
extractor), the way MNIST papers use a LeNet's features.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from ecad.paths import DEFAULT_MODEL
from ecad.quality.base import QualityScorer, register_scorer
from ecad.scenes_vocab import parse_prompt

DEFAULT_MODEL_DIR = DEFAULT_MODEL


class SceneRewardNet(nn.Module):
    """32x32 image -> per-cell logits for shape (1 + shapes) and colour (1 + colours)."""

    def __init__(self, num_shapes: int = 4, num_colours: int = 6, grid: int = 2, width: int = 32,
                 feature_dim: int = 64):
        super().__init__()
        self.config = dict(num_shapes=num_shapes, num_colours=num_colours, grid=grid, width=width,
                           feature_dim=feature_dim)
        w = width

        def block(cin, cout):
            return [nn.Conv2d(cin, cout, 3, padding=1), nn.BatchNorm2d(cout), nn.ReLU(inplace=True)]

        self.body = nn.Sequential(
            *block(3, w), *block(w, w), nn.MaxPool2d(2),  # 16x16
            *block(w, 2 * w), *block(2 * w, 2 * w), nn.MaxPool2d(2),  # 8x8
            *block(2 * w, 2 * w), *block(2 * w, feature_dim),
            nn.AdaptiveAvgPool2d(grid),  # one feature vector per cell
        )
        self.shape_head = nn.Linear(feature_dim, num_shapes + 1)
        self.colour_head = nn.Linear(feature_dim, num_colours + 1)

    def cell_features(self, images: torch.Tensor) -> torch.Tensor:
        """images [N,3,H,W] in [0,1] -> [N, cells, feature_dim]."""
        if images.shape[-1] != 32 or images.shape[-2] != 32:
            images = F.interpolate(images, size=(32, 32), mode="bilinear", antialias=True, align_corners=False)
        f = self.body(images * 2 - 1)
        return f.flatten(2).transpose(1, 2)

    def forward(self, images: torch.Tensor):
        f = self.cell_features(images)
        return self.shape_head(f), self.colour_head(f)  # [N, cells, S+1], [N, cells, C+1]

    @classmethod
    def load(cls, folder: str | Path) -> "SceneRewardNet":
        from safetensors.torch import load_file

        folder = Path(folder)
        net = cls(**json.loads((folder / "config.json").read_text())["network"])
        net.load_state_dict(load_file(folder / "model.safetensors"))
        return net.eval()

    def save(self, folder: str | Path, extra: dict | None = None) -> None:
        from safetensors.torch import save_file

        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        save_file({k: v.contiguous() for k, v in self.state_dict().items()}, folder / "model.safetensors")
        (folder / "config.json").write_text(json.dumps({"network": self.config, **(extra or {})}, indent=2))


class _FeatureExtractor(nn.Module):
    """torchmetrics FID feature hook: uint8 or float images -> [N, cells * feature_dim]."""

    def __init__(self, net: SceneRewardNet):
        super().__init__()
        self.net = net
        self.num_features = net.config["feature_dim"] * net.config["grid"] ** 2

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        if images.dtype == torch.uint8:
            images = images.float() / 255.0
        return self.net.cell_features(images.float()).flatten(1).double()


def cell_targets(prompts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
    """Prompt -> per-cell shape and colour labels (0 = empty); ValueError for foreign prompts."""
    shapes, colours = zip(*(parse_prompt(p).cell_labels() for p in prompts))
    return torch.tensor(shapes), torch.tensor(colours)


@register_scorer("scenes-reward")
class ScenesReward(QualityScorer):
    """Soft prompt-adherence reward for the bundled ecad-scenes model (see module docstring)."""

    name = "scenes-reward"
    needs_reference = False

    def __init__(self, model_dir: str | Path | None = None, device: str = "cpu"):
        self.model_dir = Path(model_dir) if model_dir is not None else DEFAULT_MODEL_DIR
        folder = self.model_dir / "reward" if (self.model_dir / "reward").is_dir() else self.model_dir
        self.net = SceneRewardNet.load(folder).to(device)
        self.device = device

    @torch.no_grad()
    def probabilities(self, images: torch.Tensor, prompts: list[str]):
        """p(prompted shape), p(prompted colour) per cell, and the cell labels: each [N, cells]."""
        if images.ndim != 4 or images.shape[1] != 3:
            raise ValueError(f"images must be [N, 3, H, W], got {tuple(images.shape)}")
        if len(prompts) != len(images):
            raise ValueError(f"{len(images)} images but {len(prompts)} prompts")
        shapes, colours = cell_targets(prompts)
        s_logits, c_logits = self.net(images.to(self.device, torch.float32).clamp(0, 1))
        p_shape = s_logits.softmax(-1).cpu().gather(-1, shapes[..., None])[..., 0]
        p_colour = c_logits.softmax(-1).cpu().gather(-1, colours[..., None])[..., 0]
        return p_shape, p_colour, shapes, (s_logits.argmax(-1).cpu() == shapes) & (c_logits.argmax(-1).cpu() == colours)

    def score(self, images: torch.Tensor, prompts: list[str], references: torch.Tensor | None = None) -> torch.Tensor:
        p_shape, p_colour, shapes, _ = self.probabilities(images, prompts)
        occupied = (shapes > 0).float()
        empty = 1.0 - occupied
        objects = (p_shape * p_colour * occupied).sum(1) / occupied.sum(1)
        # Scenes with every cell occupied have no empty cells to check: that factor is then 1.
        empties = torch.where(empty.sum(1) > 0, (p_shape * empty).sum(1) / empty.sum(1).clamp(min=1), 1.0)
        return objects * empties

    def accuracy(self, images: torch.Tensor, prompts: list[str]) -> torch.Tensor:
        """1.0 where every cell's predicted shape and colour match the prompt, else 0.0."""
        return self.probabilities(images, prompts)[3].all(1).float()

    def features(self, images: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return _FeatureExtractor(self.net)(images.to(self.device))


def scenes_fid(images: torch.Tensor, real_images: torch.Tensor, model_dir: str | Path | None = None) -> float:
    """Frechet distance on the reward network's cell features (torchmetrics FID), images in [0,1]."""
    from torchmetrics.image.fid import FrechetInceptionDistance

    scorer = ScenesReward(model_dir)
    fid = FrechetInceptionDistance(feature=_FeatureExtractor(scorer.net), normalize=True)
    with torch.no_grad():
        for start in range(0, len(real_images), 256):
            fid.update(real_images[start:start + 256].float().clamp(0, 1), real=True)
        for start in range(0, len(images), 256):
            fid.update(images[start:start + 256].float().clamp(0, 1), real=False)
    return float(fid.compute())
