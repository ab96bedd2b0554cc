"""The run folder: everything a calibration run needs to continue after ``kill -9``.

::

    <run>/config.json              what is being searched (fixed for the run's life)
    <run>/state.json               population + objectives after the last finished generation
    <run>/memo.jsonl               every evaluated candidate, keyed by schedule hash (Memo)
    <run>/references.safetensors   uncached images the fidelity scorer compares against
    <run>/pareto.png               the front so far, the seeded heuristics, no-cache

Only JSON and safetensors, every file written to a temporary name then ``os.replace``-d, so a
crash leaves the old or the new version of a file, never half of one.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ecad.atomic import atomic_write_bytes
from ecad.search.optimizer.evaluation import CandidateResult

STATE_VERSION = 1


def renamed(value: Any, old: str, new: str) -> Any:
    """``value`` (JSON-like) with every string equal to ``old`` (e.g. a model path) replaced by ``new``."""
    if isinstance(value, dict):
        return {k: renamed(v, old, new) for k, v in value.items()}
    if isinstance(value, list):
        return [renamed(v, old, new) for v in value]
    return new if value == old else value


def model_path_hidden(config: dict[str, Any]) -> dict[str, Any]:
    """``config`` with its evaluator's model path (wherever it recurs) written as ``<model>``."""
    model = config.get("evaluator", {}).get("model")
    return renamed(config, model, "<model>") if isinstance(model, str) else config


#: evaluator entries that say how the work was executed, not what a render yields
EXECUTION_KEYS = ("batch_size", "device", "num_threads")
#: the parts of a run's config that decide how a schedule is scored (search settings may differ)
SCORING_PARTS = ("task", "space", "objectives", "evaluator")


def scoring_differences(first: dict[str, Any], other: dict[str, Any], *, ignore: tuple[str, ...] = ()) -> list[str]:
    """Where two run configs would score a schedule differently, as ``part`` or ``part.key``.

    The model is compared by the task's fingerprint, not by its path (hidden wherever it recurs);
    ``EXECUTION_KEYS`` and the names in ``ignore`` (a part, or a key in any part) are not compared.
    Merging runs needs none (`ecad.search.merge`); reusing another run's renders under a new
    cost ignores the cost and the objectives (`ecad.search.reuse`).
    """
    first, other = (json.loads(json.dumps(model_path_hidden(c), sort_keys=True)) for c in (first, other))
    skipped = set(EXECUTION_KEYS) | set(ignore)
    differ = []
    for part in SCORING_PARTS:
        if part in ignore:
            continue
        a, b = first.get(part), other.get(part)
        if isinstance(a, dict) and isinstance(b, dict):
            differ += [f"{part}.{k}" for k in sorted(a.keys() | b.keys()) if k not in skipped and a.get(k) != b.get(k)]
        elif a != b:
            differ.append(part)
    return differ


class RunFolderError(RuntimeError):
    pass


# -- the evaluation memo -------------------------------------------------------------------------
# An append-only JSONL file. Each line is flushed and fsynced as soon as its candidate finishes,
# so a ``kill -9`` loses at most the candidates that were still running. A torn last line (killed
# mid-write) is ignored on load and overwritten by the next append.


@dataclass
class MemoRecord:
    key: str
    bits: np.ndarray  # the candidate's genes (bool in a bit space), stored packed by the space
    result: CandidateResult
    generation: int  # the generation whose evaluation first asked for this candidate
    label: str | None = None  # e.g. "fora-2" for seeded heuristics
    #: None: a full evaluation (keyed by the schedule hash); "first": racing's first samples only
    #: (keyed ``<hash>@first``), not a candidate of the front
    stage: str | None = None
    #: images this evaluation rendered (None in memos written before it was recorded)
    images: int | None = None
    #: the bank id it has in the run it was copied from (``--renders-from``), e.g. "ecad-g7-1a2b3c4d":
    #: a copied record counts as generation 0 here, but its bank entry keeps the name it had there
    origin: str | None = None

    def searched_id(self) -> str:
        """Its bank id as a schedule the search found: the one it had in the run it was copied
        from, else ``ecad-g<generation>-<hash[:8]>``."""
        return self.origin or f"ecad-g{self.generation}-{self.key[:8]}"

    def to_json(self, space) -> str:
        extra = {name: value for name, value in (("stage", self.stage), ("images", self.images), ("origin", self.origin))
                 if value is not None}
        return json.dumps(
            {
                "key": self.key,
                "bits": space.pack(self.bits),
                "generation": self.generation,
                "label": self.label,
                **extra,
                **self.result.to_dict(),
            },
            sort_keys=True,
        )

    @classmethod
    def from_json(cls, line: str, space) -> "MemoRecord":
        data = json.loads(line)
        return cls(
            key=data["key"],
            bits=space.unpack(data["bits"]),
            result=CandidateResult.from_dict(data),
            generation=int(data["generation"]),
            label=data.get("label"),
            stage=data.get("stage"),
            images=data.get("images"),
            origin=data.get("origin"),
        )


def read_memo(path: Path, space) -> tuple[list[MemoRecord], int]:
    """The complete records of a memo file, in order, and the bytes they span. Only reads, so it
    is safe on the memo of a run still writing (whose last line may be half written)."""
    raw = Path(path).read_bytes()
    records, good_end = [], 0
    for line in raw.splitlines(keepends=True):
        if not line.endswith(b"\n"):
            break  # torn final write
        text = line.decode("utf-8").strip()
        if text:
            records.append(MemoRecord.from_json(text, space))
        good_end += len(line)
    return records, good_end


