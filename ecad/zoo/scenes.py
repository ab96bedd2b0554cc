"""Procedural scenes for the bundled model: rendering and tokenizing what `ecad.scenes_vocab` describes.

The scene grammar (shapes, colours, cells, ``Scene``, ``parse_prompt``, ``random_scene``) lives in
`ecad.scenes_vocab` and is re-exported here, so ``scenes.parse_prompt`` and friends keep working.
Everything here is deterministic given a ``numpy.random.Generator``, so training data, held-out
test sets and the reward's labels are reproducible.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from PIL import Image, ImageDraw

from ecad.scenes_vocab import (  # noqa: F401  (re-exported: the zoo's public names)
    CELL_NAMES,
    COLOUR_NAMES,
    COLOURS,
    GRID,
    HELD_OUT_PAIRS,
    MAX_SEQUENCE_LENGTH,
    SHAPES,
    VOCAB,
    Scene,
    SceneObject,
    parse_prompt,
    random_scene,
)

IMAGE_SIZE = 32
CELL = IMAGE_SIZE // GRID  # 16x16 pixels; with the f4 VAE each cell is 4x4 latent tokens
SUPERSAMPLE = 4  # draw 4x larger and downsample: anti-aliased edges like a real image


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
