"""Procedural scenes for the bundled model: coloured shapes in the cells of a 2x2 grid.

A scene is one or two objects, each a (shape, colour) in a different cell; its prompt is composed
from those attributes, e.g. "a red triangle at the bottom right and a cyan circle at the top left".
Everything here is deterministic given a ``numpy.random.Generator``, so training data, held-out
test sets and the reward's labels are reproducible.

Some colour x shape pairs never appear in the DiT's training data (``HELD_OUT_PAIRS``); prompts
naming them test whether the model composes attributes it only saw separately.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image, ImageDraw

IMAGE_SIZE = 32
GRID = 2  # 2x2 cells of 16x16 pixels; with the f4 VAE each cell is 4x4 latent tokens
CELL = IMAGE_SIZE // GRID
SUPERSAMPLE = 4  # draw 4x larger and downsample: anti-aliased edges like a real image

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


def _polygon(cx, cy, r, angle, points):
    return [(cx + r * x * math.cos(angle) - r * y * math.sin(angle),
             cy + r * x * math.sin(angle) + r * y * math.cos(angle)) for x, y in points]


def render(scene: Scene, rng: np.random.Generator) -> Image.Image:
    """Draw the scene with jittered size, position and rotation (black background)."""
    s = SUPERSAMPLE
    img = Image.new("RGB", (IMAGE_SIZE * s, IMAGE_SIZE * s))
    draw = ImageDraw.Draw(img)
    for o in scene.objects:
        row, col = divmod(o.cell, GRID)
        cx = (col + 0.5) * CELL + rng.uniform(-1.0, 1.0)
        cy = (row + 0.5) * CELL + rng.uniform(-1.0, 1.0)
        r = rng.uniform(5.0, 6.2)  # radius in pixels: objects fill most of their 16 px cell
        angle = math.radians(rng.uniform(-15, 15))
        fill = COLOURS[o.colour]
        cx, cy, r = cx * s, cy * s, r * s
        if o.shape == "circle":
            draw.ellipse([cx - r, cy - r, cx + r, cy + r], fill=fill)
        elif o.shape == "square":
            q = 0.85
            draw.polygon(_polygon(cx, cy, r, angle, [(-q, -q), (q, -q), (q, q), (-q, q)]), fill=fill)
        elif o.shape == "triangle":
            draw.polygon(_polygon(cx, cy, r, angle, [(0, -1.05), (0.95, 0.75), (-0.95, 0.75)]), fill=fill)
        elif o.shape == "cross":
            w = 0.36  # thick bars so the f4 VAE keeps the arms
            arm = [(-w, -1), (w, -1), (w, -w), (1, -w), (1, w), (w, w), (w, 1), (-w, 1),
                   (-w, w), (-1, w), (-1, -w), (-w, -w)]
            draw.polygon(_polygon(cx, cy, r, angle, arm), fill=fill)
    return img.resize((IMAGE_SIZE, IMAGE_SIZE), Image.LANCZOS)


def render_batch(scenes, rng: np.random.Generator) -> torch.Tensor:
    """Float tensor [N, 3, H, W] in [0, 1]."""
    arr = np.stack([np.asarray(render(sc, rng)) for sc in scenes]).astype(np.float32) / 255.0
    return torch.from_numpy(arr).permute(0, 3, 1, 2).contiguous()


def random_batch(n: int, rng: np.random.Generator, **kwargs):
    """n random scenes: (scenes, images [N,3,H,W] in [0,1])."""
    scenes = [random_scene(rng, **kwargs) for _ in range(n)]
    return scenes, render_batch(scenes, rng)


def build_tokenizer():
    """A word-level tokenizer over the prompt vocabulary, as a transformers fast tokenizer."""
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    vocab = {w: i for i, w in enumerate(VOCAB)}
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    tok.normalizer = normalizers.Lowercase()
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.post_processor = processors.TemplateProcessing(single="$A </s>", special_tokens=[("</s>", 1)])
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, pad_token="<pad>", eos_token="</s>", unk_token="<unk>",
        model_max_length=MAX_SEQUENCE_LENGTH, padding_side="right",
    )
