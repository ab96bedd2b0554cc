"""Calibration and held-out prompt sets.

For the bundled ecad-scenes model (a folder with a ``reward/`` network) prompts are scenes drawn
from the training distribution by a fixed generator — one seed for calibration, another for
held-out evaluation — so they are reproducible and parseable by its reward. For other models a
small generic list is split in two halves.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

GENERIC_PROMPTS = (
    "a red apple on a wooden table",
    "a cat sleeping on a blue sofa",
    "a lighthouse on a cliff at sunset",
    "a bowl of ramen with chopsticks",
    "a snowy mountain village at night",
    "a vintage car parked in a narrow street",
    "an astronaut riding a horse on the moon",
    "a watercolor painting of a fox in a forest",
    "a glass of orange juice next to a croissant",
    "a robot reading a newspaper in a cafe",
    "a field of sunflowers under a cloudy sky",
    "a sailing boat on a calm lake",
    "a portrait of an old fisherman",
    "a neon sign in a rainy alley",
    "a stack of colorful books",
    "a hummingbird near a red flower",
)
SPLIT_SEEDS = {"calibration": 101, "held-out": 202}


def is_scenes_model(model: str | Path) -> bool:
    return (Path(str(model)) / "reward" / "config.json").is_file()


def prompt_set(model: str | Path, count: int, split: str = "calibration") -> list[str]:
    if split not in SPLIT_SEEDS:
        raise ValueError(f"split must be one of {sorted(SPLIT_SEEDS)}")
    if is_scenes_model(model):
        from ecad.zoo import scenes

        rng = np.random.default_rng(SPLIT_SEEDS[split])
        return [scenes.random_scene(rng, exclude_pairs=scenes.HELD_OUT_PAIRS).prompt for _ in range(count)]
    half = len(GENERIC_PROMPTS) // 2
    pool = GENERIC_PROMPTS[:half] if split == "calibration" else GENERIC_PROMPTS[half:]
    return [pool[i % len(pool)] for i in range(count)]


def read_prompt_file(path: str | Path) -> list[str]:
    prompts = [line.strip() for line in Path(path).read_text(encoding="utf-8").splitlines()]
    prompts = [p for p in prompts if p and not p.startswith("#")]
    if not prompts:
        raise ValueError(f"{path} holds no prompts (one per line; '#' starts a comment)")
    return prompts


def default_resolution(model: str | Path) -> int:
    """The transformer's native image size: sample_size x the VAE's downsampling factor."""
    import json

    folder = Path(str(model))
    transformer = json.loads((folder / "transformer" / "config.json").read_text())
    vae = json.loads((folder / "vae" / "config.json").read_text())
    factor = 2 ** (len(vae.get("block_out_channels", [0] * 4)) - 1)
    return int(transformer.get("sample_size", 64)) * factor
