"""The schedule bank: one versioned JSON file per model setting (model, resolution, steps, CFG).

A bank is the Pareto front that ``ecad-calibrate`` found, plus the no-cache reference, plus the
latency of every entry measured on each piece of hardware it was profiled on (``ecad-profile``).
One pydantic model, shared by calibration, profiling, selection and serving. Loading validates
everything and names the file and the problem; saving is atomic.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import platform
import re
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from ecad.atomic import atomic_write_text
from ecad.setting import Setting

BANK_FORMAT_VERSION = 1

logger = logging.getLogger(__name__)

_ID_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,63}$")


class BankError(ValueError):
    """A bank file that cannot be used; the message names the file and the problem."""


class Provenance(BaseModel):
    """Where an imported schedule comes from, and the figures its authors published for it.

    The ``reference_*`` figures are the source's own measurements on the source's hardware, kept
    for comparison; they are never used as this bank's MACs, latency or quality.
    """

    model_config = ConfigDict(extra="forbid")

    source: str = Field(description="Repository@commit:path of the file the schedule was imported from.")
    name: str | None = Field(default=None, description="The schedule's name in the source file.")
    reference_macs: int | None = Field(default=None, ge=0, description="Total MACs the source reports (its own counting).")
    reference_latency_ms: float | None = Field(default=None, gt=0, description="Mean latency per batch the source reports.")
    reference_batch_size: int | None = Field(default=None, ge=1)
    reference_gpu: str | None = None
    changed_on_import: list[str] = Field(
        default_factory=list, description="Positions ('step 0 block 17 attn1') the import changed, and why in `note`.")
    note: str | None = None


class BankEntry(BaseModel):
    """One schedule of the front."""

    model_config = ConfigDict(extra="forbid")

    id: str = Field(description="Stable id, e.g. 'no-cache', 'fora-2', 'ecad-g12-003'.")
    schedule: dict[str, Any] = Field(description="CacheSchedule.to_dict(): packed bits + layout.")
    macs: int = Field(ge=0, description="Transformer MACs of one image at the bank's setting.")
    quality: dict[str, float] = Field(description="Mean score per scorer metric on calibration prompts.")
    source: str = Field(default="ecad", description="'ecad', 'heuristic', or 'no-cache'.")
    validation: dict[str, float] | None = Field(
        default=None, description="Mean score per metric on validation prompts the search never saw (if re-scored)."
    )
    interval: dict[str, tuple[float, float]] | None = Field(
        default=None,
        description="95% bootstrap interval of the mean per metric, over the images of `validation` "
        "(else of `quality`).",
    )
    spread: dict[str, tuple[float, float]] | None = Field(
        default=None,
        description="5th and 95th percentile per metric over the single images of `validation`: what one "
        "served image gets, the interval a response states (where `interval` is the mean's).",
    )
    quality_measured: bool = Field(
        default=True, description="False: `quality` is a stated proxy, not a score measured on images "
        "(see the bank's `notice`); `ecad-rescore` measures it.")
    provenance: Provenance | None = Field(default=None, description="Set for schedules imported from elsewhere.")

    @field_validator("id")
    @classmethod
    def _check_id(cls, value: str) -> str:
        if not _ID_PATTERN.match(value):
            raise ValueError(f"entry id {value!r} must match {_ID_PATTERN.pattern}")
        return value

    def cache_schedule(self):
        from ecad.schedule import CacheSchedule

        return CacheSchedule.from_dict(self.schedule)

    def score(self, metric: str) -> float:
        """The entry's mean on ``metric``: on validation prompts when re-scored there."""
        return (self.validation or {}).get(metric, self.quality[metric])

    def bounds(self, metric: str) -> tuple[float, float]:
        """Its bootstrap interval on ``metric``, or (score, score) when none was recorded."""
        low, high = (self.interval or {}).get(metric, (self.score(metric),) * 2)
        return float(low), float(high)


def outranks(entry: BankEntry, reference: BankEntry, metric: str) -> bool:
    """True only if ``entry`` beats ``reference`` on ``metric`` beyond the noise: its interval lies
    wholly above the reference's (a point estimate that merely wins by noise does not count)."""
    return entry.bounds(metric)[0] > reference.bounds(metric)[1]


