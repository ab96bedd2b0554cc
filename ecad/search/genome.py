"""The genome: what a gene vector the search varies means as a cache schedule.

* ``ACTIONS`` — the words of the search's vocabulary besides recompute (always searched), and
  :func:`parse_actions`, the one reader of a list of them (``--actions``, a recipe, a run config).
* :class:`GeneSpace` — the integer genes of the schedules of one (layout, steps): their order,
  the values each may take, and the exact encoding both ways.
* :class:`Genome` — a search's genome, built from the searched action names: its ``GeneSpace``
  and the optimizer's space over the same genes (a :class:`BitSpace` for reuse only — the v1
  search, its packing and operators — else an :class:`IntegerSpace`). ``Genome.decode`` is where a
  gene vector becomes a ``CacheSchedule``, once per vector: the memo key (the schedule's hash), the
  bank entry and re-encoding in another genome all take that one decoded schedule.

Free of models and of torch: the CLI reads ``ACTIONS`` for its ``--help``.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass, field

import numpy as np

from ecad.schedule import (ACTION_NAMES, FORECAST, RECOMPUTE, REUSE, BlockLayout, CacheSchedule,
                           ScheduleError)
from ecad.search.optimizer.space import BitSpace, IntegerSpace

#: the actions a search may use besides recompute (always searched): reuse the cached output,
#: forecast it (order 1), skip a whole block (replay its residual delta), reuse the guidance
#: difference at a step (run the conditional rows only; `ecad.hooks.guidance`)
ACTIONS = ("reuse", "forecast", "skip", "guidance")
#: the v1 search: recompute or reuse, nothing else
REUSE_ONLY = ("reuse",)
#: the component actions among them, as schedule action codes
COMPONENT_ACTIONS = {"reuse": REUSE, "forecast": FORECAST}


def parse_actions(names) -> tuple[str, ...]:
    """``"reuse,forecast"`` or a sequence of names → the searched actions, in canonical order."""
    if isinstance(names, str):
        names = [part.strip() for part in names.split(",") if part.strip()]
    names = tuple(names)
    unknown = sorted(set(names) - set(ACTIONS))
    if unknown or not names:
        raise ValueError(f"actions must be a non-empty subset of {', '.join(ACTIONS)} "
                         f"(recompute is always searched), got {', '.join(unknown) or 'none'}")
    if not set(COMPONENT_ACTIONS) & set(names):  # every component has a gene, which needs a second value
        raise ValueError(f"actions need reuse or forecast beside {', '.join(names)} (a component gene must "
                         "have something besides recompute)")
    return tuple(a for a in ACTIONS if a in names)


@dataclass(frozen=True)
class GeneSpace:
    """Integer genes of the schedules of one (layout, num_steps), for a genetic search.

    Gene order: the actions of steps 1.. as ``actions[1:].ravel()`` (step 0 always recomputes
    everything, so it has no genes), then, with `block_skip`, the skip plane ``skip[1:].ravel()``,
    then, with `guidance_reuse`, one gene per step 1.. (0 or 1).
    A component gene takes one of `actions` (action codes, so ``(REUSE, RECOMPUTE)`` is the v1
    search); a skip gene 0 or 1. `from_genes` always gives a valid schedule (`CacheSchedule.repaired`:
    a forecast without two earlier recomputes becomes a reuse), so `to_genes(from_genes(g))` may
    differ from `g`; `from_genes(to_genes(s)) == s` for every valid `s` the space can express.
    """

    layout: BlockLayout
    num_steps: int
    actions: tuple[int, ...] = (REUSE, RECOMPUTE, FORECAST)
    block_skip: bool = True
    guidance_reuse: bool = False

    def __post_init__(self):
        object.__setattr__(self, "actions", tuple(sorted(set(int(a) for a in self.actions))))
        if RECOMPUTE not in self.actions or not set(self.actions) <= set(ACTION_NAMES):
            raise ScheduleError(f"gene actions must include recompute and be among {dict(ACTION_NAMES)}, "
                                f"got {list(self.actions)}")
        if self.num_steps < 1:
            raise ScheduleError(f"num_steps must be >= 1, got {self.num_steps}")

    @property
    def num_action_genes(self) -> int:
        return (self.num_steps - 1) * self.layout.num_blocks * self.layout.num_components

    @property
    def num_skip_genes(self) -> int:
        return (self.num_steps - 1) * self.layout.num_blocks if self.block_skip else 0

    @property
    def num_guidance_genes(self) -> int:
        return self.num_steps - 1 if self.guidance_reuse else 0

    @property
    def num_genes(self) -> int:
        return self.num_action_genes + self.num_skip_genes + self.num_guidance_genes

    def allowed_values(self) -> list[tuple[int, ...]]:
        """For each gene, the integers it may take."""
        return [self.actions] * self.num_action_genes + [(0, 1)] * (self.num_genes - self.num_action_genes)

    def bounds(self) -> tuple[np.ndarray, np.ndarray]:
        """(lower, upper) per gene, inclusive, for pymoo `Integer` variables. Every integer between
        them is allowed: the codes are 0, 1, 2 and recompute (1) is always in."""
        values = self.allowed_values()
        return np.array([v[0] for v in values]), np.array([v[-1] for v in values])

    def to_genes(self, schedule: CacheSchedule) -> np.ndarray:
        if schedule.layout != self.layout or schedule.num_steps != self.num_steps:
            raise ScheduleError(f"schedule ({schedule.num_steps} steps, {schedule.layout}) is not in this gene "
                                f"space ({self.num_steps} steps, {self.layout})")
        outside = ~np.isin(schedule.actions[1:], self.actions)
        if outside.any():
            s, b, c = (int(i[0]) for i in np.nonzero(outside))
            raise ScheduleError(f"action {ACTION_NAMES.get(int(schedule.actions[1 + s, b, c]))} at step {1 + s} "
                                f"block {b} is not a gene value here ({[ACTION_NAMES[a] for a in self.actions]})")
        if schedule.skip.any() and not self.block_skip:
            raise ScheduleError("the schedule skips blocks, but this gene space has no skip genes")
        if schedule.guidance_reuse.any() and not self.guidance_reuse:
            raise ScheduleError("the schedule reuses guidance, but this gene space has no guidance genes")
        genes = [schedule.actions[1:].ravel().astype(np.int64)]
        if self.block_skip:
            genes.append(schedule.skip[1:].ravel().astype(np.int64))
        if self.guidance_reuse:
            genes.append(schedule.guidance_reuse[1:].astype(np.int64))
        return np.concatenate(genes)

    def from_genes(self, genes: np.ndarray) -> CacheSchedule:
        genes = np.asarray(genes)
        if genes.shape != (self.num_genes,):
            raise ScheduleError(f"expected {self.num_genes} genes, got shape {genes.shape}")
        shape = (self.num_steps, self.layout.num_blocks, self.layout.num_components)
        actions = np.full(shape, RECOMPUTE, np.int8)
        actions[1:] = genes[: self.num_action_genes].reshape((self.num_steps - 1,) + shape[1:])
        if not np.isin(actions, self.actions).all():
            raise ScheduleError(f"gene values must be among {list(self.actions)}")
        skip = np.zeros(shape[:2], bool)
        start = self.num_action_genes
        if self.block_skip:
            skip[1:] = genes[start:start + self.num_skip_genes].reshape(self.num_steps - 1, shape[1]) != 0
        guidance = np.zeros(shape[:1], bool)
        if self.guidance_reuse:
            guidance[1:] = genes[start + self.num_skip_genes:] != 0
        return CacheSchedule.repaired(actions, self.layout, skip, guidance)


#: decoded schedules a genome keeps: more than a generation's population and offspring (the
#: schedules are immutable, so handing one out twice is safe)
DECODED_KEPT = 4096


@dataclass(frozen=True)
class Genome:
    """The schedules of (``layout``, ``num_steps``) using ``actions`` (names, see ``ACTIONS``), as the
    gene vectors of the optimizer's ``space``; ``genes`` says what each gene is."""

    layout: BlockLayout
    num_steps: int
    actions: tuple[str, ...] = REUSE_ONLY
    genes: GeneSpace = field(init=False, repr=False)
    space: BitSpace | IntegerSpace = field(init=False, repr=False)
    _decoded: OrderedDict = field(init=False, repr=False, compare=False, default_factory=OrderedDict)

    def __post_init__(self) -> None:
        actions = parse_actions(self.actions)
        genes = GeneSpace(self.layout, self.num_steps,
                          actions=(RECOMPUTE, *(COMPONENT_ACTIONS[a] for a in actions if a in COMPONENT_ACTIONS)),
                          block_skip="skip" in actions, guidance_reuse="guidance" in actions)
        if actions == REUSE_ONLY:  # the v1 bit space: same config, packing and operators as before
            space = BitSpace((self.num_steps, self.layout.num_blocks, self.layout.num_components))
        else:
            segments = [(genes.num_action_genes, min(genes.actions), max(genes.actions), RECOMPUTE)]
            segments += [(count, 0, 1, 0) for count in (genes.num_skip_genes, genes.num_guidance_genes) if count]
            space = IntegerSpace(tuple(segments))
        object.__setattr__(self, "actions", actions)
        object.__setattr__(self, "genes", genes)
        object.__setattr__(self, "space", space)

    def with_actions(self, actions) -> "Genome":
        """The genome of the same layout and steps searching ``actions``."""
        return Genome(self.layout, self.num_steps, actions)

    def decode(self, genes: np.ndarray) -> CacheSchedule:
        """The (valid, repaired) schedule a gene vector stands for; decoded once per vector."""
        genes = self.space.coerce(genes)
        raw = genes.tobytes()
        if raw in self._decoded:
            self._decoded.move_to_end(raw)
            return self._decoded[raw]
        schedule = self._decoded[raw] = self.genes.from_genes(genes)
        if len(self._decoded) > DECODED_KEPT:  # the least recently used goes
            self._decoded.popitem(last=False)
        return schedule

    def encode(self, schedule: CacheSchedule) -> np.ndarray:
        """``schedule``'s gene vector; ``ScheduleError`` if this genome cannot express it."""
        return self.space.coerce(self.genes.to_genes(schedule))

    def key(self, genes: np.ndarray) -> str:
        """A candidate's memo key: its schedule's hash (a v1 schedule keeps its v1 hash, so memo
        keys and bank ids of v1 runs still match)."""
        return self.decode(genes).hash
