"""The server's knobs: one dataclass, and the one place any ``ECAD_*`` variable is read.

``ENV_VARS`` maps each variable to its field; README's "Environment variables" table documents
every one (tests/test_serving.py checks that the code and the table name the same variables).
An empty variable counts as unset.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping

import torch

from ecad.bank import BankError, ScheduleBank
from ecad.bank_catalog import bank_folders, find_banks
from ecad.paths import DEFAULT_MODEL, model_name


def _default_device() -> str:
    return "cuda" if torch.cuda.is_available() else "cpu"


@dataclass
class ServingConfig:
    model: str = str(DEFAULT_MODEL)
    bank: str | None = None  # one bank file; default: every bank of the model (ecad.bank_catalog)
    bank_dirs: tuple[str, ...] = ()  # extra folders of <model>/<setting>.json banks, searched first
    device: str = field(default_factory=_default_device)
    dtype: str = "float32"
    num_threads: int | None = 1  # CPU: one thread is the fast, predictable choice on small boxes
    # Request limits: the configurable half of RequestLimits (the model gives the other half).
    max_images: int = 8
    max_prompt_chars: int = 1000
    max_side_factor: int = 4  # width/height (a video model: frames too) at most this times the bank's
    max_steps: int = 100
    max_queue: int = 8  # requests waiting for the pipeline beyond this get 503
    max_concurrency: int = 16  # HTTP requests BentoML admits at once
    timeout_s: float = 120.0  # a request predicted to need longer (fastest schedule) is refused
    planner: str = "planner"  # "planner" (deadline-aware, across the queue) or "greedy"
    slots: int = 2  # pipeline views sharing the weights: a running request pauses between steps for another; 1 = never
    batching: str = "auto"  # "auto": batch same-schedule requests where the latency model predicts a gain; "off"
    latency_fit_s: float = 60.0  # start-up seconds for fitting the latency model at other sizes; 0: scale by MACs
    profile_repeats: int = 3
    profile_time_budget_s: float = 120.0
    persist_profile: bool = False  # write a new profile back into the bank file
    latency_quantile: float = 0.9  # predictions promise this quantile of actual/profiled
    latency_window: int = 64  # observations per entry behind the quantile; 0 = trust the profile
    latency_margin: float = 1.1  # factor over the profile's median until observations arrive
    # Prometheus files of this server; `bentoml serve` makes a fresh folder when unset (server/service.py).
    metrics_dir: str | None = None

    @classmethod
    def from_env(cls, environ: Mapping[str, str] = os.environ) -> "ServingConfig":
        """The defaults, with every ``ECAD_*`` variable that is set (ValueError names a bad one)."""
        values: dict[str, Any] = {}
        for variable, (name, parse) in ENV_VARS.items():
            raw = environ.get(variable, "")
            if raw == "":
                continue
            try:
                values[name] = parse(raw)
            except ValueError as err:
                raise ValueError(f"{variable}={raw!r}: {err}") from None
        return cls(**values)


def _flag(raw: str) -> bool:
    if raw.lower() in ("1", "true", "yes"):
        return True
    if raw.lower() in ("0", "false", "no"):
        return False
    raise ValueError("expected 1 or 0")


def _folders(raw: str) -> tuple[str, ...]:
    return tuple(d for d in raw.split(os.pathsep) if d)


# Every variable the server reads -> (ServingConfig field, parser).
ENV_VARS: dict[str, tuple[str, Callable[[str], Any]]] = {
    "ECAD_MODEL": ("model", str),
    "ECAD_BANK": ("bank", str),
    "ECAD_BANK_DIRS": ("bank_dirs", _folders),
    "ECAD_DEVICE": ("device", str),
    "ECAD_DTYPE": ("dtype", str),
    "ECAD_NUM_THREADS": ("num_threads", int),
    "ECAD_MAX_IMAGES": ("max_images", int),
    "ECAD_MAX_QUEUE": ("max_queue", int),
    "ECAD_MAX_CONCURRENCY": ("max_concurrency", int),
    "ECAD_TIMEOUT_S": ("timeout_s", float),
    "ECAD_PLANNER": ("planner", str),
    "ECAD_SLOTS": ("slots", int),
    "ECAD_BATCHING": ("batching", str),
    "ECAD_LATENCY_FIT_S": ("latency_fit_s", float),
    "ECAD_PROFILE_BUDGET_S": ("profile_time_budget_s", float),
    "ECAD_PERSIST_PROFILE": ("persist_profile", _flag),
    "ECAD_LATENCY_QUANTILE": ("latency_quantile", float),
    "ECAD_LATENCY_WINDOW": ("latency_window", int),
    "ECAD_LATENCY_MARGIN": ("latency_margin", float),
    "ECAD_METRICS_DIR": ("metrics_dir", str),
}


def load_banks(config: ServingConfig, transformer_config: dict[str, Any] | None = None) -> dict[Path, ScheduleBank]:
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
        return {path: bank}
    banks = find_banks(config.model, transformer_config=transformer_config, folders=config.bank_dirs)
    if not banks:
        folders = ", ".join(str(f) for f in bank_folders(config.bank_dirs))
        which = " for its transformer config" if transformer_config is not None else ""
        raise BankError(
            f"no schedule bank for model {config.model!r}{which} in {folders} (folder {model_name(config.model)}/); "
            f"run `ecad-calibrate --model {config.model}` or set ECAD_BANK to a bank file"
        )
    return banks
