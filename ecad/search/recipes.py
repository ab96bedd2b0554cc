"""The recipe types an evaluator can be rebuilt from, by name: what crosses to a Ray actor.

A recipe travels as ``{"kind": ..., **recipe.to_dict()}`` (plain JSON) and is rebuilt here with
the class that ``kind`` names. The list is explicit: nothing is imported by a string path.
"""

from __future__ import annotations

from typing import Any

from ecad.search.optimizer.evaluation import Recipe
from ecad.search.optimizer.synthetic import SyntheticRecipe
from ecad.search.evaluator import RenderRecipe

RECIPES: dict[str, type] = {cls.kind: cls for cls in (RenderRecipe, SyntheticRecipe)}


def recipe_to_json(recipe: Recipe) -> dict[str, Any]:
    if RECIPES.get(recipe.kind) is not type(recipe):
        raise ValueError(f"{type(recipe).__name__} is not a registered recipe type ({sorted(RECIPES)})")
    return {"kind": recipe.kind, **recipe.to_dict()}


def recipe_from_json(data: dict[str, Any]) -> Recipe:
    data = dict(data)
    kind = data.pop("kind", None)
    if kind not in RECIPES:
        raise ValueError(f"unknown recipe kind {kind!r}; known: {sorted(RECIPES)}")
    return RECIPES[kind].from_dict(data)
