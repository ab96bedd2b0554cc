"""The search space: a cache schedule's mask flattened to the bits the genetic search varies.

A schedule is a bool mask ``[num_steps, num_blocks, num_components]`` (True = recompute). The
first ``fixed_steps`` steps (step 0 by default) must always recompute — there is nothing cached
yet — so their bits are fixed to True and are not part of the search vector.
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
