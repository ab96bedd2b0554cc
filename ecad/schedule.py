"""Cache schedules: what each transformer component does at each denoising step.

A `CacheSchedule` holds an int8 action tensor ``actions[step, block, component]`` and a bool
block-skip plane ``skip[step, block]``. Actions (ECAD, Sec. 3, plus forecasting):

- ``RECOMPUTE`` (1): run the component;
- ``REUSE`` (0): return its output from the last step where it was recomputed;
- ``FORECAST`` (2): extrapolate to first order from its last two recomputed outputs, using the
  step distance (TaylorSeer-like);
- ``skip[step, block]``: run nothing inside the block; add the block's residual delta from the
  last step where it ran (FirstBlockCache-like, per block). The component actions under a skipped
  block are stored as REUSE (they do not run).
- ``guidance_reuse[step]`` (classifier-free guidance run as one batch of [uncond; cond] rows, as
  PixArt does): run the transformer on the conditional rows only and predict the unconditional
  output as the conditional one plus the difference (uncond - cond) of the last step that ran
  both (FasterCache-like, without its frequency split). The unconditional rows then live only on
  the steps that run them: their cached outputs come from those steps.

``mask`` (bool, True = recompute, the v1 view) is ``actions == RECOMPUTE`` outside skipped blocks.
Blocks are numbered across the groups of a `BlockLayout` (FLUX: 19 double blocks, then 38 single).

The JSON form is compact and versioned. A schedule with only recompute/reuse is written as
version 1 (bits packed with `numpy.packbits`, base64), exactly as before actions existed, so v1
files, banks and hashes are unchanged:

    {"version": 1, "shape": [20, 28, 3],
     "layout": {"groups": [{"name": "transformer_blocks", "num_blocks": 28,
                            "components": ["attn1", "attn2", "ff"]}]},
     "bits": "..."}

Any other schedule is version 2: ``"actions"`` packs two bits per action (high bit first) and
``"skip"`` one bit per (step, block), each with `numpy.packbits` and base64. A schedule that
reuses guidance at some step is version 3: version 2 plus ``"guidance"``, one bit per step (older
ecad refuses it rather than silently running both branches).
"""

from __future__ import annotations

import base64
import hashlib
import json
from dataclasses import dataclass
from typing import Any

import numpy as np

SCHEDULE_FORMAT_VERSION = 3  # the newest version this ecad writes; it reads 1, 2 and 3
READABLE_VERSIONS = (1, 2, 3)

REUSE, RECOMPUTE, FORECAST = 0, 1, 2
ACTION_NAMES = {REUSE: "reuse", RECOMPUTE: "recompute", FORECAST: "forecast"}


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


def _pack_bits(bits: np.ndarray) -> str:
    return base64.b64encode(np.packbits(bits.ravel().astype(bool)).tobytes()).decode("ascii")


def _unpack_bits(text: Any, count: int, what: str) -> np.ndarray:
    try:
        raw = base64.b64decode(text, validate=True)
    except (TypeError, ValueError) as e:
        raise ScheduleError(f"malformed schedule JSON: {what} is not base64 ({e})") from e
    bits = np.unpackbits(np.frombuffer(raw, dtype=np.uint8))
    if len(bits) != (count + 7) // 8 * 8:
        raise ScheduleError(f"schedule {what} hold {len(bits)} bits, {count} are needed")
    return bits[:count]


