"""Cache schedules: which transformer components to recompute at which denoising step.

A `CacheSchedule` is a boolean array ``mask[step, block, component]``; ``True`` means recompute
the component's output at that step, ``False`` means reuse the output cached at the last step
where it was recomputed (ECAD, Sec. 3). Blocks are numbered across the groups of a
`BlockLayout` (FLUX: 19 double blocks, then 38 single blocks).

The JSON form is compact and versioned (bits packed with `numpy.packbits`, base64):

    {"version": 1, "shape": [20, 28, 3],
     "layout": {"groups": [{"name": "transformer_blocks", "num_blocks": 28,
                            "components": ["attn1", "attn2", "ff"]}]},
     "bits": "..."}
"""

from __future__ import annotations

import base64
import hashlib
import json
from dataclasses import dataclass
from typing import Any

import numpy as np

SCHEDULE_FORMAT_VERSION = 1


class ScheduleError(ValueError):
    """A schedule is malformed or does not fit the model/pipeline it is used with."""


@dataclass(frozen=True)
class BlockGroup:
    """A run of identical transformer blocks, e.g. ``("transformer_blocks", 28, ("attn1", "attn2", "ff"))``."""

    name: str
    num_blocks: int
    components: tuple[str, ...]

    def __post_init__(self):
        object.__setattr__(self, "components", tuple(self.components))
        if self.num_blocks < 1 or not self.components:
            raise ScheduleError(f"block group {self.name!r} needs >= 1 block and >= 1 component")


