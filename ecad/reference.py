"""Import the schedules the ECAD paper's authors published (AniAggarwal/ecad, commit a2f0534).

Their files are data: ``{"cache_schedule": {"schedule": {step: {block: {component: bool}}}, ...},
"config": {...}, "metrics": {...}}`` with True = recompute. This module reads one into a
`ReferenceSchedule` (our `CacheSchedule` on our `BlockLayout`, plus the figures the file carries),
writes a schedule back in their form (`to_reference_dict`), and builds a `ScheduleBank` from many
(`import_reference_bank`).

Two counting conventions of the source, checked against our cost model on meta-device
transformers (tests/test_reference_macs.py):
- its MACs leave out the attention matmuls (QKᵀ and AV); everything else is counted as we do;
- PixArt (α and Σ) is counted with 120 text tokens and CFG as one batch of 2; FLUX.1-dev with
  512 text tokens and two transformer evaluations of one image per step (exactly twice our count
  of one FluxPipeline call, which embeds guidance instead of running CFG).
Those figures travel as provenance only; the bank's MACs are ours, with the attention matmuls.
"""

from __future__ import annotations

import ast
import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np

from ecad.bank import BankEntry, Provenance, ScheduleBank
from ecad.configs import Architecture, get_architecture
from ecad.cost import image_macs
from ecad.schedule import BlockGroup, BlockLayout, CacheSchedule
from ecad.setting import Setting

REFERENCE_REPOSITORY = "AniAggarwal/ecad"
REFERENCE_COMMIT = "a2f0534"
REFERENCE_FOLDER = "schedules"  # the published files sit under this folder of that repository

#: their component name -> ours, per block group of our layout
PIXART_COMPONENTS = {"attn1": "attn1", "attn2": "attn2", "ff": "ff"}
FLUX_DOUBLE_COMPONENTS = {"full_attn": "attn", "full_ff": "ff", "full_ff_context": "ff_context"}
FLUX_SINGLE_COMPONENTS = {"single_attn": "attn", "single_proj_mlp": "proj_mlp", "single_proj_out": "proj_out"}
FLUX_SINGLE_PREFIX = "single_"
#: a per-block key of the T-GATE files naming the source's own attention kernel; not a cache decision.
#: Its T-GATE kernel also drops the unconditional CFG branch from the gate step on (the source's MACs
#: halve there); our runtime keeps CFG, so these entries cost more here than in the source.
CUSTOM_KERNEL_KEY = "custom_compute_attn"
TGATE_KERNEL = "compute_attn_tgate"

#: how the source counted MACs: padded text tokens and transformer evaluations per step (see module doc)
REFERENCE_COUNTING = {
    "PixArtTransformer2DModel": {"text_len": 120, "evaluations_per_step": 1},
    "FluxTransformer2DModel": {"text_len": 512, "evaluations_per_step": 2},
}
#: tolerance of the MACs check that tells a file made for another model or resolution
MACS_TOLERANCE = 1e-3

QUALITY_PROXY_METRIC = "unmeasured_macs_fraction"
QUALITY_PROXY_RULE = (
    "quality is unmeasured: each entry's value is its share of the no-cache MACs (our count), so "
    "no-cache is 1.0 and no imported entry ever ranks above it. Along one of the paper's Pareto "
    "fronts this is the paper's quality order (more compute, higher image quality); across fronts "
    "and baselines it is an assumption. Run ecad-rescore on a machine with the weights to replace "
    "it with measured scores."
)


class ReferenceFormatError(ValueError):
    """A reference file that cannot be imported; the message names the file and the problem."""


@dataclass(frozen=True)
class ReferenceSchedule:
    """One published schedule, on our layout. `schedule` is importable (step 0 all recompute);
    `published` is the file's booleans as they were (for the round trip)."""

    path: Path
    name: str
    schedule: CacheSchedule
    published: np.ndarray
    config: dict[str, Any]
    step_macs: tuple[int, ...] | None
    total_macs: int | None
    latency: dict[str, Any] | None
    changed: tuple[str, ...] = field(default=())  # "step 0 block 17 attn1" where reuse became recompute
    custom_kernels: tuple[str, ...] = field(default=())  # the source's own attention kernels, not imported

    @property
    def cfg_dropped_from(self) -> int | None:
        """The step from which the source's T-GATE kernel runs the conditional branch only."""
        for kernel in map(json.loads, self.custom_kernels):
            if kernel.get("name") == TGATE_KERNEL:
                return int(kernel["kwargs"]["gate_step"])
        return None

    @property
    def source(self) -> str:
        """``AniAggarwal/ecad@a2f0534:schedules/<path below the schedules folder>``."""
        parts = self.path.resolve().parts
        marker = [i for i, p in enumerate(parts) if p.endswith("_schedules") or p == "schedules_in_paper"]
        tail = "/".join(parts[marker[0]:]) if marker else self.path.name
        return f"{REFERENCE_REPOSITORY}@{REFERENCE_COMMIT}:{REFERENCE_FOLDER}/{tail}"


