"""The banks of a model, and which of them fits a requested setting.

A model may have several banks (one per resolution x steps x guidance). `find_banks` collects every
bank of a model from the bank folders (the package's ``schedules/`` and any extra folders), by
its hub id or folder name, or by its transformer's config fingerprint for a copy under another
name. `choose_bank` is the rule for which bank serves a `Setting`: the one made for it, else the
nearest, with a note saying what differs. Pure: no pipeline, no serving state.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

from ecad.bank import BankError, ScheduleBank, fingerprint
from ecad.paths import SCHEDULES_DIR, model_name
from ecad.setting import Setting

logger = logging.getLogger(__name__)


def bank_folders(extra: Iterable[str | os.PathLike] = ()) -> list[Path]:
    """Folders holding ``<model>/<setting>.json`` banks: `extra` first, then the package's own."""
    folders = [Path(f) for f in extra] + [SCHEDULES_DIR]
    return list(dict.fromkeys(f.resolve() for f in folders if f.is_dir()))


def find_banks(model: str | os.PathLike, *, transformer_config: dict[str, Any] | None = None,
               folders: Sequence[str | os.PathLike] | None = None) -> dict[Path, ScheduleBank]:
    """Every bank for `model` (hub id, or a folder: matched by its last part), by file path, the
    model's own folder first, then in path order.

    With `transformer_config`, banks of any folder whose fingerprint matches are found too (a
    local copy of the hub weights under another name), and banks of the model's folder made for
    another config are skipped with a warning. Unreadable bank files are skipped with a warning.
    """
    name = model_name(model)
    wanted = fingerprint(transformer_config) if transformer_config is not None else None
    found: dict[Path, ScheduleBank] = {}
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
                found[path] = bank
            elif in_model_folder:
                logger.warning("%s: made for another transformer config than the loaded %s; skipped", path, model)
    return dict(sorted(found.items(), key=lambda item: (item[0].parent.name != name, str(item[0]))))


def _distance(bank: Setting, wanted: Setting) -> tuple:
    """Order of preference when no bank matches: same resolution first, then same frames (a
    video's), then same steps, then same guidance, then the nearest pixel count, frame count and
    step count."""
    return (
        (bank.height, bank.width) != (wanted.height, wanted.width),
        bank.num_frames != wanted.num_frames,
        bank.num_inference_steps != wanted.num_inference_steps,
        bank.guidance_scale != wanted.guidance_scale,
        abs(bank.pixels - wanted.pixels),
        abs((bank.num_frames or 1) - (wanted.num_frames or 1)),
        abs(bank.num_inference_steps - wanted.num_inference_steps),
        abs(bank.guidance_scale - wanted.guidance_scale),
    )


def choose_bank(settings: Mapping[str, Setting], wanted: Setting) -> tuple[str, str | None]:
    """The bank that serves `wanted`, from `settings` (each bank's name -> the setting it was made
    for): the one made for it, with no note; else the nearest (see `_distance`, ties to the first),
    with a note naming what differs and whether its schedules are moved to other steps."""
    if not settings:
        raise BankError(f"no schedule bank to choose from for {wanted}")
    name = min(settings, key=lambda n: _distance(settings[n], wanted))
    have = settings[name]
    if have == wanted:
        return name, None
    differences = [f"{k} {getattr(have, k)} -> {getattr(wanted, k)}" for k in wanted.to_dict()
                   if getattr(have, k) != getattr(wanted, k)]
    steps = (f"; its schedules moved by noise level from {have.num_inference_steps} to "
             f"{wanted.num_inference_steps} steps, their quality estimated"
             if have.num_inference_steps != wanted.num_inference_steps else "")
    return name, (f"no bank for {wanted.name} at guidance {wanted.guidance_scale} among "
                  f"{', '.join(sorted(settings))}; using {name} ({', '.join(differences)}){steps}")
