"""The search spaces: what a candidate is, as the flat gene vector the genetic search varies.

Two kinds, with one interface (``n_var``, ``bounds``, ``coerce``, ``pack``/``unpack``, ``random``,
``features``, ``value_segments``, ``all_recompute``, ``to_config``) the engine uses without knowing which:

* :class:`BitSpace` — a cache schedule's bool mask ``[num_steps, num_blocks, num_components]``
  (True = recompute). The first ``fixed_steps`` steps (step 0 by default) must always recompute
  — there is nothing cached yet — so their bits are fixed to True and are not searched.
* :class:`IntegerSpace` — integer genes in segments of equal range, e.g. the action genes of
  ``ecad.search.genome.GeneSpace`` (reuse 0 / recompute 1 / forecast 2) then its block-skip genes
  (0/1). A space whose every gene is 0/1 searches like a bit space (same operators and packing).
"""

from __future__ import annotations

import base64
import hashlib
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class BitSpace:
    """Maps full masks of ``shape`` to flat searched bit vectors and back."""

    shape: tuple[int, int, int]
    fixed_steps: int = 1

    def __post_init__(self):
        if len(self.shape) != 3 or min(self.shape) < 1:
            raise ValueError(f"mask shape must be 3 positive ints, got {self.shape}")
        if not 0 <= self.fixed_steps < self.shape[0]:
            raise ValueError(f"fixed_steps={self.fixed_steps} must leave a step to search")

    @property
    def n_var(self) -> int:
        steps, blocks, components = self.shape
        return (steps - self.fixed_steps) * blocks * components

    def mask_to_bits(self, mask: np.ndarray) -> np.ndarray:
        mask = np.asarray(mask, dtype=bool)
        if mask.shape != self.shape:
            raise ValueError(f"mask shape {mask.shape} != search space shape {self.shape}")
        return mask[self.fixed_steps :].reshape(-1).copy()

    def bits_to_mask(self, bits: np.ndarray) -> np.ndarray:
        bits = np.asarray(bits, dtype=bool).reshape(-1)
        if bits.size != self.n_var:
            raise ValueError(f"got {bits.size} bits, search space has {self.n_var}")
        mask = np.ones(self.shape, dtype=bool)
        mask[self.fixed_steps :] = bits.reshape((self.shape[0] - self.fixed_steps, *self.shape[1:]))
        return mask

    def all_recompute(self) -> np.ndarray:
        return np.ones(self.n_var, dtype=bool)

    # -- the interface the engine uses (shared with IntegerSpace) ------------------------------
    is_binary = True

    def bounds(self) -> tuple[np.ndarray, np.ndarray]:
        return np.zeros(self.n_var, dtype=int), np.ones(self.n_var, dtype=int)

    def coerce(self, genes: np.ndarray) -> np.ndarray:
        return np.asarray(genes, dtype=bool)

    def pack(self, genes: np.ndarray) -> str:
        return pack_bits(genes)

    def unpack(self, text: str) -> np.ndarray:
        return unpack_bits(text, self.n_var)

    def random(self, count: int, seed: int) -> np.ndarray:
        return random_bits(self.n_var, count, seed)

    def features(self, genes: np.ndarray) -> np.ndarray:
        return np.asarray(genes, dtype=float)

    def value_segments(self) -> list[tuple[int, int, int, int]]:
        """(first gene, genes, low, high) of each run of genes with one value range."""
        return [(0, self.n_var, 0, 1)]

    def to_config(self) -> dict:
        return {"shape": list(self.shape), "fixed_steps": self.fixed_steps}