class Memo:
    def __init__(self, path: Path, space):
        self.path = Path(path)
        self.space = space
        self.records: dict[str, MemoRecord] = {}
        self._load()

    def _load(self) -> None:
        if not self.path.exists():
            return
        records, good_end = read_memo(self.path, self.space)
        for record in records:
            self.records.setdefault(record.key, record)
        if good_end != self.path.stat().st_size:
            with open(self.path, "r+b") as handle:
                handle.truncate(good_end)

    def __contains__(self, key: str) -> bool:
        return key in self.records

    def __getitem__(self, key: str) -> MemoRecord:
        return self.records[key]

    def __len__(self) -> int:
        return len(self.records)

    def evaluated(self, up_to_generation: int | None = None) -> list[MemoRecord]:
        """Fully evaluated candidates (not racing's first-stage records), in memo order."""
        return [r for r in self.records.values()
                if r.stage is None and (up_to_generation is None or r.generation <= up_to_generation)]

    def add(self, record: MemoRecord) -> None:
        if record.key in self.records:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path, "a", encoding="utf-8") as handle:
            handle.write(record.to_json(self.space) + "\n")
            handle.flush()
            os.fsync(handle.fileno())
        self.records[record.key] = record


# -- generation state ----------------------------------------------------------------------------


def atomic_write_json(path: Path, data: Any) -> None:
    atomic_write_bytes(path, (json.dumps(data, indent=1, sort_keys=True) + "\n").encode())


@dataclass
class SearchState:
    """Population after ``generation`` finished generations (0 = the initial population)."""

    generation: int
    population_keys: list[str]
    population_bits: np.ndarray  # genes [pop, n_var] (bool in a bit space)
    F: np.ndarray  # float [pop, objectives]: (−quality..., cost)
    normalization: tuple[list[float], list[float]]  # HV box, fixed at generation 0
    history: list[dict[str, Any]] = field(default_factory=list)  # one log record per generation

    def to_dict(self, space) -> dict[str, Any]:
        return {
            "version": STATE_VERSION,
            "generation": self.generation,
            "population": [
                {"key": key, "bits": space.pack(bits), "F": [float(v) for v in f]}
                for key, bits, f in zip(self.population_keys, self.population_bits, self.F)
            ],
            "normalization": {"lower": self.normalization[0], "upper": self.normalization[1]},
            "history": self.history,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any], space) -> "SearchState":
        if data.get("version") != STATE_VERSION:
            raise RunFolderError(f"state version {data.get('version')!r} is not {STATE_VERSION}")
        population = data["population"]
        return cls(
            generation=int(data["generation"]),
            population_keys=[p["key"] for p in population],
            population_bits=space.coerce(np.array([space.unpack(p["bits"]) for p in population]).reshape(
                len(population), space.n_var)),
            F=np.array([p["F"] for p in population], dtype=float).reshape(len(population), -1),
            normalization=(data["normalization"]["lower"], data["normalization"]["upper"]),
            history=list(data.get("history", [])),
        )


class RunFolder:
    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)

    config_path = property(lambda self: self.path / "config.json")
    state_path = property(lambda self: self.path / "state.json")
    memo_path = property(lambda self: self.path / "memo.jsonl")
    references_path = property(lambda self: self.path / "references.safetensors")
    plot_path = property(lambda self: self.path / "pareto.png")

    def bind_config(self, config: dict[str, Any], *, mutable_keys: tuple[str, ...] = ()) -> dict[str, Any]:
        """Write config.json on first use; afterwards refuse a different one.

        ``mutable_keys`` (e.g. the generation budget) may change between invocations: that is
        how ``--generations N`` extends a finished run.
        """
        self.path.mkdir(parents=True, exist_ok=True)
        if self.config_path.exists():
            stored = json.loads(self.config_path.read_text())
            # The model folder may lie elsewhere now (another checkout or machine): compared by the
            # task's fingerprint of it, not by its path, so the run resumes from any copy.
            fixed_now = {k: v for k, v in model_path_hidden(config).items() if k not in mutable_keys}
            fixed_then = {k: v for k, v in model_path_hidden(stored).items() if k not in mutable_keys}
            # round-trip through JSON so tuples/lists compare equal
            fixed_now = json.loads(json.dumps(fixed_now, sort_keys=True))
            if fixed_now != fixed_then:
                changed = sorted(k for k in set(fixed_now) | set(fixed_then) if fixed_now.get(k) != fixed_then.get(k))
                raise RunFolderError(
                    f"{self.path} holds a run with different settings ({', '.join(changed)}); "
                    "use a new --run-dir, or repeat the original settings to resume it"
                )
        atomic_write_json(self.config_path, config)
        return config

    def memo(self, space) -> Memo:
        return Memo(self.memo_path, space)

    def load_state(self, space) -> SearchState | None:
        if not self.state_path.exists():
            return None
        return SearchState.from_dict(json.loads(self.state_path.read_text()), space)

    def save_state(self, state: SearchState, space) -> None:
        atomic_write_json(self.state_path, state.to_dict(space))

    def load_references(self) -> dict[str, Any] | None:
        if not self.references_path.exists():
            return None
        from safetensors.torch import load_file

        return load_file(str(self.references_path))

    def save_references(self, references: dict[str, Any]) -> None:
        from safetensors.torch import save

        atomic_write_bytes(self.references_path, save({k: v.contiguous() for k, v in references.items()}))
