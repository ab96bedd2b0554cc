"""Evaluation memo: every candidate evaluated once per run, keyed by its schedule hash.

An append-only JSONL file in the run folder. Each line is flushed and fsynced as soon as its
candidate finishes, so a ``kill -9`` loses at most the candidates that were still running. A
torn last line (killed mid-write) is ignored on load and overwritten by the next append.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ecad.search.evaluation import CandidateResult
from ecad.search.space import pack_bits, unpack_bits


@dataclass
class MemoRecord:
    key: str
    bits: np.ndarray
    result: CandidateResult
    generation: int  # the generation whose evaluation first asked for this candidate
    label: str | None = None  # e.g. "fora-2" for seeded heuristics

    def to_json(self) -> str:
        return json.dumps(
            {
                "key": self.key,
                "bits": pack_bits(self.bits),
                "generation": self.generation,
                "label": self.label,
                **self.result.to_dict(),
            },
            sort_keys=True,
        )

    @classmethod
    def from_json(cls, line: str, n_var: int) -> "MemoRecord":
        data = json.loads(line)
        return cls(
            key=data["key"],
            bits=unpack_bits(data["bits"], n_var),
            result=CandidateResult.from_dict(data),
            generation=int(data["generation"]),
            label=data.get("label"),
        )


class Memo:
    def __init__(self, path: Path, n_var: int):
        self.path = Path(path)
        self.n_var = n_var
        self.records: dict[str, MemoRecord] = {}
        self._load()

    def _load(self) -> None:
        if not self.path.exists():
            return
        raw = self.path.read_bytes()
        good_end = 0
        for line in raw.splitlines(keepends=True):
            if not line.endswith(b"\n"):
                break  # torn final write
            text = line.decode("utf-8").strip()
            if text:
                record = MemoRecord.from_json(text, self.n_var)
                self.records.setdefault(record.key, record)
            good_end += len(line)
        if good_end != len(raw):
            with open(self.path, "r+b") as handle:
                handle.truncate(good_end)

    def __contains__(self, key: str) -> bool:
        return key in self.records

    def __getitem__(self, key: str) -> MemoRecord:
        return self.records[key]

    def __len__(self) -> int:
        return len(self.records)

    def add(self, record: MemoRecord) -> None:
        if record.key in self.records:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path, "a", encoding="utf-8") as handle:
            handle.write(record.to_json() + "\n")
            handle.flush()
            os.fsync(handle.fileno())
        self.records[record.key] = record
