"""Fidelity: agreement of a cached image with the uncached image of the same prompt and seed.

PSNR and SSIM from torchmetrics, per image. This is what caching damages first and most
directly, it needs no extra model, and it ranks near-lossless schedules that a prompt-level
reward cannot tell apart. LPIPS is not offered: torchmetrics' LPIPS downloads backbone and
linear-layer weights on first use, which this project's offline machines cannot do.

Identical images have infinite PSNR; ``max_psnr`` caps it (default 60 dB, far above visible
differences) so means over images and the search's objectives stay finite.
"""

from __future__ import annotations

import torch

from ecad.quality.base import QualityScorer, register_scorer

METRICS = ("psnr", "ssim", "psnr_norm")


def psnr_per_image(images: torch.Tensor, references: torch.Tensor, max_psnr: float | None = 60.0) -> torch.Tensor:
    from torchmetrics.functional.image import peak_signal_noise_ratio

    values = peak_signal_noise_ratio(
        images.float(), references.float(), data_range=1.0, reduction="none", dim=(1, 2, 3)
    ).reshape(-1)
    return values if max_psnr is None else values.clamp(max=max_psnr)


def ssim_per_image(images: torch.Tensor, references: torch.Tensor) -> torch.Tensor:
    from torchmetrics.functional.image import structural_similarity_index_measure

    # an 11-px Gaussian window needs >= 11 px; smaller test images use a smaller window
    kernel = min(11, min(images.shape[-2:]) // 2 * 2 - 1)
    return structural_similarity_index_measure(
        images.float(), references.float(), data_range=1.0, reduction="none", kernel_size=kernel
    ).reshape(-1)


@register_scorer("fidelity")
class FidelityScorer(QualityScorer):
    """``metric``: "psnr" (dB, capped), "ssim" ([-1, 1]) or "psnr_norm" (capped PSNR / cap, [0, 1])."""

    name = "fidelity"
    needs_reference = True

    def __init__(self, metric: str = "psnr", max_psnr: float = 60.0, device: str = "cpu"):
        if metric not in METRICS:
            raise ValueError(f"fidelity metric must be one of {METRICS}, got {metric!r}")
        self.metric = metric
        self.max_psnr = max_psnr
        self.device = device

    def _check(self, images, references):
        if references is None:
            raise ValueError("the fidelity scorer needs the uncached reference images")
        if references.shape != images.shape:
            raise ValueError(f"images {tuple(images.shape)} and references {tuple(references.shape)} differ in shape")

    @torch.no_grad()
    def metrics(self, images, prompts, references=None) -> dict[str, torch.Tensor]:
        """Every fidelity metric per image (the bank records all of them)."""
        self._check(images, references)
        psnr = psnr_per_image(images, references, self.max_psnr)
        return {
            "psnr": psnr,
            "ssim": ssim_per_image(images, references),
            "psnr_norm": psnr / self.max_psnr,
        }

    @torch.no_grad()
    def score(self, images, prompts, references=None) -> torch.Tensor:
        self._check(images, references)
        if self.metric == "ssim":
            return ssim_per_image(images, references)
        psnr = psnr_per_image(images, references, self.max_psnr)
        return psnr / self.max_psnr if self.metric == "psnr_norm" else psnr