def reference_layout(architecture: Architecture | str) -> BlockLayout:
    """Our block layout of a bundled architecture (from its meta-device transformer)."""
    return (get_architecture(architecture) if isinstance(architecture, str) else architecture).layout()


def _literal(value: Any) -> Any:
    """Some files store dicts as Python reprs ("{'avg': 84.1, ...}"); read those as literals, never eval."""
    if isinstance(value, str):
        try:
            return ast.literal_eval(value)
        except (ValueError, SyntaxError):
            return None
    return value


def _component_maps(layout: BlockLayout) -> list[tuple[BlockGroup, str, dict[str, str]]]:
    """(group, their block-key prefix, their component -> ours) for each group of `layout`."""
    names = tuple(group.components for group in layout.groups)
    if names == (tuple(PIXART_COMPONENTS.values()),):
        return [(layout.groups[0], "", PIXART_COMPONENTS)]
    if names == (tuple(FLUX_DOUBLE_COMPONENTS.values()), tuple(FLUX_SINGLE_COMPONENTS.values())):
        return [(layout.groups[0], "", FLUX_DOUBLE_COMPONENTS),
                (layout.groups[1], FLUX_SINGLE_PREFIX, FLUX_SINGLE_COMPONENTS)]
    raise ReferenceFormatError(f"no reference naming for layout {layout}")


def read_reference(path: str | os.PathLike, layout: BlockLayout, *, num_steps: int | None = None) -> ReferenceSchedule:
    """Read one published file onto `layout`; refuse files of another layout, step count or shape."""
    path = Path(path)

    def fail(problem: str) -> ReferenceFormatError:
        return ReferenceFormatError(f"{path}: {problem}")

    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except OSError as err:
        raise fail(f"cannot read: {err}") from None
    except json.JSONDecodeError as err:
        raise fail(f"not valid JSON ({err.msg} at line {err.lineno})") from None
    meta = data.get("cache_schedule") if isinstance(data, dict) else None
    if not isinstance(meta, dict) or not isinstance(meta.get("schedule"), dict):
        raise fail("no cache_schedule.schedule object (not an ECAD reference schedule file)")
    steps = meta["schedule"]
    declared = meta.get("num_inference_steps")
    if declared is not None and declared != len(steps):
        raise fail(f"cache_schedule.num_inference_steps is {declared} but the schedule has {len(steps)} steps")
    if num_steps is not None and len(steps) != num_steps:
        raise fail(f"schedule has {len(steps)} steps, the bank runs {num_steps}")
    step_keys = sorted(steps, key=lambda k: int(k) if str(k).isdigit() else -1)
    if step_keys != [f"{i:03d}" for i in range(len(steps))]:
        raise fail(f"step keys must be '000'..'{len(steps) - 1:03d}', got {sorted(steps)[:3]}...")

    maps = _component_maps(layout)
    mask = np.zeros((len(steps), layout.num_blocks, layout.num_components), dtype=bool)
    expected_blocks = {f"{prefix}{i}" for group, prefix, _ in maps for i in range(group.num_blocks)}
    kernels: set[str] = set()
    for s, key in enumerate(step_keys):
        blocks = steps[key]
        if not isinstance(blocks, dict) or set(blocks) != expected_blocks:
            got = sorted(blocks) if isinstance(blocks, dict) else type(blocks).__name__
            missing = sorted(expected_blocks - set(blocks)) if isinstance(blocks, dict) else []
            extra = sorted(set(blocks) - expected_blocks) if isinstance(blocks, dict) else []
            raise fail(f"step {key}: blocks do not match the layout {layout} "
                       f"(missing {missing[:4]}, unexpected {extra[:4]}; {len(got)} blocks)")
        start = 0
        for group, prefix, names in maps:
            for i in range(group.num_blocks):
                components = blocks[f"{prefix}{i}"]
                if isinstance(components, dict) and CUSTOM_KERNEL_KEY in components:
                    kernels.add(json.dumps(components[CUSTOM_KERNEL_KEY], sort_keys=True))
                    components = {k: v for k, v in components.items() if k != CUSTOM_KERNEL_KEY}
                if not isinstance(components, dict) or set(components) != set(names):
                    raise fail(f"step {key} block {prefix}{i}: components {sorted(components) if isinstance(components, dict) else components!r}, "
                               f"expected {sorted(names)}")
                for theirs, ours in names.items():
                    value = components[theirs]
                    if not isinstance(value, bool):
                        raise fail(f"step {key} block {prefix}{i} {theirs}: expected true/false, got {value!r}")
                    mask[s, start + i, group.components.index(ours)] = value
            start += group.num_blocks

    published = mask.copy()
    changed = tuple(f"step 0 block {b} {layout.component_names(int(b))[c]}"
                    for b, c in zip(*np.nonzero(~mask[0])))
    mask[0] = True  # nothing is cached before step 0: any runtime recomputes there
    metrics = data.get("metrics") if isinstance(data.get("metrics"), dict) else {}
    by_step = _literal(metrics.get("by_inference_step"))
    step_macs = None
    if isinstance(by_step, dict) and set(by_step) == set(step_keys):
        step_macs = tuple(int(by_step[k]["macs"]) for k in step_keys)
    total = metrics.get("total_macs")
    latency = _literal(metrics.get("latency"))
    schedule = CacheSchedule(mask, layout)
    schedule.validate()
    return ReferenceSchedule(
        path=path, name=str(meta.get("name") or path.stem), schedule=schedule,
        published=published, config=data.get("config") if isinstance(data.get("config"), dict) else {},
        step_macs=step_macs, total_macs=int(total) if isinstance(total, (int, float)) else None,
        latency=latency if isinstance(latency, dict) else None, changed=changed,
        custom_kernels=tuple(sorted(kernels)),
    )