def quality_for_ranking(entry: BankEntry, no_cache: BankEntry, metric: str) -> float:
    """``entry``'s score on ``metric`` for ranking by quality, capped at no-cache's unless it
    ``outranks`` no-cache: no cached schedule is "better than no caching" by noise alone."""
    score = entry.score(metric)
    return score if outranks(entry, no_cache, metric) else min(score, no_cache.score(metric))


class HardwareProfile(BaseModel):
    """Measured latency of every entry on one device/dtype/batch-size/threads combination."""

    model_config = ConfigDict(extra="forbid")

    key: str
    device: str
    device_name: str
    dtype: str
    batch_size: int = Field(ge=1)
    num_threads: int | None = None
    measured_at: datetime
    repeats: int = Field(ge=1)
    latency_ms: dict[str, float] = Field(description="Entry id -> median wall-clock ms per call.")

    @field_validator("latency_ms")
    @classmethod
    def _positive(cls, value: dict[str, float]) -> dict[str, float]:
        for entry_id, ms in value.items():
            if not (ms > 0 and ms < float("inf")):
                raise ValueError(f"latency of {entry_id!r} must be a positive finite number, got {ms}")
        return value


class ScheduleBank(BaseModel):
    """A model setting's schedule bank.

    The setting's fields are flat in the file (``height``, ``width``, ...); construct a bank with
    ``ScheduleBank(**setting.to_dict(), ...)`` and read it back as ``bank.setting``.
    """

    model_config = ConfigDict(extra="forbid")

    format_version: Literal[1] = BANK_FORMAT_VERSION
    model: str = Field(description="Diffusers model id, or the model folder relative to the bank file "
                                   "('./' or '../' first); absolute in memory once loaded.")
    model_fingerprint: str = Field(description="sha256 of the transformer config (see fingerprint()).")
    weights_sha256: str | None = Field(
        default=None, description="sha256 of the transformer's weights (see weights_fingerprint()), when known.")
    notice: str | None = Field(default=None, description="Where the entries come from, whose figures they carry.")
    height: int = Field(gt=0)
    width: int = Field(gt=0)
    num_inference_steps: int = Field(gt=0)
    guidance_scale: float
    num_frames: int | None = Field(default=None, gt=0, description="Frames of each video (a video model's bank; "
                                   "absent: images, or the pipeline's default frame count).")
    scorer: str = Field(description="Scorer the front was searched with.")
    quality_metric: str = Field(description="Key of BankEntry.quality that ranks entries (higher is better).")
    objectives: list[str] | None = Field(
        default=None,
        description="Keys of BankEntry.quality the front was searched over (maximised, beside cost); "
        "None: the scorer's score alone (banks from before objectives could be chosen).",
    )
    created_at: datetime = Field(default_factory=lambda: datetime.now(timezone.utc))
    calibration: dict[str, Any] = Field(default_factory=dict, description="Run metadata (prompts, seeds, ...).")
    entries: list[BankEntry]
    profiles: list[HardwareProfile] = Field(default_factory=list)

    @model_validator(mode="after")
    def _check_consistency(self) -> "ScheduleBank":
        from ecad.schedule import CacheSchedule

        if not self.entries:
            raise ValueError("a bank needs at least one entry (the no-cache schedule)")
        ids = [entry.id for entry in self.entries]
        duplicates = sorted({i for i in ids if ids.count(i) > 1})
        if duplicates:
            raise ValueError(f"duplicate entry ids: {duplicates}")
        layouts = set()
        has_no_cache = False
        for entry in self.entries:
            try:
                schedule = CacheSchedule.from_dict(entry.schedule)
                schedule.validate()
            except ValueError as err:
                raise ValueError(f"entry {entry.id!r}: invalid schedule: {err}") from None
            if schedule.num_steps != self.num_inference_steps:
                raise ValueError(
                    f"entry {entry.id!r}: schedule has {schedule.num_steps} steps, "
                    f"bank says num_inference_steps={self.num_inference_steps}"
                )
            layouts.add(json.dumps(schedule.layout.to_dict(), sort_keys=True))
            has_no_cache |= bool(schedule.mask.all())
            for metric in [self.quality_metric, *(self.objectives or [])]:
                if metric not in entry.quality:
                    raise ValueError(f"entry {entry.id!r}: quality has no {metric!r} score")
        if len(layouts) > 1:
            raise ValueError("entries were made for different block layouts")
        if not has_no_cache:
            raise ValueError("a bank must contain the no-cache (all-recompute) schedule")
        keys = [profile.key for profile in self.profiles]
        if len(keys) != len(set(keys)):
            raise ValueError("duplicate hardware profile keys")
        for profile in self.profiles:
            unknown = sorted(set(profile.latency_ms) - set(ids))
            if unknown:
                raise ValueError(f"profile {profile.key!r} times unknown entries {unknown}")
        return self

    @property
    def setting(self) -> Setting:
        """The setting every entry was searched and profiled for (flat keys in the file)."""
        return Setting(self.height, self.width, self.num_inference_steps, self.guidance_scale, self.num_frames)

    # -- lookups -------------------------------------------------------------------------------

    def entry(self, entry_id: str) -> BankEntry:
        for entry in self.entries:
            if entry.id == entry_id:
                return entry
        raise KeyError(f"no entry {entry_id!r} in bank; entries: {[e.id for e in self.entries]}")

    def no_cache_entry(self) -> BankEntry:
        for entry in self.entries:
            if entry.cache_schedule().mask.all():
                return entry
        raise AssertionError("validated bank without a no-cache entry")  # pragma: no cover

    def profile(self, key: str) -> HardwareProfile | None:
        return next((p for p in self.profiles if p.key == key), None)

    def with_profile(self, profile: HardwareProfile) -> "ScheduleBank":
        """A copy with ``profile`` added, replacing any profile with the same key."""
        others = [p for p in self.profiles if p.key != profile.key]
        return self.model_copy(update={"profiles": [*others, profile]})

    def check_transformer(self, transformer_config: dict[str, Any], *, source: str = "bank",
                          weights_sha256: str | None = None) -> bool:
        """Refuse a bank calibrated for another transformer (different config fingerprint).

        Same config but other weights (a fine-tune) is allowed with a warning: the schedules fit
        the layout, but their quality was judged on other weights. Returns False in that case.
        """
        actual = fingerprint(transformer_config)
        if actual != self.model_fingerprint:
            raise BankError(
                f"{source}: calibrated for a transformer with fingerprint {self.model_fingerprint[:12]}, "
                f"but the loaded transformer has {actual[:12]} (model {self.model!r}); "
                "recalibrate with ecad-calibrate for this model"
            )
        if weights_sha256 is not None and self.weights_sha256 is not None and weights_sha256 != self.weights_sha256:
            logger.warning(
                "%s: the transformer has the bank's architecture but other weights (sha256 %s, bank %s): "
                "a fine-tune? Its schedules' quality was judged on %s; rescore with ecad-rescore",
                source, weights_sha256[:12], self.weights_sha256[:12], self.model)
            return False
        return True

    # -- files ---------------------------------------------------------------------------------

    @classmethod
    def load(cls, path: str | os.PathLike) -> "ScheduleBank":
        path = Path(path)
        try:
            text = path.read_text(encoding="utf-8")
        except FileNotFoundError:
            raise BankError(f"{path}: bank file not found") from None
        except OSError as err:
            raise BankError(f"{path}: cannot read bank file: {err}") from None
        try:
            data = json.loads(text)
        except json.JSONDecodeError as err:
            raise BankError(f"{path}: not valid JSON ({err.msg} at line {err.lineno})") from None
        if isinstance(data, dict) and data.get("format_version") not in (None, BANK_FORMAT_VERSION):
            raise BankError(
                f"{path}: bank format_version {data.get('format_version')!r} is not supported "
                f"(this ecad reads version {BANK_FORMAT_VERSION})"
            )
        try:
            bank = cls.model_validate(data)
        except ValidationError as err:
            problems = "; ".join(
                f"{'.'.join(str(p) for p in e['loc']) or '<root>'}: {e['msg']}" for e in err.errors()
            )
            raise BankError(f"{path}: invalid bank: {problems}") from None
        if bank.model.startswith(("./", "../")):  # relative to the bank file, not to the caller's cwd
            bank.model = os.path.normpath(path.parent.absolute() / bank.model)
            # The calibration metadata names the same folder (e.g. the scenes reward's model_dir)
            # relative to the bank too: resolved here so that save() elsewhere rewrites it right.
            bank.calibration = _resolved_model_paths(bank.calibration, bank.model, path.parent)
        return bank

    def save(self, path: str | os.PathLike) -> Path:
        """Write atomically: a crash leaves either the old file or the new one, never half.

        A local model folder is stored relative to the bank file, so a checkout's bank finds that
        checkout's model wherever it lies (hub ids are stored as they are)."""
        path = Path(path)
        stored = self.model_copy(update={"model": portable_model_reference(self.model, path.parent),
                                         "calibration": portable_paths(self.calibration, self.model, path.parent)})
        unset = {"num_frames"} if self.num_frames is None else None  # an image bank's file has no frames key
        atomic_write_text(path, stored.model_dump_json(indent=2, exclude=unset) + "\n")
        return path


