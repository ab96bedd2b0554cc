"""A weighted sum of other scorers, e.g. the bundled reward plus fidelity.

Why: a prompt-level reward can be blind to mild caching damage (the image still shows "a red
circle at the top left"), while fidelity alone rewards copying the uncached image whatever it
shows. Their mix sees both. Components are given as ``"name:weight,name:weight"`` (or a list of
dicts with ``name``, ``weight`` and ``kwargs``); a component name may carry a metric after a
slash for scorers with several (``fidelity/ssim``).
"""

from __future__ import annotations

import torch

from ecad.quality.base import QualityScorer, build_scorer, register_scorer

DEFAULT_COMPONENTS = "scenes-reward:0.5,fidelity/ssim:0.5"


def parse_components(components) -> list[dict]:
    """``"a:0.5,b/metric:0.5"`` or a list of dicts → [{"name", "metric", "weight", "kwargs"}]."""
    if isinstance(components, str):
        parsed = []
        for part in filter(None, (p.strip() for p in components.split(","))):
            name, _, weight = part.partition(":")
            parsed.append({"name": name.strip(), "weight": float(weight) if weight else 1.0})
        components = parsed
    result = []
    for item in components:
        name, _, metric = item["name"].partition("/")
        result.append({"name": name, "metric": metric or None, "weight": float(item.get("weight", 1.0)),
                       "kwargs": dict(item.get("kwargs") or {})})
    if not result:
        raise ValueError("a combined scorer needs at least one component")
    return result


@register_scorer("combined")
class CombinedScorer(QualityScorer):
    name = "combined"

    def __init__(self, components=DEFAULT_COMPONENTS, device: str = "cpu", component_kwargs: dict | None = None):
        """``component_kwargs``: extra constructor arguments per component name, e.g.
        ``{"scenes-reward": {"model_dir": "models/ecad-scenes"}}``."""
        self.components = parse_components(components)
        self.scorers = []
        for component in self.components:
            extra = (component_kwargs or {}).get(component["name"], {})
            kwargs = {"device": device, **extra, **component["kwargs"]}
            if component["metric"]:
                kwargs["metric"] = component["metric"]
            self.scorers.append(build_scorer(component["name"], **kwargs))
        self.needs_reference = any(s.needs_reference for s in self.scorers)

    def _label(self, component) -> str:
        return component["name"] + (f"/{component['metric']}" if component["metric"] else "")

    @torch.no_grad()
    def metrics(self, images, prompts, references=None) -> dict[str, torch.Tensor]:
        """Each component's score and the weighted sum (under "combined")."""
        parts = {
            self._label(c): s.score(images, prompts, references if s.needs_reference else None).float()
            for c, s in zip(self.components, self.scorers)
        }
        parts["combined"] = sum(c["weight"] * parts[self._label(c)] for c in self.components)
        return parts

    def score(self, images, prompts, references=None) -> torch.Tensor:
        return self.metrics(images, prompts, references)["combined"]