@dataclass(frozen=True)
class IntegerSpace:
    """Flat integer genes in segments ``((count, low, high, baseline), ...)``, in gene order: each
    gene of a segment takes every integer ``low..high``; ``baseline`` is its value in the
    all-recompute (no-cache) candidate (recompute for an action gene, 0 for a skip gene)."""

    segments: tuple[tuple[int, int, int, int], ...]

    def __post_init__(self):
        segments = tuple(tuple(int(v) for v in s) for s in self.segments)
        object.__setattr__(self, "segments", segments)
        if not segments or any(len(s) != 4 or s[0] < 1 or not 0 <= s[1] <= s[3] <= s[2] <= 255 or s[1] == s[2]
                               for s in segments):
            raise ValueError(f"IntegerSpace.segments must be (count >= 1, low, high, baseline) with "
                             f"0 <= low <= baseline <= high <= 255 and low < high, got {list(segments)}")

    @property
    def n_var(self) -> int:
        return sum(s[0] for s in self.segments)

    @property
    def is_binary(self) -> bool:
        return all(s[1:3] == (0, 1) for s in self.segments)

    @property
    def _bits_per_gene(self) -> int:
        return max(s[2] for s in self.segments).bit_length()

    def bounds(self) -> tuple[np.ndarray, np.ndarray]:
        low = np.concatenate([np.full(s[0], s[1]) for s in self.segments])
        high = np.concatenate([np.full(s[0], s[2]) for s in self.segments])
        return low, high

    def coerce(self, genes: np.ndarray) -> np.ndarray:
        genes = np.asarray(genes)
        if self.is_binary:
            return genes.astype(bool)
        low, high = self.bounds()
        if genes.shape[-1:] != (self.n_var,) or (genes < low).any() or (genes > high).any():
            raise ValueError(f"genes must have {self.n_var} values within the space's bounds, got shape {genes.shape}")
        return genes.astype(np.int64)

    def all_recompute(self) -> np.ndarray:
        return self.coerce(np.concatenate([np.full(n, baseline) for n, _, _, baseline in self.segments]))

    def pack(self, genes: np.ndarray) -> str:
        """Portable text: the genes' bits (``_bits_per_gene`` each, most significant first), packed."""
        genes = np.asarray(genes, dtype=np.uint8)
        width = self._bits_per_gene
        return pack_bits(np.unpackbits(genes[:, None], axis=1)[:, 8 - width:])

    def unpack(self, text: str) -> np.ndarray:
        width = self._bits_per_gene
        bits = unpack_bits(text, self.n_var * width).reshape(self.n_var, width)
        return self.coerce(np.packbits(np.pad(bits, ((0, 0), (8 - width, 0))), axis=1)[:, 0])

    def random(self, count: int, seed: int) -> np.ndarray:
        """Random candidates with varied mixes: per candidate and segment, value shares from a
        flat Dirichlet, so the initial population spans many costs and action mixes."""
        if self.is_binary:
            return random_bits(self.n_var, count, seed)
        rng = np.random.default_rng(np.random.SeedSequence([int(seed), 0x5EED]))
        parts = []
        for n, lo, hi, _ in self.segments:
            values = np.arange(lo, hi + 1)
            shares = rng.dirichlet(np.ones(len(values)), size=count)
            parts.append(np.array([rng.choice(values, size=n, p=p) for p in shares]).reshape(count, n))
        return self.coerce(np.hstack(parts))

    def features(self, genes: np.ndarray) -> np.ndarray:
        """The surrogate's inputs: bits as they are, other genes one-hot over their values."""
        genes = np.atleast_2d(np.asarray(genes))
        if self.is_binary:
            return genes.astype(float)
        columns, start = [], 0
        for n, lo, hi, _ in self.segments:
            part = genes[:, start : start + n]
            columns += [(part == v).astype(float) for v in range(lo, hi + 1)]
            start += n
        return np.hstack(columns)

    def value_segments(self) -> list[tuple[int, int, int, int]]:
        """(first gene, genes, low, high) of each segment."""
        starts = np.cumsum([0] + [s[0] for s in self.segments])
        return [(int(start), n, lo, hi) for start, (n, lo, hi, _) in zip(starts, self.segments)]

    def to_config(self) -> dict:
        return {"segments": [list(s) for s in self.segments]}


def random_bits(n_var: int, count: int, seed: int) -> np.ndarray:
    """Random bit vectors with varied density, so the initial population spans many costs."""
    rng = np.random.default_rng(np.random.SeedSequence([int(seed), 0x5EED]))
    density = rng.uniform(0.1, 0.9, size=(count, 1))
    return rng.random((count, n_var)) < density


def pack_bits(bits: np.ndarray) -> str:
    """Portable text form of a bit vector (base64 of numpy packbits, big-endian bit order)."""
    return base64.b64encode(np.packbits(np.asarray(bits, dtype=bool)).tobytes()).decode("ascii")


def unpack_bits(text: str, n_var: int) -> np.ndarray:
    raw = np.frombuffer(base64.b64decode(text), dtype=np.uint8)
    return np.unpackbits(raw)[:n_var].astype(bool)


def bits_key(bits: np.ndarray) -> str:
    """A content hash of a bare bit vector (used where no CacheSchedule exists, e.g. tests)."""
    bits = np.asarray(bits, dtype=bool)
    return hashlib.sha256(f"{bits.size}:".encode() + np.packbits(bits).tobytes()).hexdigest()