def portable_model_reference(model: str, bank_folder: Path) -> str:
    """A local model folder as a path relative to ``bank_folder`` ('./' or '../' first); else ``model``."""
    if model.startswith(("./", "../")) or not Path(model).is_dir():
        return model
    relative = os.path.relpath(Path(model).absolute(), bank_folder.absolute())
    return relative if relative.startswith("..") else f"./{relative}"


def portable_paths(value: Any, model: str, bank_folder: Path) -> Any:
    """``value`` (JSON-like) with the model folder's path written as the bank writes its ``model``
    (relative to the bank's folder), so a bank's metadata records no path of the machine it was
    made on (e.g. the scenes reward's ``model_dir`` in the calibration's scorer arguments)."""
    if isinstance(value, dict):
        return {k: portable_paths(v, model, bank_folder) for k, v in value.items()}
    if isinstance(value, list):
        return [portable_paths(v, model, bank_folder) for v in value]
    if isinstance(value, str) and Path(model).is_dir() and Path(value).absolute() == Path(model).absolute():
        return portable_model_reference(value, bank_folder)
    return value


def _resolved_model_paths(value: Any, model: str, bank_folder: Path) -> Any:
    """``value`` with each relative path that names ``model`` from ``bank_folder`` made absolute."""
    if isinstance(value, dict):
        return {k: _resolved_model_paths(v, model, bank_folder) for k, v in value.items()}
    if isinstance(value, list):
        return [_resolved_model_paths(v, model, bank_folder) for v in value]
    if isinstance(value, str) and value.startswith(("./", "../")):
        resolved = os.path.normpath(bank_folder.absolute() / value)
        return resolved if resolved == model else value
    return value


