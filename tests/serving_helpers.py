"""Test helpers: a bank of heuristic schedules for any pipeline, a synthetic latency profile, and
the real server (``bentoml serve server.service:ECAD``, which the wheel does not ship) started on
a free local port.

The quality numbers of `heuristic_bank` are a stand-in (the fraction of recomputed work), so a bank
built this way exercises selection and serving end to end without a calibration run. Real banks
come from ``ecad-calibrate``.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator, Sequence

from ecad.adapters import get_adapter
from ecad.bank import BankEntry, ScheduleBank, fingerprint
from ecad.cost import image_macs
from ecad.heuristics import heuristic_suite
from ecad.paths import REPO_ROOT
from ecad.setting import Setting


def heuristic_bank(pipe, model: str, setting: Setting,
                   names: Sequence[str] = ("no-cache", "fora-2", "fora-3", "fora-4")) -> ScheduleBank:
    layout = get_adapter(pipe).layout(pipe.transformer)
    suite = heuristic_suite(layout, setting.num_inference_steps)
    unknown = sorted(set(names) - set(suite))
    if unknown:
        raise ValueError(f"unknown heuristics {unknown}; available: {sorted(suite)}")
    entries = [
        BankEntry(
            id=name, schedule=suite[name].to_dict(), macs=image_macs(pipe, setting, suite[name]),
            quality={"recompute_fraction": suite[name].recompute_fraction},
            source="no-cache" if suite[name].mask.all() else "heuristic",
        )
        for name in names
    ]
    return ScheduleBank(
        model=model, model_fingerprint=fingerprint(dict(pipe.transformer.config)), **setting.to_dict(),
        scorer="none (test bank)", quality_metric="recompute_fraction", entries=entries,
    )


def synthetic_profile(bank: ScheduleBank, *, ms_per_gmac: float = 10.0, num_threads: int | None = None):
    """A hardware profile for this machine with latency proportional to MACs (deterministic).

    Tests use it so that selection does not depend on a tiny model's noisy timings.
    """
    from datetime import datetime, timezone

    import torch

    from ecad.bank import HardwareProfile, device_name, hardware_key

    threads = num_threads or torch.get_num_threads()
    return HardwareProfile(
        key=hardware_key("cpu", "float32", 1, threads), device="cpu", device_name=device_name("cpu"),
        dtype="float32", batch_size=1, num_threads=threads, measured_at=datetime.now(timezone.utc), repeats=1,
        latency_ms={entry.id: entry.macs / 1e9 * ms_per_gmac for entry in bank.entries},
    )


@contextmanager
def running_server(env: dict[str, str], *, home: str | os.PathLike, ready_timeout_s: float = 150.0,
                   checkout: str | os.PathLike | None = None) -> Iterator[str]:
    """``bentoml serve server.service:ECAD`` on a free 127.0.0.1 port; yields its base URL.

    ``env`` adds to the environment (ECAD_MODEL, ECAD_BANK, ...); BentoML's home, log and
    telemetry switch live under ``home``. ``checkout``: serve another checkout's code (its
    ``server`` and ``ecad``; a benchmark's baseline), by default this one's. The server runs in its
    own process group and is stopped by its pid (SIGTERM, then SIGKILL), whatever happens in the block.
    """
    import socket
    import urllib.request

    home = Path(home)
    home.mkdir(parents=True, exist_ok=True)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    log_path = home / "server.log"
    repo = Path(checkout) if checkout is not None else REPO_ROOT
    full_env = {**os.environ, "BENTOML_DO_NOT_TRACK": "true", "BENTOML_HOME": str(home / "bentoml"),
                "HF_HUB_OFFLINE": "1", "PYTHONUNBUFFERED": "1", **env}
    if checkout is not None:
        full_env["PYTHONPATH"] = os.pathsep.join([str(repo), *filter(None, [full_env.get("PYTHONPATH")])])
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "bentoml", "serve", "server.service:ECAD", "--host", "127.0.0.1", "--port", str(port)],
            cwd=repo, env=full_env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + ready_timeout_s
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"server exited with {proc.returncode}:\n{log_path.read_text()[-4000:]}")
            try:
                with urllib.request.urlopen(f"{url}/readyz", timeout=2) as response:
                    if response.status == 200:
                        break
            except OSError:  # not listening yet, or busy loading
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"server not ready after {ready_timeout_s:.0f} s:\n{log_path.read_text()[-4000:]}")
            time.sleep(0.5)
        yield url
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
