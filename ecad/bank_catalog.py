"""The banks of a model, and the one that fits a request's setting.

A model may have several banks (one per resolution x steps x guidance). `find_banks` collects every
bank of a model from the bank folders (the package's ``schedules/`` and any extra folders), by
its hub id or folder name, or by its transformer's config fingerprint for a copy under another
name. `choose_bank` picks the bank made for the requested `Setting`; only when none matches does
it take the nearest one and resample its schedules to the requested steps, and it says so.
Pure: no pipeline, no serving state.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Sequence

from ecad.bank import BankError, ScheduleBank, fingerprint
from ecad.paths import SCHEDULES_DIR, model_name
from ecad.schedule import CacheSchedule
from ecad.setting import Setting

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class CatalogBank:
    path: Path
    bank: ScheduleBank


@dataclass(frozen=True)
class BankChoice:
    """The bank for a request. `exact` is False when no bank was made for `setting`; then
    `schedule(entry_id)` resamples to the requested steps and `reason` says what was done."""

    path: Path
    bank: ScheduleBank
    setting: Setting
    exact: bool
    reason: str

    def schedule(self, entry_id: str) -> CacheSchedule:
        """An entry's schedule for the requested number of steps."""
        return self.bank.entry(entry_id).cache_schedule().resample(self.setting.num_inference_steps)


def bank_folders(extra: Iterable[str | os.PathLike] = ()) -> list[Path]:
    """Folders holding ``<model>/<setting>.json`` banks: `extra` first, then the package's own."""
    folders = [Path(f) for f in extra] + [SCHEDULES_DIR]
    return list(dict.fromkeys(f.resolve() for f in folders if f.is_dir()))


def find_banks(model: str | os.PathLike, *, transformer_config: dict[str, Any] | None = None,
               folders: Sequence[str | os.PathLike] | None = None) -> list[CatalogBank]:
    """Every bank for `model` (hub id, or a folder: matched by its last part), in file-name order.

    With `transformer_config`, banks of any folder whose fingerprint matches are found too (a
    local copy of the hub weights under another name), and banks of the model's folder made for
    another config are skipped with a warning. Unreadable bank files are skipped with a warning.
    """
    name = model_name(model)
    wanted = fingerprint(transformer_config) if transformer_config is not None else None
    found: dict[Path, CatalogBank] = {}
    for root in bank_folders() if folders is None else bank_folders(folders):
        candidates = sorted(root.glob(f"{name}/*.json")) + (sorted(root.glob("*/*.json")) if wanted else [])
        for path in candidates:
            path = path.resolve()
            if path in found:
                continue
            in_model_folder = path.parent.name == name
            try:
                bank = ScheduleBank.load(path)
            except BankError as err:
                if in_model_folder:
                    logger.warning("skipping %s", err)
                continue
            if wanted is None or bank.model_fingerprint == wanted:
                found[path] = CatalogBank(path, bank)
            elif in_model_folder:
                logger.warning("%s: made for another transformer config than the loaded %s; skipped", path, model)
    return sorted(found.values(), key=lambda c: (c.path.parent.name != name, str(c.path)))


def _distance(bank: Setting, wanted: Setting) -> tuple:
    """Order of preference when no bank matches: same resolution first, then same steps, then
    same guidance, then the nearest pixel count and step count."""
    return (
        (bank.height, bank.width) != (wanted.height, wanted.width),
        bank.num_inference_steps != wanted.num_inference_steps,
        bank.guidance_scale != wanted.guidance_scale,
        abs(bank.pixels - wanted.pixels),
        abs(bank.num_inference_steps - wanted.num_inference_steps),
        abs(bank.guidance_scale - wanted.guidance_scale),
    )


def choose_bank(banks: Sequence[CatalogBank], setting: Setting) -> BankChoice:
    """The bank made for `setting`, else the nearest (see `_distance`), with the reason."""
    if not banks:
        raise BankError(f"no schedule bank to choose from for {setting}")
    best = min(banks, key=lambda c: _distance(c.bank.setting, setting))
    have = best.bank.setting
    if have == setting:
        return BankChoice(best.path, best.bank, setting, True, f"bank made for {setting.name}, guidance "
                          f"{setting.guidance_scale}: {best.path.name}")
    differences = [f"{k} {getattr(have, k)} -> {getattr(setting, k)}" for k in setting.to_dict()
                   if getattr(have, k) != getattr(setting, k)]
    steps = (f"; schedules resampled from {have.num_inference_steps} to {setting.num_inference_steps} steps"
             if have.num_inference_steps != setting.num_inference_steps else "")
    reason = (f"no bank for {setting.name} at guidance {setting.guidance_scale} among "
              f"{', '.join(sorted(c.path.name for c in banks))}; using {best.path.name} ({', '.join(differences)})"
              f"{steps}")
    return BankChoice(best.path, best.bank, setting, False, reason)
