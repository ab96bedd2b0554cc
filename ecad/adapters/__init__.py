"""Model adapters: block layout, component modules, analytic MACs, pipeline kwargs per family.

PixArt and FLUX are written by hand (their MACs match the ECAD paper's counts); every other family
is a `recipe.Family` (data) in a module of its own."""

from .base import (
    ADDING_A_FAMILY,
    TransformerAdapter,
    UnsupportedModelError,
    adapter_for_class,
    get_adapter,
    register_adapter,
    split_pipeline,
    supported_families,
    supported_transformers,
)
from . import chroma, flux, hunyuan_video, ltx, lumina2, pixart, qwenimage, sana, sd3, wan  # noqa: E402,F401  (register)

__all__ = [
    "ADDING_A_FAMILY",
    "TransformerAdapter",
    "UnsupportedModelError",
    "adapter_for_class",
    "get_adapter",
    "register_adapter",
    "split_pipeline",
    "supported_families",
    "supported_transformers",
]
