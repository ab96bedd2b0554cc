"""Model adapters: the only place that knows how a transformer family is laid out.

An adapter maps a `CacheSchedule`'s [block, component] grid onto modules, gives analytic MACs
per component (so a schedule's cost is a sum), and supplies model-specific pipeline kwargs.
Adapters register themselves by transformer class; `get_adapter(transformer)` looks one up.
"""

from __future__ import annotations

from typing import Any, Callable

import numpy as np
from torch import nn

from ..schedule import BlockLayout

_ADAPTERS: dict[type, "TransformerAdapter"] = {}


class UnsupportedModelError(TypeError):
    """No adapter is registered for this transformer class."""


def register_adapter(transformer_cls: type) -> Callable[[type], type]:
    """Class decorator: register an adapter (instantiated once) for `transformer_cls`."""

    def wrap(adapter_cls: type) -> type:
        _ADAPTERS[transformer_cls] = adapter_cls()
        return adapter_cls

    return wrap


def supported_transformers() -> list[str]:
    return sorted(cls.__name__ for cls in _ADAPTERS)


def split_pipeline(pipe_or_transformer: Any) -> tuple[Any | None, nn.Module]:
    """(pipeline or None, transformer): every ecad entry point takes either a pipeline or its
    bare transformer, and this is the one place that tells them apart."""
    transformer = getattr(pipe_or_transformer, "transformer", None)
    if isinstance(transformer, nn.Module):
        return pipe_or_transformer, transformer
    if isinstance(pipe_or_transformer, nn.Module):
        return None, pipe_or_transformer
    raise TypeError(f"expected a diffusers pipeline or transformer, got {type(pipe_or_transformer).__name__}")


ADDING_A_FAMILY = "docs/adding-a-family.md"


def supported_families() -> list[tuple[str, str]]:
    """(family name, transformer class name) of every registered adapter, by family name."""
    return sorted((adapter.family_name, cls.__name__) for cls, adapter in _ADAPTERS.items())


def adapter_for_class(class_name: str) -> "TransformerAdapter":
    """The adapter registered for a transformer class, by its name (no instance needed)."""
    for cls, adapter in _ADAPTERS.items():
        if cls.__name__ == class_name:
            return adapter
    raise UnsupportedModelError(f"no ecad adapter for {class_name}")


def get_adapter(model: Any) -> "TransformerAdapter":
    """The adapter for a transformer (or a pipeline's `.transformer`), by class (subclasses match)."""
    _, transformer = split_pipeline(model)
    for cls in type(transformer).__mro__:
        if cls in _ADAPTERS:
            return _ADAPTERS[cls]
    families = "; ".join(f"{name} ({cls})" for name, cls in supported_families())
    raise UnsupportedModelError(
        f"no ecad adapter for {type(transformer).__name__}. Supported families: {families}. "
        f"A DiT family is added in a few lines of data (its block groups and components): see {ADDING_A_FAMILY}"
    )


def linear_macs(linear: nn.Linear, tokens: int) -> int:
    """MACs of a linear layer applied to `tokens` rows (bias adds are not counted)."""
    return int(tokens) * linear.in_features * linear.out_features


def attention_matmul_macs(batch: int, heads: int, head_dim: int, q_len: int, kv_len: int) -> int:
    """MACs of softmax(QK^T)V: QK^T and AV, each q_len * kv_len * head_dim per head."""
    return 2 * batch * heads * q_len * kv_len * head_dim


