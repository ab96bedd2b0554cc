"""The model setting: the one value that says how a pipeline is called for a bank.

A schedule is searched, profiled, served and benchmarked for one setting (image size, number of
denoising steps, guidance scale). `Setting` is that value, frozen, and it travels whole: the bank
owns one, `generate(pipe, prompts, seeds, setting, schedule)` takes one, `image_macs` costs one,
the calibration recipe carries one, and a serving request resolves to one.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from typing import Any


@dataclass(frozen=True)
class Setting:
    height: int
    width: int
    num_inference_steps: int
    guidance_scale: float

    def __post_init__(self) -> None:
        for name in ("height", "width", "num_inference_steps"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"Setting.{name} must be a positive integer, got {value!r}")
        object.__setattr__(self, "guidance_scale", float(self.guidance_scale))

    @property
    def name(self) -> str:
        """The bank file's stem, e.g. ``32x32-20steps``."""
        return f"{self.height}x{self.width}-{self.num_inference_steps}steps"

    @property
    def pixels(self) -> int:
        return self.height * self.width

    def with_changes(self, **changes: Any) -> "Setting":
        """A copy with some fields changed (``None`` values keep the current one)."""
        return replace(self, **{k: v for k, v in changes.items() if v is not None})

    def to_dict(self) -> dict[str, Any]:
        """Field name -> value; also the bank file's top-level keys for its setting."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "Setting":
        return cls(int(data["height"]), int(data["width"]), int(data["num_inference_steps"]),
                   float(data["guidance_scale"]))