def to_reference_dict(schedule: CacheSchedule, published_step0: np.ndarray | None = None) -> dict[str, Any]:
    """`schedule` in the source's form: ``{"000": {"0": {"attn1": true, ...}, ...}, ...}``."""
    maps = _component_maps(schedule.layout)
    out: dict[str, Any] = {}
    for s in range(schedule.num_steps):
        row, start = {}, 0
        for group, prefix, names in maps:
            for i in range(group.num_blocks):
                row[f"{prefix}{i}"] = {theirs: bool(schedule.mask[s, start + i, group.components.index(ours)])
                                       for theirs, ours in names.items()}
            start += group.num_blocks
        out[f"{s:03d}"] = row
    return out


def reference_macs(architecture: Architecture, setting: Setting, schedule: CacheSchedule, *,
                   cfg_dropped_from: int | None = None) -> list[int]:
    """Per-step MACs of `schedule` as the source counts them (no attention matmuls, its text length
    and evaluations per step; CFG's batch halved from `cfg_dropped_from` on, as its T-GATE kernel
    does); comparable with a reference file's ``by_inference_step``."""
    counting = REFERENCE_COUNTING[architecture.transformer_class]
    component, other = architecture.step_macs(
        setting.height, setting.width, setting.guidance_scale, attention_matmuls=False,
        text_len=counting["text_len"])
    per_step = ((schedule.mask * component[None]).sum(axis=(1, 2)) + other) * counting["evaluations_per_step"]
    if cfg_dropped_from is not None:
        per_step[cfg_dropped_from:] //= architecture.transformer_batch(setting.guidance_scale)
    return [int(v) for v in per_step]


def entry_id(path: str | os.PathLike) -> str:
    """A bank entry id from a file name: ``recompute_all_every_003`` -> ``fora-3``,
    ``default*`` -> ``no-cache``, ``ours_fast`` -> ``ours-fast``."""
    stem = Path(path).stem
    if match := re.fullmatch(r"recompute_all_every_0*(\d+)", stem):
        return f"fora-{match.group(1)}"
    if stem.startswith("default"):
        return "no-cache"
    return re.sub(r"[^A-Za-z0-9.]+", "-", stem).strip("-")[:64]


@dataclass
class ImportReport:
    """What an import did: one line per entry, and every position it changed."""

    lines: list[str] = field(default_factory=list)
    changed: dict[str, tuple[str, ...]] = field(default_factory=dict)

    def __str__(self) -> str:
        text = list(self.lines)
        for entry, positions in self.changed.items():
            text.append(f"{entry}: step 0 reuse imported as recompute at {len(positions)} position(s): "
                        + ", ".join(p.removeprefix("step 0 ") for p in positions))
        return "\n".join(text)


def _file_setting(ref: ReferenceSchedule, setting: Setting) -> None:
    for key in ("height", "width", "guidance_scale"):
        if key in ref.config and float(ref.config[key]) != float(getattr(setting, key)):
            raise ReferenceFormatError(
                f"{ref.path}: made for {key}={ref.config[key]}, the bank's setting has {getattr(setting, key)}")


