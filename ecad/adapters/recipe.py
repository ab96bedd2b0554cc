"""A transformer family as data: `Family` says what an adapter needs, `FamilyAdapter` does the rest.

Most DiT families differ only in names and in which tokens each module sees. A `Family` lists:

- its block groups (the transformer's `nn.ModuleList` attributes, in execution order), each block's
  cacheable components (`Component`: attribute name, the token rows it runs on, and for an
  attention its kind) and the block's residual streams (the arguments it returns, and their rows);
- how classifier-free guidance is run (`BATCHED`: one call on [uncond; cond] rows, so a schedule
  may reuse guidance; `TWO_CALLS`: a conditional then an unconditional call per step; `EMBEDDED`:
  guidance-distilled, one call, a second only for true CFG with a negative prompt);
- which token rows every layer outside the blocks runs on (`outside`: module path prefix -> rows);
- how latent pixels become tokens (patch, VAE factor, and for video the temporal compression and
  the pipeline's default frame count).

MACs then come from the modules themselves: every `nn.Linear` and convolution under a component
on the rows it runs on (an attention's `add_*` projections and `to_add_out` on the text rows, its
`to_k`/`to_v` on the rows it attends to), plus the attention matmuls; linears inside a block but
outside its components (AdaLN modulation) run on one row per sample; everything outside the
blocks on the rows `outside` names. A layer the recipe does not place raises, so a family whose
modules were renamed fails loudly instead of being miscounted. `tests/test_families.py` checks the
counts against torch's FLOP counter on every tiny family, and against the parameter count at full size.

    @register_family
    class WanAdapter(FamilyAdapter):
        family = Family(name="Wan 2.1", transformer_class=WanTransformer3DModel, groups=(...), ...)
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from fnmatch import fnmatchcase
from typing import Any, Callable, Mapping, Union

import numpy as np
from torch import nn

from ..schedule import BlockGroup, BlockLayout
from .base import TransformerAdapter, _tokenizer_max_length, attention_matmul_macs, register_adapter

# -- token rows --------------------------------------------------------------------------------
IMAGE = "image"  # latent tokens (every latent frame of a video)
TEXT = "text"  # the prompt tokens the transformer sees (the pipeline's padded length)
JOINT = "joint"  # text and image tokens in one sequence
SAMPLE = "sample"  # one row per sample: timestep and pooled embeddings, AdaLN modulation
ROWS = (IMAGE, TEXT, JOINT, SAMPLE)

# -- attention kinds -----------------------------------------------------------------------------
SELF = "self"  # queries, keys and values from the component's own rows
CROSS = "cross"  # keys and values from the text rows
JOINT_ATTENTION = "joint"  # MMDiT: image rows through to_*, text rows through add_*, one sequence
LINEAR = "linear"  # self-attention with a linear kernel (Sana): relu(K)^T V, then Q times that
ATTENTION_KINDS = (SELF, CROSS, JOINT_ATTENTION, LINEAR)

# -- guidance --------------------------------------------------------------------------------------
BATCHED = "batched"
TWO_CALLS = "two_calls"
EMBEDDED = "embedded"
GUIDANCE = (BATCHED, TWO_CALLS, EMBEDDED)

#: the rows a layer outside the blocks runs on: one of ROWS, or a function of the transformer giving
#: a fixed number of rows per sample (Chroma's modulation approximator: one row per modulation vector)
OutsideRows = Union[str, Callable[[nn.Module], int]]

# Element-wise ops of a block per element of a component's output, outside the component: its
# input norm (~5), the AdaLN modulation x * (1 + scale) + shift (2), the gate (1) and the
# residual add (1). An estimate (the hand-written PixArt and FLUX adapters count per family); a
# fitted cost model absorbs the difference.
BLOCK_OPS_PER_OUTPUT = 9


@dataclass(frozen=True)
class Component:
    """A cacheable module of a block: its attribute name, the rows it runs on (an attention: its
    queries), and `attention` (None for an MLP or a projection). `optional`: some blocks lack it
    (SD3's last block has no `ff_context`); a component no block has is left out of the layout."""

    name: str
    rows: str = IMAGE
    attention: str | None = None
    optional: bool = False

    def __post_init__(self):
        if self.rows not in ROWS[:3]:
            raise ValueError(f"component {self.name!r}: rows must be one of {ROWS[:3]}, got {self.rows!r}")
        if self.attention is not None and self.attention not in ATTENTION_KINDS:
            raise ValueError(f"component {self.name!r}: attention must be one of {ATTENTION_KINDS}")


def mlp(name: str, rows: str = IMAGE, *, optional: bool = False) -> Component:
    return Component(name, rows, None, optional)


def attention(name: str, rows: str = IMAGE, kind: str = SELF, *, optional: bool = False) -> Component:
    return Component(name, rows, kind, optional)


@dataclass(frozen=True)
class Group:
    """A run of blocks (`transformer.<name>[i]`): their components, and their residual streams as
    (argument name, rows), in the order the block returns them (one stream: it returns a tensor)."""

    name: str
    components: tuple[Component, ...]
    streams: tuple[tuple[str, str], ...] = (("hidden_states", IMAGE),)


@dataclass(frozen=True)
class Video:
    """The frames axis: latent frames = (frames - 1) // temporal_compression + 1, each of
    (height / VAE factor / patch) x (width / VAE factor / patch) tokens."""

    temporal_compression: int
    default_frames: int  # the pipeline's default `num_frames`
    fps: int = 16  # frames per second its videos play at (the rate diffusers' pipeline docs export them at)


@dataclass(frozen=True)
class Family:
    name: str  # what users call it, e.g. "SD3 / SD3.5"
    transformer_class: type
    groups: tuple[Group, ...]
    guidance: str
    outside: Mapping[str, OutsideRows]  # module path pattern (outside the blocks; `*` matches a
    # path part) -> rows its layers run on; the longest matching pattern wins
    max_sequence_length: int  # the pipeline's default padded prompt length (`max_sequence_length`)
    tokenizer: str = "tokenizer"  # the pipeline attribute whose tokenizer pads the prompt
    patch: int | None = None  # latent pixels per token side; None: the config's `patch_size`
    vae_scale_factor: int | None = None  # fixed, where the pipeline has no `vae_scale_factor` attribute
    video: Video | None = None
    architectures: tuple[str, ...] = ()  # published configs in ecad/configs (the first is the default)
    pipelines: tuple[str, ...] = ()  # diffusers pipeline classes known to use this transformer
    call_kwargs: Mapping[str, Any] = field(default_factory=dict)  # extra `pipe(...)` kwargs ecad passes

    def __post_init__(self):
        if self.guidance not in GUIDANCE:
            raise ValueError(f"family {self.name!r}: guidance must be one of {GUIDANCE}")
        for pattern, rows in self.outside.items():
            if not callable(rows) and rows not in ROWS:
                raise ValueError(f"family {self.name!r}: outside[{pattern!r}] must be one of {ROWS} or a function")


def register_family(adapter_cls: type) -> type:
    """Class decorator: register a `FamilyAdapter` subclass for its family's transformer class."""
    return register_adapter(adapter_cls.family.transformer_class)(adapter_cls)


def layer_macs(layer: nn.Module, rows: int) -> int:
    """MACs of a linear layer on `rows` rows, or of a convolution with `rows` output positions
    (a patchify convolution, stride = kernel, has one per token; Sana's 'same' convolutions too)."""
    if isinstance(layer, nn.Linear):
        return int(rows) * layer.in_features * layer.out_features
    return int(rows) * (layer.in_channels // layer.groups) * math.prod(layer.kernel_size) * layer.out_channels


def _weighted_layers(module: nn.Module) -> list[tuple[str, nn.Module]]:
    """(path, layer) of every linear layer and convolution under `module` (itself included)."""
    return [(name, m) for name, m in module.named_modules() if isinstance(m, (nn.Linear, nn.modules.conv._ConvNd))]


class FamilyAdapter(TransformerAdapter):
    """A `TransformerAdapter` worked out from `family`. Subclasses set `family`; a few override a
    method where the data cannot say it (SD3's text tokens come from two encoders)."""

    family: Family

    @property
    def family_name(self) -> str:  # type: ignore[override]
        return self.family.name

    @property
    def batched_guidance(self) -> bool:  # type: ignore[override]
        return self.family.guidance == BATCHED

    @property
    def video(self) -> Video | None:  # type: ignore[override]
        return self.family.video

    # -- layout --------------------------------------------------------------------------------
    def _components(self, transformer: nn.Module, group: Group) -> tuple[Component, ...]:
        """The group's components that at least one of its blocks has."""
        blocks = getattr(transformer, group.name)
        kept = []
        for c in group.components:
            present = [getattr(b, c.name, None) is not None for b in blocks]
            if not all(present) and not c.optional:
                raise AttributeError(f"{type(transformer).__name__}.{group.name}: a block has no {c.name!r}")
            if any(present):
                kept.append(c)
        return tuple(kept)

    def layout(self, transformer: nn.Module) -> BlockLayout:
        return BlockLayout(tuple(
            BlockGroup(g.name, len(getattr(transformer, g.name)), tuple(c.name for c in self._components(transformer, g)))
            for g in self.family.groups))

    def _blocks(self, transformer: nn.Module):
        """(group, its kept components, block) for every block, in layout order."""
        for group in self.family.groups:
            components = self._components(transformer, group)
            for block in getattr(transformer, group.name):
                yield group, components, block

    def component_modules(self, transformer: nn.Module) -> list[list[nn.Module | None]]:
        """As the base, with None where a block lacks an optional component (never hooked)."""
        return [[getattr(block, c.name, None) for c in components] for _, components, block in self._blocks(transformer)]

    def residual_streams(self, group: str) -> tuple[str, ...]:
        return tuple(name for name, _ in self._group(group).streams)

    def _group(self, name: str) -> Group:
        for group in self.family.groups:
            if group.name == name:
                return group
        raise KeyError(f"{self.family.name} has no block group {name!r}")

    # -- tokens --------------------------------------------------------------------------------
    def _vae_scale_factor(self, vae_scale_factor: int) -> int:
        return self.family.vae_scale_factor or int(vae_scale_factor)

    def _patch(self, transformer: nn.Module) -> tuple[int, int, int]:
        """(frames, height, width) of latent per token."""
        if self.family.patch is not None:
            return 1, self.family.patch, self.family.patch
        p = transformer.config.patch_size
        if isinstance(p, (tuple, list)):  # Wan: (t, h, w)
            return int(p[0]), int(p[1]), int(p[2])
        return int(transformer.config.get("patch_size_t", 1) or 1), int(p), int(p)

    def latent_frames(self, num_frames: int | None = None) -> int:
        """Latent frames of a video of `num_frames` frames (default: the pipeline's); 1 for images."""
        video = self.family.video
        if video is None:
            return 1
        frames = video.default_frames if num_frames is None else int(num_frames)
        return (frames - 1) // video.temporal_compression + 1

    def num_tokens(self, transformer, *, height, width, vae_scale_factor=8, num_frames=None) -> int:
        vsf = self._vae_scale_factor(vae_scale_factor)
        pt, ph, pw = self._patch(transformer)
        return (self.latent_frames(num_frames) // pt) * (height // vsf // ph) * (width // vsf // pw)

    def spatial_multiple(self, pipe: Any) -> int:
        vsf = self.family.vae_scale_factor or int(getattr(pipe, "vae_scale_factor", None)
                                                 or getattr(pipe, "vae_scale_factor_spatial", 8))
        return vsf * self._patch(pipe.transformer)[1]

    def _rows(self, transformer, height, width, batch_size, text_len, vae_scale_factor=8, num_frames=None, **_):
        n = self.num_tokens(transformer, height=height, width=width, vae_scale_factor=vae_scale_factor,
                            num_frames=num_frames)
        return {IMAGE: n, TEXT: int(text_len), JOINT: n + int(text_len), SAMPLE: 1}, int(batch_size)

    # -- MACs ----------------------------------------------------------------------------------
    def _component_macs(self, module: nn.Module, c: Component, rows: dict[str, int], batch: int,
                        matmuls: bool) -> int:
        q = rows[c.rows]
        if c.attention is None:
            return sum(layer_macs(layer, batch * q) for _, layer in _weighted_layers(module))
        kv = rows[TEXT] if c.attention == CROSS else q
        text = rows[TEXT] if c.attention == JOINT_ATTENTION else 0
        macs = 0
        for name, layer in _weighted_layers(module):
            if name.startswith(("add_", "to_add_out")):
                macs += layer_macs(layer, batch * text)
            elif name in ("to_k", "to_v"):
                macs += layer_macs(layer, batch * kv)
            else:
                macs += layer_macs(layer, batch * q)
        if matmuls:
            inner = module.to_q.out_features
            if c.attention == LINEAR:
                head_dim = inner // module.heads
                macs += 2 * batch * q * inner * (head_dim + 1)  # V (padded with ones) K^T, then times Q
            else:
                macs += attention_matmul_macs(batch, 1, inner, q + text, kv + text)
        return macs

    def component_macs(self, transformer, *, height, width, batch_size, text_len, vae_scale_factor=8,
                       attention_matmuls=True, num_frames=None) -> np.ndarray:
        rows, batch = self._rows(transformer, height, width, batch_size, text_len, vae_scale_factor, num_frames)
        out = []
        for _, components, block in self._blocks(transformer):
            out.append([0 if getattr(block, c.name, None) is None
                        else self._component_macs(getattr(block, c.name), c, rows, batch, attention_matmuls)
                        for c in components])
        return np.array(out, dtype=np.int64)

    def _outside_rows(self, transformer: nn.Module, path: str, rows: dict[str, int]) -> int:
        matches = [p for p in self.family.outside if fnmatchcase(path, p) or fnmatchcase(path, p + ".*")]
        if not matches:
            raise KeyError(f"{self.family.name}: the recipe does not say which rows {path!r} runs on "
                           "(add its path to Family.outside)")
        which = self.family.outside[max(matches, key=len)]
        return which(transformer) if callable(which) else rows[which]

    def other_macs(self, transformer, *, height, width, batch_size, text_len, vae_scale_factor=8,
                   num_frames=None) -> int:
        rows, batch = self._rows(transformer, height, width, batch_size, text_len, vae_scale_factor, num_frames)
        groups = tuple(g.name for g in self.family.groups)
        macs = 0
        for path, layer in _weighted_layers(transformer):
            if path.split(".", 1)[0] in groups:
                continue
            macs += layer_macs(layer, batch * self._outside_rows(transformer, path, rows))
        return int(macs)

    def block_linear_macs(self, transformer, *, batch_size, **shape) -> np.ndarray:
        """Linears inside a block but outside its components: AdaLN modulation, one row per sample."""
        out = []
        for _, components, block in self._blocks(transformer):
            inside = {id(m) for c in components if getattr(block, c.name, None) is not None
                      for m in getattr(block, c.name).modules()}
            out.append(sum(layer_macs(layer, batch_size) for _, layer in _weighted_layers(block) if id(layer) not in inside))
        return np.array(out, dtype=np.int64)

    # -- element-wise work (forecasts, skips, the blocks' norms and gates) -----------------------
    @staticmethod
    def _width(block: nn.Module, components: tuple[Component, ...]) -> int:
        """The residual width: the input width of the block's first attention's queries."""
        for c in components:
            module = getattr(block, c.name, None)
            if c.attention is not None and module is not None:
                return module.to_q.in_features
        raise ValueError("a family block needs an attention component to tell its width")

    def component_output_elements(self, transformer, **shape) -> np.ndarray:
        rows, batch = self._rows(transformer, **shape)
        out = []
        for _, components, block in self._blocks(transformer):
            width = self._width(block, components)
            row = []
            for c in components:
                module = getattr(block, c.name, None)
                if module is None:
                    row.append(0)
                elif c.attention == JOINT_ATTENTION:
                    row.append(batch * (rows[c.rows] + rows[TEXT]) * width)
                else:
                    features = module.out_features if isinstance(module, nn.Linear) else width
                    row.append(batch * rows[c.rows] * features)
            out.append(row)
        return np.array(out, dtype=np.int64)

    def block_output_elements(self, transformer, **shape) -> np.ndarray:
        rows, batch = self._rows(transformer, **shape)
        return np.array([batch * self._width(block, components) * sum(rows[r] for _, r in group.streams)
                         for group, components, block in self._blocks(transformer)], dtype=np.int64)

    def block_elementwise_ops(self, transformer, **shape) -> np.ndarray:
        return BLOCK_OPS_PER_OUTPUT * self.component_output_elements(transformer, **shape).sum(axis=1)

    # -- the pipeline ----------------------------------------------------------------------------
    def transformer_batch(self, pipe, num_images, *, guidance_scale, true_cfg=False):
        cfg = guidance_scale > 1.0
        if self.family.guidance == BATCHED:
            return (2 * num_images if cfg else num_images), 1
        if self.family.guidance == TWO_CALLS:
            return num_images, (2 if cfg else 1)
        return num_images, (2 if true_cfg else 1)

    def pipeline_call_kwargs(self, pipe: Any) -> dict[str, Any]:
        tokenizer = getattr(pipe, self.family.tokenizer, None)
        return {**self.family.call_kwargs,
                "max_sequence_length": _tokenizer_max_length(tokenizer, self.family.max_sequence_length)}
