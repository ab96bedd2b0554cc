"""Calibration, held-out and validation prompt sets.

For the bundled ecad-scenes model (a folder with a ``reward/`` network) prompts are scenes drawn
from the training distribution by a fixed generator — one seed for calibration, another for
held-out evaluation (ecad-bench) — so they are reproducible and parseable by its reward. For
other models a small generic list is split in two halves.

The validation split re-scores a calibrated front on prompts the search never saw; it is drawn
by a third generator (a separate list for generic models) and checked to share no prompt with
the calibration prompts or the benchmark's held-out prompts. Asking for more validation prompts
extends the list (the first N are always the same), so a bank validated on 8 prompts and a
benchmark selecting on 64 share those 8.

Seeds: each split draws its images' initial noise from its own range (`split_seeds`):
calibration 0, 1, ... (what ``ecad-calibrate --seeds`` uses by default), validation from 1000,
held-out from 2000. `assert_disjoint_splits` checks that no two splits share a prompt or a seed,
so "images the calibration never saw" holds for the noise as well as for the prompts.
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
VALIDATION_SEED = 303
VALIDATION_GENERIC_PROMPTS = (
    "a teapot on a windowsill in the morning",
    "a red bicycle leaning against a brick wall",
    "a penguin standing on an ice floe",
    "a bowl of cherries on a white plate",
    "a castle on a hill under a starry sky",
    "a paper boat floating in a puddle",
    "an owl sitting on a snowy branch",
    "a jazz band playing in a dim club",
)
#: the validation split avoids the first this-many held-out prompts (ecad-bench uses 64 by default)
HELD_OUT_RESERVE = 256
#: first seed of each split's range; a range holds SEED_RANGE seeds
SEED_BASE = {"calibration": 0, "validation": 1000, "held-out": 2000}
SEED_RANGE = 1000


def is_scenes_model(model: str | Path) -> bool:
    return (Path(str(model)) / "reward" / "config.json").is_file()


def prompt_set(model: str | Path, count: int, split: str = "calibration") -> list[str]:
    if split not in SPLIT_SEEDS:
        raise ValueError(f"split must be one of {sorted(SPLIT_SEEDS)}")
    if is_scenes_model(model):
        from ecad import scenes_vocab as scenes

        rng = np.random.default_rng(SPLIT_SEEDS[split])
        return [scenes.random_scene(rng, exclude_pairs=scenes.HELD_OUT_PAIRS).prompt for _ in range(count)]
    half = len(GENERIC_PROMPTS) // 2
    pool = GENERIC_PROMPTS[:half] if split == "calibration" else GENERIC_PROMPTS[half:]
    return [pool[i % len(pool)] for i in range(count)]


def validation_prompts(model: str | Path, count: int, calibration: list[str]) -> list[str]:
    """``count`` prompts never in ``calibration`` nor among the benchmark's held-out prompts."""
    held_out = prompt_set(model, HELD_OUT_RESERVE, "held-out")
    excluded = set(calibration) | set(held_out)
    chosen: list[str] = []
    if is_scenes_model(model):
        from ecad import scenes_vocab as scenes

        rng = np.random.default_rng(VALIDATION_SEED)
        for _ in range(100 * count):
            if len(chosen) == count:
                break
            prompt = scenes.random_scene(rng, exclude_pairs=scenes.HELD_OUT_PAIRS).prompt
            if prompt not in excluded and prompt not in chosen:
                chosen.append(prompt)
    else:
        chosen = [p for p in VALIDATION_GENERIC_PROMPTS if p not in excluded][:count]
    if len(chosen) < count:
        raise ValueError(f"only {len(chosen)} validation prompts are disjoint from calibration and held-out "
                         f"prompts, {count} asked")
    assert_disjoint(chosen, calibration=calibration, held_out=held_out)
    return chosen


def held_out_prompts(model: str | Path, count: int, exclude: list[str] = ()) -> list[str]:
    """``count`` distinct held-out prompts (the benchmark's), none of them in ``exclude`` (the
    calibration prompts: the two generators draw from the same scenes, so a short prompt can come
    up in both). Drawn in order from the first `HELD_OUT_RESERVE` held-out prompts, which the
    validation split avoids."""
    excluded = set(exclude)
    chosen = list(dict.fromkeys(p for p in prompt_set(model, HELD_OUT_RESERVE, "held-out") if p not in excluded))
    if len(chosen) < count and is_scenes_model(model):
        raise ValueError(f"only {len(chosen)} held-out prompts are distinct and not excluded, {count} asked")
    return chosen[:count]


def assert_disjoint(validation: list[str], **others: list[str]) -> None:
    """Raise ValueError naming the split and prompts that validation shares with another split."""
    for name, prompts in others.items():
        shared = sorted(set(validation) & set(prompts))
        if shared:
            raise ValueError(f"validation prompts overlap the {name} prompts: {shared[:3]}")


def split_seeds(split: str, count: int) -> list[int]:
    """The first ``count`` seeds of ``split``'s own range (disjoint from every other split's)."""
    if split not in SEED_BASE:
        raise ValueError(f"split must be one of {sorted(SEED_BASE)}, got {split!r}")
    if not 1 <= count <= SEED_RANGE:
        raise ValueError(f"seeds per split must be in [1, {SEED_RANGE}], got {count}")
    return list(range(SEED_BASE[split], SEED_BASE[split] + count))


def assert_disjoint_splits(splits: dict[str, tuple[list[str], list[int]]]) -> None:
    """Raise ValueError naming the two splits and what they share, if any two of ``splits``
    (name -> (prompts, seeds)) share a prompt or a seed."""
    names = list(splits)
    for i, a in enumerate(names):
        for b in names[i + 1:]:
            for what, index in (("prompts", 0), ("seeds", 1)):
                shared = sorted(set(splits[a][index]) & set(splits[b][index]), key=str)
                if shared:
                    raise ValueError(f"the {a} and {b} splits share {len(shared)} {what}: {shared[:3]}")


def read_prompt_file(path: str | Path) -> list[str]:
    prompts = [line.strip() for line in Path(path).read_text(encoding="utf-8").splitlines()]
    prompts = [p for p in prompts if p and not p.startswith("#")]
    if not prompts:
        raise ValueError(f"{path} holds no prompts (one per line; '#' starts a comment)")
    return prompts