class TransformerAdapter:
    """Interface; one subclass per transformer family. All MACs are per transformer call."""

    #: what users call the family (`python -m ecad.adapters` lists them)
    family_name: str = ""
    #: classifier-free guidance runs as one transformer call on [uncond; cond] rows (PixArt), so a
    #: schedule may reuse guidance (`ecad.hooks.guidance`); False where it is a second call or absent
    batched_guidance: bool = False
    #: a video family's frames axis (`recipe.Video`: temporal compression, default frames, frame
    #: rate); None for an image family
    video: Any = None

    def layout(self, transformer: nn.Module) -> BlockLayout:
        raise NotImplementedError

    def component_modules(self, transformer: nn.Module) -> list[list[nn.Module | None]]:
        """Modules whose raw output is cached, as [global block][component], in layout order
        (None where a block lacks a component its group has: it is never hooked)."""
        layout = self.layout(transformer)
        modules = []
        for group in layout.groups:
            for block in getattr(transformer, group.name):
                modules.append([getattr(block, name) for name in group.components])
        return modules

    def block_modules(self, transformer: nn.Module) -> list[nn.Module]:
        """The blocks themselves, in layout order (what a block skip replaces)."""
        return [block for group in self.layout(transformer).groups for block in getattr(transformer, group.name)]

    def residual_streams(self, group: str) -> tuple[str, ...]:
        """A block's residual-stream arguments, in the order the block returns them (one name: it
        returns a single tensor). Skipping the block adds its last delta to each of them."""
        raise NotImplementedError

    def num_tokens(self, transformer: nn.Module, *, height: int, width: int, vae_scale_factor: int) -> int:
        """Image tokens the transformer sees for an image of height x width pixels."""
        raise NotImplementedError

    def spatial_multiple(self, pipe: Any) -> int:
        """Image width and height must be multiples of this many pixels (VAE factor x patch)."""
        raise NotImplementedError

    def component_macs(
        self, transformer: nn.Module, *, height: int, width: int, batch_size: int, text_len: int,
        vae_scale_factor: int = 8, attention_matmuls: bool = True,
    ) -> np.ndarray:
        """int64 [num_blocks, num_components]: MACs of each component for one transformer call.

        `attention_matmuls=False` leaves out QK^T and AV (the ECAD paper's reference counts omit them)."""
        raise NotImplementedError

    def other_macs(
        self, transformer: nn.Module, *, height: int, width: int, batch_size: int, text_len: int,
        vae_scale_factor: int = 8,
    ) -> int:
        """MACs outside the cacheable components (embeddings, AdaLN, final layer) per call."""
        raise NotImplementedError

    # -- what the actions beyond recompute/reuse cost (see ecad.cost) ---------------------------
    def block_linear_macs(self, transformer: nn.Module, **shape) -> np.ndarray:
        """int64 [num_blocks]: MACs of linear layers inside a block but outside its components
        (AdaLN modulation); a skipped block saves them. Not part of `other_macs`."""
        return np.zeros(self.layout(transformer).num_blocks, dtype=np.int64)

    def block_elementwise_ops(self, transformer: nn.Module, **shape) -> np.ndarray:
        """int64 [num_blocks]: element-wise ops of a block's norms, modulation, gates, activations
        and residual adds, one MAC each; a skipped block saves them."""
        raise NotImplementedError

    def component_output_elements(self, transformer: nn.Module, **shape) -> np.ndarray:
        """int64 [num_blocks, num_components]: elements of each component's output (what a forecast
        extrapolates, a few element-wise ops each)."""
        raise NotImplementedError

    def block_output_elements(self, transformer: nn.Module, **shape) -> np.ndarray:
        """int64 [num_blocks]: elements of a block's residual streams (what a skip adds its delta to)."""
        raise NotImplementedError

    def text_len(self, pipe: Any) -> int:
        """Text tokens the transformer sees per prompt when called through `pipe` (prompts are padded)."""
        return int(self.pipeline_call_kwargs(pipe)["max_sequence_length"])

    def transformer_batch(self, pipe: Any, num_images: int, *, guidance_scale: float,
                          true_cfg: bool = False) -> tuple[int, int]:
        """(batch_size per transformer call, transformer calls per step) for `num_images` images."""
        return num_images, 1

    def pipeline_call_kwargs(self, pipe: Any) -> dict[str, Any]:
        """Extra keyword arguments for `pipe(...)` this family needs (e.g. PixArt binning off)."""
        return {}


def _tokenizer_max_length(tokenizer: Any, default: int) -> int:
    """A padded prompt length: the pipeline's default unless the tokenizer allows fewer tokens."""
    limit = getattr(tokenizer, "model_max_length", None)
    if isinstance(limit, int) and 0 < limit < default:
        return limit
    return default