class CacheSchedule:
    """Immutable actions ``[num_steps, num_blocks, num_components]`` (int8) + skip ``[num_steps, num_blocks]``
    + guidance reuse ``[num_steps]``.

    ``CacheSchedule(mask, layout)`` builds a recompute/reuse schedule from a bool mask (True =
    recompute), as in format v1; `from_actions` builds any schedule. Construction does not
    validate (so that a bad schedule can be inspected); call `validate()`. Equality and hashing
    are by layout, actions, skip plane and guidance reuse.
    """

    __slots__ = ("_actions", "_skip", "_mask", "_guidance", "_layout", "_hash")

    def __init__(self, mask: np.ndarray, layout: BlockLayout):
        mask = np.array(mask, dtype=bool, copy=True)
        self._set(mask.astype(np.int8), None, layout)

    def _set(self, actions: np.ndarray, skip: np.ndarray | None, layout: BlockLayout,
             guidance: np.ndarray | None = None) -> None:
        if actions.ndim == 3:
            if skip is None:
                skip = np.zeros(actions.shape[:2], bool)
            actions[skip] = REUSE  # canonical: nothing runs under a skipped block
            mask = (actions == RECOMPUTE) & ~skip[:, :, None]
        else:  # malformed; `validate` says why
            skip = np.zeros(actions.shape[:2], bool) if skip is None else skip
            mask = actions == RECOMPUTE
        if guidance is None:
            guidance = np.zeros(actions.shape[:1], bool)
        for a in (actions, skip, mask, guidance):
            a.setflags(write=False)
        self._actions, self._skip, self._mask, self._guidance = actions, skip, mask, guidance
        self._layout = layout
        self._hash: str | None = None

    # -- constructors -------------------------------------------------------------------------
    @classmethod
    def from_actions(cls, actions: np.ndarray, layout: BlockLayout, skip: np.ndarray | None = None,
                     guidance: np.ndarray | None = None) -> "CacheSchedule":
        """A schedule from action codes (REUSE / RECOMPUTE / FORECAST), an optional skip plane and
        optional guidance-reuse steps (bool [steps])."""
        actions = np.asarray(actions)
        if actions.dtype == bool or not np.issubdtype(actions.dtype, np.integer):
            raise ScheduleError(f"actions must be integer codes {dict(ACTION_NAMES)}, got dtype {actions.dtype}")
        self = cls.__new__(cls)
        skip_arr = None if skip is None else np.array(skip, dtype=bool, copy=True)
        if skip_arr is not None and skip_arr.shape != actions.shape[:2]:
            raise ScheduleError(f"skip plane shape {skip_arr.shape} must be [steps, blocks] = {list(actions.shape[:2])}")
        guidance_arr = None if guidance is None else np.array(guidance, dtype=bool, copy=True)
        if guidance_arr is not None and guidance_arr.shape != actions.shape[:1]:
            raise ScheduleError(f"guidance reuse shape {guidance_arr.shape} must be [steps] = {list(actions.shape[:1])}")
        self._set(np.array(actions, dtype=np.int8, copy=True), skip_arr, layout, guidance_arr)
        return self

    @classmethod
    def repaired(cls, actions: np.ndarray, layout: BlockLayout, skip: np.ndarray | None = None,
                 guidance: np.ndarray | None = None) -> "CacheSchedule":
        """The nearest possible schedule: step 0 recomputes everything, skips nothing and runs
        both guidance branches, and a
        forecast without two earlier recomputed outputs becomes a reuse. For generators (a genome,
        a random draw) that must always give a valid schedule; files are validated, never repaired."""
        actions = np.array(actions, dtype=np.int8, copy=True)
        skip = np.zeros(actions.shape[:2], bool) if skip is None else np.array(skip, dtype=bool, copy=True)
        guidance = np.zeros(actions.shape[:1], bool) if guidance is None else np.array(guidance, dtype=bool, copy=True)
        actions[0], skip[0], guidance[0] = RECOMPUTE, False, False
        computed = (actions == RECOMPUTE) & ~skip[:, :, None]
        before = np.cumsum(computed, axis=0) - computed
        actions[(actions == FORECAST) & (before < 2)] = REUSE
        return cls.from_actions(actions, layout, skip, guidance)

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

    # -- properties ---------------------------------------------------------------------------
    @property
    def mask(self) -> np.ndarray:
        """Read-only bool array [num_steps, num_blocks, num_components]: True where a component runs."""
        return self._mask

    @property
    def actions(self) -> np.ndarray:
        """Read-only int8 array [num_steps, num_blocks, num_components] of REUSE / RECOMPUTE / FORECAST."""
        return self._actions

    @property
    def skip(self) -> np.ndarray:
        """Read-only bool array [num_steps, num_blocks]: True where the whole block is skipped."""
        return self._skip

    @property
    def guidance_reuse(self) -> np.ndarray:
        """Read-only bool array [num_steps]: True where only the conditional rows run (see the module doc)."""
        return self._guidance

    @property
    def is_reuse_only(self) -> bool:
        """Only recompute and reuse (a format-v1 schedule)."""
        return not self._skip.any() and not (self._actions == FORECAST).any() and not self._guidance.any()

    @property
    def layout(self) -> BlockLayout:
        return self._layout

    @property
    def num_steps(self) -> int:
        return int(self._actions.shape[0])

    @property
    def num_blocks(self) -> int:
        return int(self._actions.shape[1])

    @property
    def num_components(self) -> int:
        return int(self._actions.shape[2])

    @property
    def shape(self) -> tuple[int, int, int]:
        return tuple(int(s) for s in self._actions.shape)

    @property
    def recompute_fraction(self) -> float:
        return float(self._mask.mean()) if self._mask.size else 1.0

    @property
    def hash(self) -> str:
        """sha256 hex: a stable id (memo key, bank id). Reuse-only schedules keep their v1 hash."""
        if self._hash is None:
            header = {"shape": list(self.shape), "layout": self._layout.to_dict()}
            if self.is_reuse_only:
                body = np.packbits(self._mask.ravel()).tobytes()
            else:
                header["version"] = 2
                body = self._actions.tobytes() + np.packbits(self._skip.ravel()).tobytes()
                if self._guidance.any():  # schedules without it keep their v2 hash
                    header["version"] = 3
                    body += np.packbits(self._guidance).tobytes()
            self._hash = hashlib.sha256(json.dumps(header, sort_keys=True).encode() + body).hexdigest()
        return self._hash

    # -- validation ---------------------------------------------------------------------------
    def _position(self, step: int, block: int, component: int | None = None) -> str:
        where = f"step {step} block {block}"
        if component is not None:
            where += f" component {self._layout.component_names(block)[component]!r}"
        return where

    def validate(self, layout: BlockLayout | None = None, num_steps: int | None = None) -> None:
        """Raise `ScheduleError` unless the schedule is well formed (and fits `layout`/`num_steps`).

        Impossible actions are reported with their position, never fixed: step 0 must recompute
        everything and run both guidance branches (nothing is cached yet), a forecast needs two
        earlier recomputed outputs of its component, a skipped block needs an earlier step where
        the block ran.
        """
        a = self._actions
        if a.ndim != 3:
            raise ScheduleError(f"schedule actions must be 3-D [steps, blocks, components], got shape {a.shape}")
        if a.shape[0] < 1:
            raise ScheduleError("schedule has no steps")
        expected = (self._layout.num_blocks, self._layout.num_components)
        if tuple(a.shape[1:]) != expected:
            raise ScheduleError(
                f"schedule shape {a.shape} does not match its layout ({self._layout}): "
                f"expected [steps, {expected[0]}, {expected[1]}]"
            )
        if layout is not None and layout != self._layout:
            raise ScheduleError(f"schedule was made for layout {self._layout}, but the model has {layout}")
        if num_steps is not None and num_steps != a.shape[0]:
            raise ScheduleError(
                f"schedule has {a.shape[0]} steps but the pipeline runs {num_steps}; use schedule.resample({num_steps})"
            )
        unknown = ~np.isin(a, list(ACTION_NAMES))
        if unknown.any():
            s, b, c = (int(i[0]) for i in np.nonzero(unknown))
            raise ScheduleError(f"unknown action code {int(a[s, b, c])} at {self._position(s, b, c)}; "
                                f"codes are {dict(ACTION_NAMES)}")
        if self._skip[0].any():
            b = int(np.flatnonzero(self._skip[0])[0])
            raise ScheduleError(f"{self._position(0, b)} is skipped, but step 0 must run every block "
                                "(there is no residual delta to reuse yet)")
        if not self._mask[0].all():
            blocks, comps = np.nonzero(~self._mask[0])
            b, c = int(blocks[0]), int(comps[0])
            raise ScheduleError(
                f"step 0 must recompute every component (nothing is cached yet), but {int((~self._mask[0]).sum())} "
                f"entries do not, e.g. {self._position(0, b, c)} ({ACTION_NAMES[int(a[0, b, c])]})"
            )
        if self._guidance.shape != a.shape[:1]:
            raise ScheduleError(f"guidance reuse has shape {self._guidance.shape}, the schedule {a.shape[0]} steps")
        if self._guidance[0]:
            raise ScheduleError("step 0 reuses guidance, but it must run both guidance branches "
                                "(there is no guidance difference to reuse yet)")
        computed_before = np.cumsum(self._mask, axis=0) - self._mask
        bad = (a == FORECAST) & ~self._skip[:, :, None] & (computed_before < 2)
        if bad.any():
            s, b, c = (int(i[0]) for i in np.nonzero(bad))
            raise ScheduleError(f"forecast at {self._position(s, b, c)} needs two earlier recomputed outputs, "
                                f"but only {int(computed_before[s, b, c])} precede it")
        ran_before = np.cumsum(~self._skip, axis=0) - ~self._skip
        bad = self._skip & (ran_before < 1)
        if bad.any():
            s, b = (int(i[0]) for i in np.nonzero(bad))
            raise ScheduleError(f"{self._position(s, b)} is skipped, but the block never ran before it")

    # -- transforms ---------------------------------------------------------------------------
    def resample(self, num_steps: int) -> "CacheSchedule":
        """Map to `num_steps` steps: step i takes the row of the nearest source step in normalized time.

        Time is normalized as i / (n - 1). Step 0 maps to step 0, so it stays all-recompute.
        Forecasts keep their place; validate the result (a forecast may lose an earlier recompute).
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
        return CacheSchedule.from_actions(self._actions[idx], self._layout, self._skip[idx], self._guidance[idx])

    def skip_idle_blocks(self) -> "CacheSchedule":
        """Skip every block at the steps where none of its components runs (all reused).

        Reusing every component still runs the block's norms, AdaLN modulation and gates with the
        current step's conditioning; skipping replays its last residual delta instead: less work,
        a different (usually slightly lower-fidelity) output.
        """
        idle = ~(self._mask | (self._actions == FORECAST)).any(axis=2)
        idle[0] = False
        return CacheSchedule.from_actions(self._actions, self._layout, self._skip | idle, self._guidance)

    def without_guidance_reuse(self) -> "CacheSchedule":
        """The same schedule running both guidance halves at every step: for a run without
        classifier-free guidance (guidance scale <= 1), which has no unconditional half to rebuild."""
        if not self._guidance.any():
            return self
        return CacheSchedule.from_actions(self._actions, self._layout, self._skip)

    # -- serialization ------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {"version": 1, "shape": list(self.shape), "layout": self._layout.to_dict()}
        if self.is_reuse_only:
            data["bits"] = _pack_bits(self._mask)
            return data
        codes = self._actions.astype(np.uint8).ravel()
        data["version"] = 2
        data["actions"] = _pack_bits(np.stack([codes >> 1 & 1, codes & 1], axis=1))
        data["skip"] = _pack_bits(self._skip)
        if self._guidance.any():
            data["version"] = 3
            data["guidance"] = _pack_bits(self._guidance)
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "CacheSchedule":
        if not isinstance(data, dict):
            raise ScheduleError(f"a schedule must be a JSON object, got {type(data).__name__}")
        version = data.get("version")
        if version not in READABLE_VERSIONS:
            raise ScheduleError(
                f"unsupported schedule format version {version!r} (this ecad reads {list(READABLE_VERSIONS)})"
            )
        try:
            shape = tuple(int(s) for s in data["shape"])
            layout = BlockLayout.from_dict(data["layout"])
            packed = data["bits"] if version == 1 else (data["actions"], data["skip"], data.get("guidance"))
            if version == 3 and packed[2] is None:
                raise KeyError("guidance")
        except (KeyError, TypeError, ValueError) as e:
            if isinstance(e, ScheduleError):
                raise
            raise ScheduleError(f"malformed schedule JSON: missing or bad {e!r}") from e
        if len(shape) != 3 or min(shape) < 1:
            raise ScheduleError(f"schedule shape must be 3 positive ints, got {list(shape)}")
        n = int(np.prod(shape))
        if version == 1:
            return cls(_unpack_bits(packed, n, "bits").astype(bool).reshape(shape), layout)
        pairs = _unpack_bits(packed[0], 2 * n, "actions").reshape(n, 2)
        actions = (pairs[:, 0] << 1 | pairs[:, 1]).astype(np.int8).reshape(shape)
        skip = _unpack_bits(packed[1], shape[0] * shape[1], "skip").astype(bool).reshape(shape[:2])
        guidance = None if version == 2 else _unpack_bits(packed[2], shape[0], "guidance").astype(bool)
        return cls.from_actions(actions, layout, skip, guidance)

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
        return (self._layout == other._layout and np.array_equal(self._actions, other._actions)
                and np.array_equal(self._skip, other._skip) and np.array_equal(self._guidance, other._guidance))

    def __hash__(self) -> int:
        return hash(self.hash)

    def __repr__(self) -> str:
        extra = "" if self.is_reuse_only else (
            f", forecast={float((self._actions == FORECAST).mean()):.3f}, skip={float(self._skip.mean()):.3f}"
            f", guidance_reuse={int(self._guidance.sum())}")
        return (
            f"CacheSchedule(steps={self.num_steps}, layout={self._layout}, "
            f"recompute={self.recompute_fraction:.3f}{extra}, hash={self.hash[:12]})"
        )
