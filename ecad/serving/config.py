"""The server's knobs (one dataclass, read from ECAD_* variables) and where its banks come from."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from ecad.bank import BankError, ScheduleBank
from ecad.bank_catalog import CatalogBank, bank_folders, find_banks
from ecad.paths import DEFAULT_MODEL, model_name


@dataclass
class ServingConfig:
    model: str = str(DEFAULT_MODEL)
    bank: str | None = None  # one bank file; default: every bank of the model (ecad.bank_catalog)
    bank_dirs: tuple[str, ...] = ()  # extra folders of <model>/<setting>.json banks, searched first
    device: str = "cpu"
    dtype: str = "float32"
    num_threads: int | None = 1  # CPU: one thread is the fast, predictable choice on small boxes
    # Request limits: the configurable half of RequestLimits (the model gives the other half).
    max_images: int = 8
    max_prompt_chars: int = 1000
    max_side_factor: int = 4  # width/height at most this times the bank's
    max_steps: int = 100
    max_queue: int = 8  # requests waiting for the pipeline beyond this get 503
    timeout_s: float = 120.0  # a request predicted to need longer (fastest schedule) is refused
    planner: str = "planner"  # "planner" (deadline-aware, across the queue) or "greedy"
    profile_repeats: int = 3
    profile_time_budget_s: float = 120.0
    persist_profile: bool = False  # write a new profile back into the bank file
    latency_quantile: float = 0.9  # predictions promise this quantile of actual/profiled
    latency_window: int = 64  # observations per entry behind the quantile; 0 = trust the profile
    latency_margin: float = 1.1  # factor over the profile's median until observations arrive

    @classmethod
    def from_env(cls) -> "ServingConfig":
        env = os.environ
        threads = env.get("ECAD_NUM_THREADS")
        return cls(
            model=env.get("ECAD_MODEL", str(DEFAULT_MODEL)),
            bank=env.get("ECAD_BANK") or None,
            bank_dirs=tuple(d for d in env.get("ECAD_BANK_DIRS", "").split(os.pathsep) if d),
            device=env.get("ECAD_DEVICE", "cuda" if torch.cuda.is_available() else "cpu"),
            dtype=env.get("ECAD_DTYPE", "float32"),
            num_threads=int(threads) if threads else 1,
            max_images=int(env.get("ECAD_MAX_IMAGES", 8)),
            max_queue=int(env.get("ECAD_MAX_QUEUE", 8)),
            timeout_s=float(env.get("ECAD_TIMEOUT_S", 120)),
            planner=env.get("ECAD_PLANNER", "planner"),
            profile_time_budget_s=float(env.get("ECAD_PROFILE_BUDGET_S", 120)),
            persist_profile=env.get("ECAD_PERSIST_PROFILE", "0") == "1",
            latency_quantile=float(env.get("ECAD_LATENCY_QUANTILE", 0.9)),
            latency_window=int(env.get("ECAD_LATENCY_WINDOW", 64)),
            latency_margin=float(env.get("ECAD_LATENCY_MARGIN", 1.1)),
        )


def load_banks(config: ServingConfig, transformer_config: dict[str, Any] | None = None) -> list[CatalogBank]:
    """The one place the server finds and reads its banks: ``ECAD_BANK``'s file alone, else every
    bank of the model in the catalogue (``ECAD_BANK_DIRS``, then ``schedules/``), in catalogue order.

    With ``transformer_config`` every bank is checked against it: a named bank made for another
    transformer is refused (BankError naming both fingerprints); the catalogue skips such banks,
    and finding none left is an error too.
    """
    if config.bank:
        path = Path(config.bank)
        bank = ScheduleBank.load(path)
        if transformer_config is not None:
            bank.check_transformer(transformer_config, source=str(path))
        return [CatalogBank(path, bank)]
    banks = find_banks(config.model, transformer_config=transformer_config, folders=config.bank_dirs)
    if not banks:
        folders = ", ".join(str(f) for f in bank_folders(config.bank_dirs))
        which = " for its transformer config" if transformer_config is not None else ""
        raise BankError(
            f"no schedule bank for model {config.model!r}{which} in {folders} (folder {model_name(config.model)}/); "
            f"run `ecad-calibrate --model {config.model}` or set ECAD_BANK to a bank file"
        )
    return banks
