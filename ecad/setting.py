"""The model setting: the one value that says how a pipeline is called for a bank.

A schedule is searched, profiled, served and benchmarked for one setting (image size, number of
denoising steps, guidance scale, and for a video model the number of frames). `Setting` is that
value, frozen, and it travels whole: the bank owns one, `generate(pipe, prompts, seeds, setting,
schedule)` takes one, `image_macs` costs one, the calibration recipe carries one, and a serving
request resolves to one.
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
    #: frames of each video; None for an image model, or for a video model: the pipeline's default
    num_frames: int | None = None

    def __post_init__(self) -> None:
        for name in ("height", "width", "num_inference_steps", "num_frames"):
            value = getattr(self, name)
            if name == "num_frames" and value is None:
                continue
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"Setting.{name} must be a positive integer, got {value!r}")
        object.__setattr__(self, "guidance_scale", float(self.guidance_scale))

    @property
    def name(self) -> str:
        """The bank file's stem, e.g. ``32x32-20steps`` (a video with its frames: ``480x832-81frames-50steps``)."""
        frames = "" if self.num_frames is None else f"-{self.num_frames}frames"
        return f"{self.height}x{self.width}{frames}-{self.num_inference_steps}steps"

    @property
    def pixels(self) -> int:
        """Pixels of one image, or of one frame of a video."""
        return self.height * self.width

    def with_changes(self, **changes: Any) -> "Setting":
        """A copy with some fields changed (``None`` values keep the current one)."""
        return replace(self, **{k: v for k, v in changes.items() if v is not None})

    def to_dict(self) -> dict[str, Any]:
        """Field name -> value; also the bank file's top-level keys for its setting (``num_frames``
        only where it is set, so an image bank's keys are the four of an image)."""
        data = asdict(self)
        if self.num_frames is None:
            del data["num_frames"]
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "Setting":
        frames = data.get("num_frames")
        return cls(int(data["height"]), int(data["width"]), int(data["num_inference_steps"]),
                   float(data["guidance_scale"]), None if frames is None else int(frames))