def _check_reference_macs(ref: ReferenceSchedule, architecture: Architecture, setting: Setting) -> None:
    """The file's own MACs must be what its schedule costs on `architecture` at `setting`: this
    tells a file of another model or resolution even when its config does not say."""
    if ref.step_macs is None:
        return
    ours = reference_macs(architecture, setting, ref.schedule, cfg_dropped_from=ref.cfg_dropped_from)
    worst = max(abs(a - b) / b for a, b in zip(ours, ref.step_macs) if b)
    if worst > MACS_TOLERANCE:
        raise ReferenceFormatError(
            f"{ref.path}: its MACs ({ref.step_macs[0]:.4g} at step 0) do not match {architecture.hub_id} at "
            f"{setting.height}x{setting.width} ({ours[0]:.4g}): a file for another model or resolution?")


def _import_note(ref: ReferenceSchedule) -> str | None:
    notes = []
    if ref.changed:
        notes.append("the source marks the listed positions as reuse at step 0, where nothing is cached "
                     "yet; imported as recompute (the source's MACs count them as computed too)")
    if ref.cfg_dropped_from is not None:
        notes.append(f"the source's T-GATE kernel also drops the unconditional CFG branch from step "
                     f"{ref.cfg_dropped_from} on; only its cache decisions are imported (CFG kept), so "
                     "reference_macs/latency are lower than this entry's")
    return "; ".join(notes) or None


def import_reference_bank(
    paths: Sequence[str | os.PathLike], model: str, setting: Setting, *,
    heuristics: Iterable[str] = (), notice: str | None = None,
) -> tuple[ScheduleBank, ImportReport]:
    """A bank for `model` (a bundled architecture's hub id) at `setting` from published files,
    plus named `ecad.heuristics` schedules (e.g. ``fora-2``) where the source has none."""
    from ecad.heuristics import heuristic_suite

    architecture = get_architecture(model)
    layout = reference_layout(architecture)
    report = ImportReport()
    schedules: dict[str, tuple[CacheSchedule, str, Provenance | None]] = {}

    def add(entry: str, schedule: CacheSchedule, source: str, provenance: Provenance | None, where: str) -> None:
        if entry in schedules:
            raise ReferenceFormatError(f"{where}: entry id {entry!r} is already taken")
        schedules[entry] = (schedule, source, provenance)

    for path in paths:
        ref = read_reference(path, layout, num_steps=setting.num_inference_steps)
        _file_setting(ref, setting)
        _check_reference_macs(ref, architecture, setting)
        entry = entry_id(path)
        kind = "no-cache" if ref.schedule.mask.all() else ("heuristic" if entry.startswith(("fora-", "tgate")) else "ecad")
        latency = ref.latency or {}
        add(entry, ref.schedule, kind, Provenance(
            source=ref.source, name=ref.name, reference_macs=ref.total_macs,
            reference_latency_ms=float(latency["avg"]) if "avg" in latency else None,
            reference_batch_size=int(latency["batch_size"]) if "batch_size" in latency else None,
            reference_gpu=latency.get("gpu"), changed_on_import=list(ref.changed),
            note=_import_note(ref),
        ), str(path))
        if ref.changed:
            report.changed[entry] = ref.changed
    suite = heuristic_suite(layout, setting.num_inference_steps)
    for name in heuristics:
        if name not in suite:
            raise ReferenceFormatError(f"unknown heuristic {name!r}; available: {', '.join(suite)}")
        add(name, suite[name], "no-cache" if suite[name].mask.all() else "heuristic", None, f"heuristic {name}")
    if not any(s.mask.all() for s, _, _ in schedules.values()):
        add("no-cache", CacheSchedule.full(layout, setting.num_inference_steps), "no-cache", None, "no-cache")

    full = image_macs(architecture, setting, CacheSchedule.full(layout, setting.num_inference_steps))
    entries = []
    for entry, (schedule, source, provenance) in schedules.items():
        macs = image_macs(architecture, setting, schedule)
        entries.append(BankEntry(
            id=entry, schedule=schedule.to_dict(), macs=macs, quality={QUALITY_PROXY_METRIC: macs / full},
            source=source, quality_measured=False, provenance=provenance))
        report.lines.append(f"{entry:<40} {source:<9} {full / macs:5.2f}x MACs"
                            + (f"  from {provenance.source}" if provenance else ""))
    entries.sort(key=lambda e: -e.macs)
    bank = ScheduleBank(
        model=architecture.hub_id, model_fingerprint=architecture.fingerprint(), **setting.to_dict(),
        scorer="unmeasured", quality_metric=QUALITY_PROXY_METRIC, entries=entries,
        calibration={"imported_from": f"{REFERENCE_REPOSITORY}@{REFERENCE_COMMIT}", "quality_rule": QUALITY_PROXY_RULE},
        notice=notice or (f"Schedules published by the ECAD paper's authors ({REFERENCE_REPOSITORY}, commit "
                          f"{REFERENCE_COMMIT}; the repository has no licence file: the boolean decisions and "
                          "figures are imported as data). Their MACs and A6000 latency are kept per entry as "
                          "provenance, not as our measurements."),
    )
    return bank, report