@dataclass(frozen=True)
class BlockLayout:
    """The blocks of a transformer, in execution order; every group has the same number of components."""

    groups: tuple[BlockGroup, ...]

    def __post_init__(self):
        object.__setattr__(self, "groups", tuple(self.groups))
        if not self.groups:
            raise ScheduleError("a block layout needs at least one group")
        counts = {len(g.components) for g in self.groups}
        if len(counts) != 1:
            raise ScheduleError(
                "every block group must have the same number of components, got "
                + ", ".join(f"{g.name}: {list(g.components)}" for g in self.groups)
            )

    @property
    def num_blocks(self) -> int:
        return sum(g.num_blocks for g in self.groups)

    @property
    def num_components(self) -> int:
        return len(self.groups[0].components)

    def group_of(self, block: int) -> tuple[BlockGroup, int]:
        """The group holding global block index `block`, and the index inside that group."""
        if not 0 <= block < self.num_blocks:
            raise IndexError(f"block {block} out of range [0, {self.num_blocks})")
        for group in self.groups:
            if block < group.num_blocks:
                return group, block
            block -= group.num_blocks
        raise AssertionError("unreachable")

    def component_names(self, block: int) -> tuple[str, ...]:
        return self.group_of(block)[0].components

    def block_ranges(self) -> dict[str, range]:
        """Global block indices of each group, e.g. ``{"transformer_blocks": range(0, 19), ...}``."""
        ranges, start = {}, 0
        for g in self.groups:
            ranges[g.name] = range(start, start + g.num_blocks)
            start += g.num_blocks
        return ranges

    def to_dict(self) -> dict[str, Any]:
        return {
            "groups": [
                {"name": g.name, "num_blocks": g.num_blocks, "components": list(g.components)}
                for g in self.groups
            ]
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "BlockLayout":
        try:
            return cls(
                tuple(
                    BlockGroup(str(g["name"]), int(g["num_blocks"]), tuple(str(c) for c in g["components"]))
                    for g in data["groups"]
                )
            )
        except (KeyError, TypeError) as e:
            raise ScheduleError(f"malformed block layout {data!r}: {e}") from e

    def __str__(self) -> str:
        return " + ".join(f"{g.name}[{g.num_blocks}]x({', '.join(g.components)})" for g in self.groups)


class CacheSchedule:
    """Immutable bool mask ``[num_steps, num_blocks, num_components]``; True = recompute.

    Construction does not validate (so that a bad schedule can be inspected); call `validate()`
    or use `checked()`. Equality and hashing are by layout and mask.
    """

    __slots__ = ("_mask", "_layout", "_hash")

    def __init__(self, mask: np.ndarray, layout: BlockLayout):
        mask = np.array(mask, dtype=bool, copy=True)
        mask.setflags(write=False)
        self._mask = mask
        self._layout = layout
        self._hash: str | None = None

    # -- constructors -------------------------------------------------------------------------
    @classmethod
    def full(cls, layout: BlockLayout, num_steps: int) -> "CacheSchedule":
        """Recompute everything at every step (no caching)."""
        return cls(np.ones((num_steps, layout.num_blocks, layout.num_components), bool), layout)

    @classmethod
    def from_step_mask(cls, layout: BlockLayout, steps: np.ndarray) -> "CacheSchedule":
        """Recompute all components at the steps where ``steps`` (bool [num_steps]) is True."""
        steps = np.asarray(steps, dtype=bool)
        mask = np.broadcast_to(steps[:, None, None], (len(steps), layout.num_blocks, layout.num_components))
        return cls(mask, layout)

    def checked(self) -> "CacheSchedule":
        self.validate()
        return self

    # -- properties ---------------------------------------------------------------------------
    @property
    def mask(self) -> np.ndarray:
        """Read-only bool array [num_steps, num_blocks, num_components]."""
        return self._mask

    @property
    def layout(self) -> BlockLayout:
        return self._layout

    @property
    def num_steps(self) -> int:
        return int(self._mask.shape[0])

    @property
    def num_blocks(self) -> int:
        return int(self._mask.shape[1])

    @property
    def num_components(self) -> int:
        return int(self._mask.shape[2])

    @property
    def shape(self) -> tuple[int, int, int]:
        return tuple(int(s) for s in self._mask.shape)

    @property
    def recompute_fraction(self) -> float:
        return float(self._mask.mean()) if self._mask.size else 1.0

    @property
    def hash(self) -> str:
        """sha256 hex of shape, layout and packed bits: a stable id (memo key, bank id)."""
        if self._hash is None:
            payload = json.dumps(
                {"shape": list(self.shape), "layout": self._layout.to_dict()}, sort_keys=True
            ).encode() + np.packbits(self._mask.ravel()).tobytes()
            self._hash = hashlib.sha256(payload).hexdigest()
        return self._hash

    # -- validation ---------------------------------------------------------------------------
    def validate(self, layout: BlockLayout | None = None, num_steps: int | None = None) -> None:
        """Raise `ScheduleError` unless the schedule is well formed (and fits `layout`/`num_steps`).

        Step 0 must recompute everything: nothing is cached yet. This is reported, never fixed.
        """
        m = self._mask
        if m.ndim != 3:
            raise ScheduleError(f"schedule mask must be 3-D [steps, blocks, components], got shape {m.shape}")
        if m.shape[0] < 1:
            raise ScheduleError("schedule has no steps")
        expected = (self._layout.num_blocks, self._layout.num_components)
        if tuple(m.shape[1:]) != expected:
            raise ScheduleError(
                f"schedule mask shape {m.shape} does not match its layout ({self._layout}): "
                f"expected [steps, {expected[0]}, {expected[1]}]"
            )
        if layout is not None and layout != self._layout:
            raise ScheduleError(
                f"schedule was made for layout {self._layout}, but the model has {layout}"
            )
        if num_steps is not None and num_steps != m.shape[0]:
            raise ScheduleError(
                f"schedule has {m.shape[0]} steps but the pipeline runs {num_steps}; "
                f"use schedule.resample({num_steps})"
            )
        if not m[0].all():
            blocks, comps = np.nonzero(~m[0])
            b, c = int(blocks[0]), int(comps[0])
            raise ScheduleError(
                f"step 0 must recompute every component (nothing is cached yet), but {int((~m[0]).sum())} "
                f"entries reuse, e.g. block {b} component {self._layout.component_names(b)[c]!r}"
            )

    # -- transforms ---------------------------------------------------------------------------
    def resample(self, num_steps: int) -> "CacheSchedule":
        """Map to `num_steps` steps: step i takes the row of the nearest source step in normalized time.

        Time is normalized as i / (n - 1). Step 0 maps to step 0, so it stays all-recompute.
        """
        if num_steps < 1:
            raise ScheduleError(f"num_steps must be >= 1, got {num_steps}")
        src = self.num_steps
        if num_steps == src:
            return self
        if num_steps == 1 or src == 1:
            idx = np.zeros(num_steps, dtype=int)
        else:
            t = np.arange(num_steps) / (num_steps - 1)
            idx = np.rint(t * (src - 1)).astype(int)
        return CacheSchedule(self._mask[idx], self._layout)

    def with_mask(self, mask: np.ndarray) -> "CacheSchedule":
        return CacheSchedule(mask, self._layout)

    # -- serialization ------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return {
            "version": SCHEDULE_FORMAT_VERSION,
            "shape": list(self.shape),
            "layout": self._layout.to_dict(),
            "bits": base64.b64encode(np.packbits(self._mask.ravel()).tobytes()).decode("ascii"),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "CacheSchedule":
        if not isinstance(data, dict):
            raise ScheduleError(f"a schedule must be a JSON object, got {type(data).__name__}")
        version = data.get("version")
        if version != SCHEDULE_FORMAT_VERSION:
            raise ScheduleError(
                f"unsupported schedule format version {version!r} (this ecad reads {SCHEDULE_FORMAT_VERSION})"
            )
        try:
            shape = tuple(int(s) for s in data["shape"])
            layout = BlockLayout.from_dict(data["layout"])
            raw = base64.b64decode(data["bits"], validate=True)
        except (KeyError, TypeError, ValueError) as e:
            if isinstance(e, ScheduleError):
                raise
            raise ScheduleError(f"malformed schedule JSON: {e!r}") from e
        if len(shape) != 3 or min(shape) < 1:
            raise ScheduleError(f"schedule shape must be 3 positive ints, got {list(shape)}")
        n = int(np.prod(shape))
        bits = np.unpackbits(np.frombuffer(raw, dtype=np.uint8))
        if len(bits) != (n + 7) // 8 * 8:
            raise ScheduleError(f"schedule bits hold {len(bits)} bits, shape {list(shape)} needs {n}")
        return cls(bits[:n].astype(bool).reshape(shape), layout)

    def to_json(self, **kwargs) -> str:
        return json.dumps(self.to_dict(), **kwargs)

    @classmethod
    def from_json(cls, text: str) -> "CacheSchedule":
        try:
            data = json.loads(text)
        except json.JSONDecodeError as e:
            raise ScheduleError(f"schedule is not valid JSON: {e}") from e
        return cls.from_dict(data)

    # -- dunder -------------------------------------------------------------------------------
    def __eq__(self, other: object) -> bool:
        if not isinstance(other, CacheSchedule):
            return NotImplemented
        return self._layout == other._layout and np.array_equal(self._mask, other._mask)

    def __hash__(self) -> int:
        return hash(self.hash)

    def __repr__(self) -> str:
        return (
            f"CacheSchedule(steps={self.num_steps}, layout={self._layout}, "
            f"recompute={self.recompute_fraction:.3f}, hash={self.hash[:12]})"
        )
