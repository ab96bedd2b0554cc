"""The per-module hooks that carry out a schedule's actions, and the state they share.

- `ComponentHook` on a cached module (PixArt `attn1/attn2/ff`, FLUX `attn/ff/ff_context`,
  `attn/proj_mlp/proj_out`): `recompute` calls the original forward; `reuse` returns the output of
  the last recompute; `forecast` extrapolates to first order from the last two recomputed outputs,
  ``y2 + (y2 - y1) * (step - s2) / (s2 - s1)`` (the difference is formed once, at s2). Outputs are
  the module's raw outputs, before the block applies its gate and residual, so those still use the
  current step's conditioning (as in the ECAD paper).
- `BlockSkipHook` on a whole block, where the schedule skips it at some step: at a step that runs
  the block it records the block's residual delta (output - input, per residual stream); at a
  skipped step it returns input + that delta and nothing inside the block runs (norms, AdaLN,
  gates, components).

Guidance reuse (``schedule.guidance_reuse``, `ecad.hooks.guidance`): at such a step the transformer
runs on the conditional rows only, so every hook keeps what it holds per guidance half ("u" for
the unconditional rows, "c" for the conditional ones): the conditional half follows every step,
the unconditional half only the steps that run it (its plan treats the other steps as not
called). A schedule without guidance reuse keeps one whole-batch entry, as before.

Memory: the schedule is static, so a hook knows in advance which later step needs what; a tensor
is kept only when a later step reads it and released at its last read (`ActionPlan`).
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from diffusers.hooks import ModelHook

from ..schedule import FORECAST, RECOMPUTE, REUSE

SKIPPED = -1  # the component's block is skipped at this step: the component is not called


def numel(value: Any) -> int:
    """Elements of an output (a tensor, or a tuple of tensors)."""
    if isinstance(value, torch.Tensor):
        return value.numel()
    if isinstance(value, (tuple, list)):
        return sum(numel(v) for v in value)
    return 0


def nbytes(value: Any) -> int:
    if isinstance(value, torch.Tensor):
        return value.numel() * value.element_size()
    if isinstance(value, (tuple, list)):
        return sum(nbytes(v) for v in value)
    return 0


def rows(value: Any, index: slice) -> Any:
    """The rows ``index`` of an output (a tensor, or a tuple of tensors)."""
    if isinstance(value, tuple):
        return tuple(v[index] for v in value)
    return value[index]


def cat_rows(a: Any, b: Any) -> Any:
    """Rows of ``a`` then rows of ``b`` (tensors, or tuples of tensors of the same structure)."""
    return _map2(lambda x, y: torch.cat([x, y]), a, b)


def halves(value: Any) -> tuple[Any, Any]:
    """(unconditional rows, conditional rows) of a batch of [uncond; cond] rows (views)."""
    first = value[0] if isinstance(value, tuple) else value
    n = first.shape[0] // 2
    return rows(value, slice(0, n)), rows(value, slice(n, None))


def own_storage(value: Any) -> Any:
    """A copy of a half held without its sibling: a view would keep the whole batch's storage
    alive while `CacheState` counts only its own bytes."""
    if isinstance(value, tuple):
        return tuple(None if v is None else v.clone() for v in value)
    return value.clone()


def _stream_delta(output: torch.Tensor | None, input: torch.Tensor) -> torch.Tensor | None:
    """What a block added to one residual stream; None where the block returns None for it (SD3's
    last block ends the text stream), which a skip then returns as None too."""
    return None if output is None else output - input


def _stream_halves(delta: torch.Tensor | None) -> tuple[Any, Any]:
    return (None, None) if delta is None else halves(delta)


def _map2(fn, a: Any, b: Any) -> Any:
    """fn over the tensors of two outputs of the same structure (a tensor, or a tuple of tensors)."""
    if isinstance(a, tuple):
        return tuple(fn(x, y) for x, y in zip(a, b))
    return fn(a, b)


@dataclass
class CacheState:
    """State shared by the hooks of one applied schedule; reset at the start of every pipeline call."""

    step: int = -1  # denoising step of the current transformer call
    branch: int = 0  # transformer call within the step (FLUX true CFG: 0 = cond, 1 = uncond)
    call_id: int = 0  # increments per transformer call
    per_half: bool = False  # the schedule reuses guidance somewhere: hold per guidance half
    cond_only: bool = False  # this call runs the conditional rows only
    # (branch, slot, block, component) -> held tensor(s); slot "out", "diff" or "delta"
    held: dict[tuple, Any] = field(default_factory=dict)
    branch_shapes: dict[int, tuple] = field(default_factory=dict)
    bytes_held: int = 0
    peak_bytes_held: int = 0
    pipeline_calls: int = 0
    #: element-wise ops the hooks ran (forecast extrapolations and differences, skip deltas and
    #: their replays), one per output element as `ecad.cost` counts them; never reset, so a
    #: counter reads the difference (the benchmark's runtime MACs)
    elementwise_ops: int = 0

    def reset(self) -> None:
        """Forget every held tensor (a new pipeline call, an exception, or removal)."""
        self.step, self.branch = -1, 0
        self.cond_only = False
        self.held.clear()
        self.branch_shapes.clear()
        self.bytes_held = 0

    def store(self, key: tuple, value: Any) -> None:
        key = (self.branch, *key)
        old = self.held.get(key)
        if old is not None:
            self.bytes_held -= nbytes(old)
        self.held[key] = value
        self.bytes_held += nbytes(value)
        self.peak_bytes_held = max(self.peak_bytes_held, self.bytes_held)

    def get(self, key: tuple, label: str) -> Any:
        try:
            return self.held[(self.branch, *key)]
        except KeyError:
            raise RuntimeError(
                f"{label}: step {self.step} (branch {self.branch}) needs a held output but none was kept; "
                "the transformer calls did not start at step 0"
            ) from None

    def release(self, key: tuple) -> None:
        old = self.held.pop((self.branch, *key), None)
        if old is not None:
            self.bytes_held -= nbytes(old)


@dataclass(frozen=True)
class ActionPlan:
    """What one component does at each step, worked out once from its (static) column of actions.

    ``action[s]``: RECOMPUTE / REUSE / FORECAST, or SKIPPED (its block is skipped).
    At a recompute step: ``make_diff`` forms y - y_prev (a forecast follows before the next
    recompute), ``keep_out`` keeps y (a later step reads it), ``held`` says an older output is
    still held (kept only to form this step's difference) and must be released if y is not kept.
    ``coeff[s]`` is the forecast's (s - s2) / (s2 - s1). ``drop_out`` / ``drop_diff``: release
    after serving step s.
    """

    action: list[int]
    keep_out: list[bool]
    held: list[bool]
    make_diff: list[bool]
    coeff: list[float]
    drop_out: list[bool]
    drop_diff: list[bool]

    @classmethod
    def build(cls, actions: np.ndarray, skipped: np.ndarray) -> "ActionPlan":
        n = len(actions)
        action = [SKIPPED if skip else int(a) for a, skip in zip(actions, skipped)]
        computed = [s for s in range(n) if action[s] == RECOMPUTE]
        for s in range(n):
            # Validation guarantees two earlier recomputes on the steps that run both guidance
            # halves; the unconditional half, which misses the conditional-only steps, may have
            # fewer: it reuses there.
            if action[s] == FORECAST and sum(t < s for t in computed) < 2:
                action[s] = REUSE
        keep_out, held, make_diff, drop_out, drop_diff = ([False] * n for _ in range(5))
        coeff = [0.0] * n
        for k, s2 in enumerate(computed):
            nxt = computed[k + 1] if k + 1 < len(computed) else n
            nxt2 = computed[k + 2] if k + 2 < len(computed) else n
            uses = [t for t in range(s2 + 1, nxt) if action[t] in (REUSE, FORECAST)]
            forecasts = [t for t in uses if action[t] == FORECAST]
            needed_at_next = any(action[t] == FORECAST for t in range(nxt + 1, nxt2))
            keep_out[s2] = bool(uses) or needed_at_next
            make_diff[s2] = bool(forecasts)
            if needed_at_next:
                held[nxt] = True
            elif uses:
                drop_out[uses[-1]] = True
            if forecasts:
                drop_diff[forecasts[-1]] = True
                s1 = computed[k - 1]  # exists: validation refuses a forecast without two computed outputs
                for t in forecasts:
                    coeff[t] = (t - s2) / (s2 - s1)
        return cls(action, keep_out, held, make_diff, coeff, drop_out, drop_diff)

    @property
    def needs_hook(self) -> bool:
        """False when the component recomputes whenever it is called: nothing to do."""
        return any(a in (REUSE, FORECAST) for a in self.action)


class ComponentHook(ModelHook):
    """Recompute, reuse or forecast one component (block `block`, component `component`).

    `plan` is the component's plan over all steps; `uncond_plan` (guidance reuse only) the plan of
    the unconditional rows, which are not called at the conditional-only steps.
    """

    _is_stateful = True

    def __init__(self, state: CacheState, block: int, component: int, name: str, plan: ActionPlan,
                 uncond_plan: ActionPlan | None = None):
        super().__init__()
        self.state = state
        self.key = (block, component)
        self.name = name
        self.plan = plan
        self.uncond_plan = uncond_plan
        self._last_call_id = -1

    def new_forward(self, module: torch.nn.Module, *args, **kwargs):
        state = self.state
        if self._last_call_id == state.call_id:
            # e.g. PixArt feed-forward chunking calls `ff` once per chunk: one cache slot is not enough
            raise RuntimeError(
                f"{self.name} was called twice in one transformer call; ecad caches one output per "
                "component per call (disable feed-forward chunking)"
            )
        self._last_call_id = state.call_id
        step = state.step
        if step < 0:  # outside a tracked call
            return self.fn_ref.original_forward(*args, **kwargs)
        if not state.per_half:
            return self._serve(self.plan, (), step, args, kwargs)
        if state.cond_only:
            return self._serve(self.plan, ("c",), step, args, kwargs)
        # both halves at once: the action is the schedule's; what each half holds differs
        if self.plan.action[step] == RECOMPUTE:
            output = self.fn_ref.original_forward(*args, **kwargs)
            uncond, cond = halves(output)
            if self.uncond_plan.keep_out[step] and not self.plan.keep_out[step]:
                uncond = own_storage(uncond)
            elif self.plan.keep_out[step] and not self.uncond_plan.keep_out[step]:
                cond = own_storage(cond)
            self._keep(self.uncond_plan, ("u",), step, uncond)
            self._keep(self.plan, ("c",), step, cond)
            return output
        return cat_rows(self._cached(self.uncond_plan, ("u",), step), self._cached(self.plan, ("c",), step))

    def _serve(self, plan: ActionPlan, half: tuple, step: int, args: tuple, kwargs: dict) -> Any:
        if plan.action[step] == RECOMPUTE:
            output = self.fn_ref.original_forward(*args, **kwargs)
            self._keep(plan, half, step, output)
            return output
        return self._cached(plan, half, step)

    def _keep(self, plan: ActionPlan, half: tuple, step: int, output: Any) -> None:
        """After a recompute: form the forecast difference and keep the output if later steps read them."""
        state = self.state
        out_key, diff_key = ("out", *self.key, *half), ("diff", *self.key, *half)
        if plan.make_diff[step]:
            previous = state.get(out_key, self.name)
            state.store(diff_key, _map2(torch.sub, output, previous))
            state.elementwise_ops += numel(output)
        if plan.keep_out[step]:
            state.store(out_key, output)
        elif plan.held[step]:
            state.release(out_key)

    def _cached(self, plan: ActionPlan, half: tuple, step: int) -> Any:
        """The reused or forecast output at a step that does not recompute."""
        state = self.state
        out_key, diff_key = ("out", *self.key, *half), ("diff", *self.key, *half)
        last = state.get(out_key, self.name)
        if plan.action[step] == FORECAST:
            k = plan.coeff[step]
            output = _map2(lambda y, d: y + d * k, last, state.get(diff_key, self.name))
            state.elementwise_ops += 2 * numel(last)
            if plan.drop_diff[step]:
                state.release(diff_key)
        else:
            output = last
        if plan.drop_out[step]:
            state.release(out_key)
        return output

    def reset_state(self, module: torch.nn.Module) -> torch.nn.Module:
        self._last_call_id = -1
        return module


def skip_plan(skip: np.ndarray, called: np.ndarray | None = None) -> tuple[list[bool], list[bool]]:
    """(keep, drop) per step of a block skipped at `skip`, over the steps where it is `called`
    (default: all): keep the residual delta at a run whose next call skips; drop it at the last
    skip of a run of skips."""
    n = len(skip)
    called = [True] * n if called is None else [bool(x) for x in called]
    steps = [s for s in range(n) if called[s]]
    keep, drop = [False] * n, [False] * n
    for s, after in zip(steps, steps[1:] + [None]):
        skip_after = after is not None and bool(skip[after])
        keep[s] = not skip[s] and skip_after
        drop[s] = bool(skip[s]) and not skip_after
    return keep, drop


class BlockSkipHook(ModelHook):
    """Skip a whole block at the steps where `skip` is True by replaying its last residual delta.

    `streams` names the block's residual inputs in the order the block returns them (PixArt:
    ``("hidden_states",)``, returned as one tensor; FLUX: ``("encoder_hidden_states",
    "hidden_states")``, returned as a tuple). A stream the block returns as None (SD3's last block
    ends the text stream) is None when the block is skipped too. `cond_only` (guidance reuse): the
    steps where only the conditional rows run; the unconditional half keeps its delta over the
    other steps.
    """

    _is_stateful = True

    def __init__(self, state: CacheState, block: int, name: str, skip: np.ndarray, streams: tuple[str, ...],
                 cond_only: np.ndarray | None = None):
        super().__init__()
        self.state = state
        self.block = block
        self.name = name
        self.streams = streams
        self.skip = [bool(x) for x in skip]
        self.keep, self.drop = skip_plan(skip)
        self.uncond_keep, self.uncond_drop = (self.keep, self.drop) if cond_only is None else \
            skip_plan(skip, ~np.asarray(cond_only))
        self._arg_index: dict[str, int] = {}
        self._tuple_output = False

    def initialize_hook(self, module: torch.nn.Module) -> torch.nn.Module:
        params = list(inspect.signature(type(module).forward).parameters)[1:]
        self._arg_index = {name: i for i, name in enumerate(params)}
        return module

    def _inputs(self, args: tuple, kwargs: dict) -> tuple[torch.Tensor, ...]:
        return tuple(kwargs[s] if s in kwargs else args[self._arg_index[s]] for s in self.streams)

    def new_forward(self, module: torch.nn.Module, *args, **kwargs):
        state = self.state
        step = state.step
        both = state.per_half and not state.cond_only  # one call carries two halves held apart
        # (key suffix, keep, drop) of each half this call carries; one whole-batch entry without guidance reuse
        parts = [(("u",), self.uncond_keep, self.uncond_drop), (("c",), self.keep, self.drop)] if both else \
            [(("c",) if state.per_half else (), self.keep, self.drop)]
        if step < 0 or not self.skip[step]:
            output = self.fn_ref.original_forward(*args, **kwargs)
            if step >= 0 and any(keep[step] for _, keep, _ in parts):
                self._tuple_output = isinstance(output, tuple)
                outputs = output if self._tuple_output else (output,)
                deltas = tuple(_stream_delta(o, i) for o, i in zip(outputs, self._inputs(args, kwargs)))
                state.elementwise_ops += numel(deltas)
                split = zip(*(_stream_halves(d) for d in deltas)) if both else [deltas]
                one_half = both and sum(keep[step] for _, keep, _ in parts) == 1
                for (half, keep, _), half_deltas in zip(parts, split):
                    if keep[step]:
                        state.store(("delta", self.block, *half), own_storage(tuple(half_deltas)) if one_half
                                    else tuple(half_deltas))
            return output
        held = []
        for half, _, drop in parts:
            held.append(state.get(("delta", self.block, *half), self.name))
            if drop[step]:
                state.release(("delta", self.block, *half))
        deltas = tuple(None if pair[0] is None else torch.cat(pair) for pair in zip(*held)) if both else held[0]
        output = tuple(None if d is None else i + d for i, d in zip(self._inputs(args, kwargs), deltas))
        state.elementwise_ops += numel(output)
        return output if self._tuple_output else output[0]

    def reset_state(self, module: torch.nn.Module) -> torch.nn.Module:
        return module  # its deltas live in the shared CacheState, which the step tracker resets