def fingerprint(transformer_config: dict[str, Any]) -> str:
    """sha256 of a transformer config, ignoring bookkeeping keys (paths, library versions)."""
    relevant = {k: v for k, v in dict(transformer_config).items() if not k.startswith("_")}
    canonical = json.dumps(relevant, sort_keys=True, default=str)
    return hashlib.sha256(canonical.encode()).hexdigest()


def weights_fingerprint(transformer: Any) -> str:
    """sha256 over the transformer's parameters and buffers (name, dtype, shape, bytes), in name order.

    Reads every weight once (seconds for PixArt, about a minute for FLUX on a fast disk).
    """
    import torch

    digest = hashlib.sha256()
    for name, tensor in sorted(transformer.state_dict().items()):
        tensor = tensor.detach().to("cpu").contiguous()
        digest.update(f"{name}|{tensor.dtype}|{list(tensor.shape)}|".encode())
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def hardware_key(device: str, dtype: str, batch_size: int, num_threads: int | None = None) -> str:
    """Key of this machine's profile, e.g. 'cpu/Intel(R) Xeon(R) .../float32/bs1/t1'."""
    name = device_name(device)
    threads = f"/t{num_threads}" if device.startswith("cpu") and num_threads else ""
    return f"{device.split(':')[0]}/{name}/{dtype}/bs{batch_size}{threads}"


def pipeline_hardware_key(pipe: Any, batch_size: int = 1) -> str:
    """`hardware_key` of the machine and precision `pipe` runs on (CPU: with torch's thread count)."""
    import torch

    device = str(pipe.device)
    dtype = str(pipe.transformer.dtype).removeprefix("torch.")
    threads = torch.get_num_threads() if device.startswith("cpu") else None
    return hardware_key(device, dtype, batch_size, threads)


def device_name(device: str) -> str:
    if device.startswith("cuda"):
        import torch

        return torch.cuda.get_device_name(torch.device(device))
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()
