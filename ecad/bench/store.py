"""What a benchmark run has measured so far, on disk, so that rerunning the same command resumes it.

A run on the bundled model takes hours on a 2-core box; an interruption must not cost them again.
`WorkStore` keeps one JSON line per finished unit of work, appended and flushed as it finishes:

- ``scores.jsonl``: a point scored on a split (quality per image, MACs, cache bytes, its first
  image as a PNG for the report's grid);
- ``rounds.jsonl``: one timed round (selection or verdict), the values `ecad.timing.time_rounds`
  added in that round;
- ``latency.jsonl``: one prompt of the latency-predictability pass (every point's MACs and seconds);
- ``stages.jsonl``: the seconds each run spent in each stage (a resumed run adds its own), so the
  report's run time is the sum over every run that contributed.

``identity.json`` holds what makes two runs the same run (model, setting, splits, batch size,
bars, methods); a folder made for another identity is refused unless ``fresh`` starts it over.
A line cut short by a kill is ignored. JSON only: nothing here is unpickled.
"""

from __future__ import annotations

import base64
import io
import json
import os
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ecad.atomic import atomic_write_text
from ecad.timing import Timings

FILES = ("scores.jsonl", "rounds.jsonl", "latency.jsonl", "stages.jsonl")


class WorkStore:
    def __init__(self, folder: str | os.PathLike, identity: dict[str, Any], *, fresh: bool = False):
        self.folder = Path(folder)
        self.identity = json.loads(json.dumps(identity, sort_keys=True))
        marker = self.folder / "identity.json"
        if fresh and self.folder.exists():
            shutil.rmtree(self.folder)
        if marker.exists():
            stored = json.loads(marker.read_text())
            if stored != self.identity:
                changed = sorted(k for k in set(stored) | set(self.identity) if stored.get(k) != self.identity.get(k))
                raise ValueError(f"{self.folder} holds a benchmark run with other {', '.join(changed)}; "
                                 "rerun with --fresh to start over, or pass another --work-dir")
        else:
            self.folder.mkdir(parents=True, exist_ok=True)
            atomic_write_text(marker, json.dumps(self.identity, indent=1, sort_keys=True) + "\n")
        self._scores = {(r["label"], r["split"]): r for r in self._read("scores.jsonl")}

    def _read(self, name: str) -> list[dict]:
        path = self.folder / name
        if not path.exists():
            return []
        out = []
        for line in path.read_text().splitlines():
            try:
                out.append(json.loads(line))
            except json.JSONDecodeError:  # the last line of a killed run
                continue
        return out

    def _append(self, name: str, record: dict) -> None:
        with open(self.folder / name, "a", encoding="utf-8") as f:
            f.write(json.dumps(record, allow_nan=True) + "\n")
            f.flush()
            os.fsync(f.fileno())

    # -- scores -------------------------------------------------------------------------------
    def score(self, label: str, split: str) -> dict | None:
        return self._scores.get((label, split))

    def add_score(self, record: dict) -> None:
        self._scores[(record["label"], record["split"])] = record
        self._append("scores.jsonl", record)

    # -- timed rounds ---------------------------------------------------------------------------
    def rounds(self, stage: str) -> list[dict]:
        return [r for r in self._read("rounds.jsonl") if r["stage"] == stage]

    def add_round(self, stage: str, index: int, added: dict) -> None:
        self._append("rounds.jsonl", {"stage": stage, "round": index, **added})

    # -- latency --------------------------------------------------------------------------------
    def latency(self) -> list[dict]:
        return self._read("latency.jsonl")

    def add_latency(self, record: dict) -> None:
        self._append("latency.jsonl", record)

    # -- run time -------------------------------------------------------------------------------
    def add_stage(self, stage: str, seconds: float) -> None:
        self._append("stages.jsonl", {"stage": stage, "seconds": seconds})

    def stage_seconds(self) -> dict[str, float]:
        """Seconds per stage, summed over every run that worked in this folder."""
        out: dict[str, float] = {}
        for r in self._read("stages.jsonl"):
            out[r["stage"]] = out.get(r["stage"], 0.0) + r["seconds"]
        return out


def timings_tail(timings: Timings, before: dict[str, int]) -> dict:
    """The values `timings` gained since `before` (`timings_lengths` taken earlier)."""
    series = _series(timings)
    return {"values": {name: {k: v[before.get(f"{name}/{k}", 0):] for k, v in per.items()}
                       for name, per in series.items()},
            "reference_wall_s": timings.reference_wall_s[before.get("reference_wall_s", 0):],
            "reference_cpu_s": timings.reference_cpu_s[before.get("reference_cpu_s", 0):],
            "failed": dict(timings.failed)}


def timings_lengths(timings: Timings) -> dict[str, int]:
    lengths = {f"{name}/{k}": len(v) for name, per in _series(timings).items() for k, v in per.items()}
    return lengths | {"reference_wall_s": len(timings.reference_wall_s), "reference_cpu_s": len(timings.reference_cpu_s)}


def replay(timings: Timings, added: dict) -> None:
    """Add one stored round's values to `timings` (the inverse of `timings_tail`)."""
    for name, per in added["values"].items():
        for k, values in per.items():
            getattr(timings, k).setdefault(name, []).extend(values)
    timings.reference_wall_s.extend(added["reference_wall_s"])
    timings.reference_cpu_s.extend(added["reference_cpu_s"])
    timings.failed.update(added.get("failed", {}))


def _series(timings: Timings) -> dict[str, dict[str, list[float]]]:
    out: dict[str, dict[str, list[float]]] = {}
    for k in ("wall_s", "cpu_s", "ratios", "cpu_ratios"):
        for name, values in getattr(timings, k).items():
            out.setdefault(name, {})[k] = values
    return out


def image_png(image: torch.Tensor) -> str:
    """A [3, H, W] image in [0, 1] as base64 PNG (8 bits: for display only)."""
    from PIL import Image

    array = (image.clamp(0, 1).permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def png_image(text: str) -> torch.Tensor:
    from PIL import Image

    with Image.open(io.BytesIO(base64.b64decode(text))) as im:
        array = np.asarray(im.convert("RGB"), dtype=np.float32) / 255.0
    return torch.from_numpy(array).permute(2, 0, 1).contiguous()
