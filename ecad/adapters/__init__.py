"""Model adapters: block layout, component modules, analytic MACs, pipeline kwargs per family."""

from .base import (
    TransformerAdapter,
    UnsupportedModelError,
    get_adapter,
    register_adapter,
    split_pipeline,
    supported_transformers,
)
from . import flux, pixart  # noqa: E402,F401  (register the built-in adapters)

__all__ = [
    "TransformerAdapter",
    "UnsupportedModelError",
    "get_adapter",
    "register_adapter",
    "split_pipeline",
    "supported_transformers",
]
