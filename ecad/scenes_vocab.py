"""The grammar of the bundled model's scenes: coloured shapes in the cells of a 2x2 grid.

A scene is one or two objects, each a (shape, colour) in a different cell; its prompt is composed
from those attributes, e.g. "a red triangle at the bottom right and a cyan circle at the top left",
and ``parse_prompt`` reads it back. This module is the ground both sides stand on: the reward
(`ecad.quality.scenes_reward`) reads its per-cell labels from a prompt, and the training code
(`ecad.zoo`) draws and renders scenes from it. It needs only numpy.

Some colour x shape pairs never appear in the DiT's training data (``HELD_OUT_PAIRS``); prompts
naming them test whether the model composes attributes it only saw separately.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np

GRID = 2  # 2x2 cells

SHAPES = ("circle", "square", "triangle", "cross")
COLOURS = {
    "red": (230, 40, 40),
    "green": (40, 200, 60),
    "blue": (50, 90, 245),
    "yellow": (240, 220, 40),
    "magenta": (225, 50, 225),
    "cyan": (40, 220, 225),
}
COLOUR_NAMES = tuple(COLOURS)
# Cell index = row * GRID + column; names as they appear in prompts.
CELL_NAMES = ("top left", "top right", "bottom left", "bottom right")

# Never shown to the DiT in training: one pair per shape, each with a different colour.
HELD_OUT_PAIRS = frozenset({("red", "cross"), ("blue", "circle"), ("yellow", "triangle")})

MAX_SEQUENCE_LENGTH = 16  # longest prompt is 15 words + </s>
VOCAB = (
    ["<pad>", "</s>", "<unk>", "a", "at", "the", "and"]
    + list(COLOUR_NAMES)
    + list(SHAPES)
    + ["top", "bottom", "left", "right"]
)


@dataclass(frozen=True)
class SceneObject:
    shape: str
    colour: str
    cell: int


@dataclass(frozen=True)
class Scene:
    objects: tuple[SceneObject, ...]

    @property
    def prompt(self) -> str:
        return " and ".join(f"a {o.colour} {o.shape} at the {CELL_NAMES[o.cell]}" for o in self.objects)

    def cell_labels(self) -> tuple[list[int], list[int]]:
        """Per cell: shape index + 1 (0 = empty) and colour index + 1 (0 = none)."""
        shapes, colours = [0] * GRID * GRID, [0] * GRID * GRID
        for o in self.objects:
            shapes[o.cell] = SHAPES.index(o.shape) + 1
            colours[o.cell] = COLOUR_NAMES.index(o.colour) + 1
        return shapes, colours


_OBJECT_RE = re.compile(
    r"^a (?P<colour>\w+) (?P<shape>\w+) at the (?P<cell>top left|top right|bottom left|bottom right)$"
)


def parse_prompt(prompt: str) -> Scene:
    """Inverse of ``Scene.prompt``; raises ValueError naming the prompt if it is not one of ours."""
    text = " ".join(prompt.lower().strip().rstrip(".").split())
    objects = []
    for part in text.split(" and ") if text else []:
        m = _OBJECT_RE.match(part)
        if not m or m["colour"] not in COLOURS or m["shape"] not in SHAPES:
            break
        objects.append(SceneObject(m["shape"], m["colour"], CELL_NAMES.index(m["cell"])))
    else:
        cells = [o.cell for o in objects]
        if objects and len(set(cells)) == len(cells):
            return Scene(tuple(objects))
    raise ValueError(
        f"cannot parse prompt {prompt!r}: expected 'a <colour> <shape> at the <cell>' joined by "
        f"' and ' (colours {', '.join(COLOUR_NAMES)}; shapes {', '.join(SHAPES)}; "
        f"cells {', '.join(CELL_NAMES)}; each cell at most once)"
    )


def random_scene(rng: np.random.Generator, *, exclude_pairs=frozenset(), only_pairs=None) -> Scene:
    """One or two objects (40% / 60%) in distinct cells, pairs drawn from the allowed set."""
    pairs = [(c, s) for c in COLOUR_NAMES for s in SHAPES if (c, s) not in exclude_pairs]
    if only_pairs is not None:
        pairs = sorted(only_pairs)
    n = 1 if rng.random() < 0.4 else 2
    cells = rng.choice(GRID * GRID, size=n, replace=False)
    objects = []
    for cell in cells:
        colour, shape = pairs[rng.integers(len(pairs))]
        objects.append(SceneObject(shape, colour, int(cell)))
    return Scene(tuple(objects))
