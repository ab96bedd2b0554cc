"""A generation request and its answer: the body (types only, the API's schema), the server's
limits (defined here, once), the resolved request that travels through the queue, and the report
of how it was served.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field

from ecad.planning import RequestShape
from ecad.serving.banks import ServedBank
from ecad.setting import Setting

MAX_SEED = 2**32 - 1
SHAPE_FIELDS = ("width", "height", "num_inference_steps", "guidance_scale", "num_images", "num_frames")


class RequestError(ValueError):
    """A request the server refuses (HTTP 400); names the field and the allowed range."""

    def __init__(self, field_name: str | None, message: str) -> None:
        super().__init__(f"{field_name}: {message}" if field_name else message)
        self.field = field_name
        self.message = message


def valid_unicode(text: str) -> str:
    """``text``, if it is valid Unicode; ValueError otherwise. JSON's ``\\ud800`` escapes can spell
    lone UTF-16 surrogates, which Python keeps in a str but nothing can encode (the tokenizer, the
    response headers): such text is refused where it enters, naming the field."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as err:
        raise ValueError(f"must be valid Unicode text: a lone UTF-16 surrogate (U+{ord(text[err.start]):04X}) at "
                         f"character {err.start}") from None
    return text


Text = Annotated[str, AfterValidator(valid_unicode)]


class GenerateRequest(BaseModel):
    """The body of ``POST /generate``: types and the bounds that hold on any server. Strict: a
    ``true`` is not 1 ms and ``"1"`` is not one image. The server's own limits are ``RequestLimits``."""

    model_config = ConfigDict(extra="forbid", strict=True)

    prompt: Text = Field(description="Text prompt.")
    latency_ms: float | None = Field(
        default=None, gt=0, le=3_600_000, allow_inf_nan=False,
        description="Latency budget in ms on this server, including time queued. Omit for best quality.",
    )
    seed: int | None = Field(default=None, ge=0, le=MAX_SEED, description="Random seed; random if omitted.")
    negative_prompt: Text | None = None
    num_images: int = Field(default=1, description="Images for this prompt (GET /schedules: limits).")
    width: int | None = Field(default=None, description="Defaults to the default bank's width.")
    height: int | None = Field(default=None, description="Defaults to the default bank's height.")
    num_inference_steps: int | None = Field(default=None, description="Defaults to the default bank's.")
    guidance_scale: float | None = Field(default=None, ge=0, le=50, allow_inf_nan=False,
                                         description="Defaults to the default bank's.")
    num_frames: int | None = Field(default=None, description="Frames of each video (a video model only; "
                                                             "defaults to the default bank's).")
    schedule_id: Text | None = Field(
        default=None, max_length=64,
        description="Pin a bank entry (e.g. 'no-cache') instead of selecting by budget.",
    )
    on_infeasible: Literal["fastest", "reject"] = Field(
        default="fastest",
        description="If the budget cannot be met behind the queue: serve the fastest schedule "
                    "(flagged) or answer 429 at once with Retry-After.",
    )


class GeneratePngRequest(GenerateRequest):
    """The body of ``POST /generate/png``: one image, its PNG the whole answer."""

    num_images: int = Field(default=1, ge=1, le=1, description="Always 1 here; POST /generate makes several.")


class GenerateVideoRequest(GeneratePngRequest):
    """The body of ``POST /generate/video``: one video, its MP4 the whole answer."""


class ServedQuality(BaseModel):
    """The quality of the entry that ran, at the request's setting, and how it is known."""

    metric: str = Field(description="The bank's ranking metric (e.g. psnr: dB against the image without caching).")
    value: float = Field(description="Its value for this entry at this setting.")
    low: float | None = Field(description="Lower end of the stated interval for one image, where there is one.")
    high: float | None = Field(description="Upper end of the stated interval for one image, where there is one.")
    estimated: bool = Field(description="True where it was not measured at this setting (another step count: "
                                        "the schedule was moved there by noise level).")
    basis: str = Field(description="'validation' (held-out prompts of the bank's calibration), 'measured', "
                                   "'transfer model' (the model's measured transfers), 'not measured at this "
                                   "setting' or 'not measured' (imported schedules).")


class GenerationReport(BaseModel):
    """How a request was served: ``/generate``'s fields beside the images, ``/generate/png``'s
    ``X-ECAD-*`` headers. Times in ms."""

    schedule_id: str = Field(description="The bank entry that ran.")
    bank: str = Field(description="The bank it came from (GET /schedules lists them).")
    predicted_ms: float = Field(description="Its predicted generation time when it started.")
    actual_ms: float = Field(description="Measured generation time.")
    queue_ms: float = Field(description="Time not computing: queued before it started, and paused between steps.")
    paused_ms: float = Field(description="Of queue_ms, the time paused between steps while shorter or more urgent "
                                         "requests ran.")
    latency_ms: float | None = Field(description="The budget asked for, if any.")
    budget_met: bool | None = Field(description="queue_ms + actual_ms <= latency_ms; null without a budget.")
    seed: int
    height: int
    width: int
    num_inference_steps: int
    guidance_scale: float
    num_frames: int | None = Field(default=None, description="Frames of each video; null for images.")
    num_images: int
    batch_images: int = Field(description="Images made by the pipeline call that made these: more than num_images "
                                          "when batched with other requests of the same schedule and setting.")
    quality: ServedQuality = Field(description="The entry's quality at this setting: measured, or an estimate with "
                                               "its interval.")
    notes: list[str] = Field(description="What was changed or predicted by the latency model, pauses, batching and "
                                         "missed budgets.")


class GenerateResponse(GenerationReport):
    """The answer of ``POST /generate``."""

    media_type: str = Field(description="What each of `images` is: image/png, or video/mp4 for a video model.")
    images: list[str] = Field(description="Base64 PNGs, one per image; base64 MP4s (H.264), one per video, for a "
                                          "video model.")


@dataclass(frozen=True)
class ResolvedRequest:
    """A request checked and resolved once: the bank that serves it and the setting it runs at."""

    prompt: str
    negative_prompt: str | None
    latency_ms: float | None
    seed: int
    shape: RequestShape  # the setting it runs at and the number of images
    served: ServedBank  # the bank made for that setting, or the nearest
    schedule_id: str | None = None  # a pinned entry of that bank; None: the planner chooses
    on_infeasible: str = "fastest"
    notes: tuple[str, ...] = ()  # what choosing that bank changed (nearest bank, resampled)

    def seeds(self) -> list[int]:
        return [(self.seed + i) % (MAX_SEED + 1) for i in range(self.shape.num_images)]


def _visible(text: str) -> bool:
    return any(ch.isprintable() and not ch.isspace() for ch in text)


@dataclass(frozen=True)
class FrameLimits:
    """A video model's frame counts: 1 + k x ``step`` (its VAE's temporal compression: every frame
    a request asks for is made) up to ``maximum``."""

    step: int
    maximum: int

    def check(self, num_frames: int) -> None:
        if not 1 <= num_frames <= self.maximum or (num_frames - 1) % self.step:
            raise RequestError("num_frames", f"must be 1 + a multiple of {self.step} between 1 and {self.maximum} "
                                             f"(1, {1 + self.step}, {1 + 2 * self.step}, ...), got {num_frames}")


@dataclass(frozen=True)
class RequestLimits:
    """Everything a request may ask for on this server; ``view()`` is what ``/schedules`` reports.

    The sizes' multiple and the minimum steps come from the loaded model (``startup``); the
    maxima from ``ServingConfig``.
    """

    setting: Setting  # the default bank's: the defaults
    max_prompt_chars: int
    max_images: int
    spatial_multiple: int
    max_height: int
    max_width: int
    min_steps: int
    max_steps: int
    frames: FrameLimits | None = None  # a video model's; None: the model makes images

    def view(self) -> dict[str, Any]:
        m = self.spatial_multiple
        return {
            "prompt_chars": [1, self.max_prompt_chars],
            "num_images": [1, self.max_images],
            "width": [m, self.max_width, m],
            "height": [m, self.max_height, m],
            "num_inference_steps": [self.min_steps, self.max_steps],
            # a video model's: [first, last, step] (1 + k x step); null: the model makes images
            "num_frames": None if self.frames is None else [1, self.frames.maximum, self.frames.step],
        }

    def shape(self, *, width: int | None = None, height: int | None = None, num_inference_steps: int | None = None,
              guidance_scale: float | None = None, num_images: int = 1,
              num_frames: int | None = None) -> RequestShape:
        """The default setting with the request's changes, checked; RequestError names the field."""
        if not 1 <= num_images <= self.max_images:
            raise RequestError("num_images", f"must be between 1 and {self.max_images}, got {num_images}")
        m = self.spatial_multiple
        for name, value, top in (("width", width, self.max_width), ("height", height, self.max_height)):
            if value is not None and (value % m or not m <= value <= top):
                raise RequestError(name, f"must be a multiple of {m} between {m} and {top}, got {value}")
        steps = num_inference_steps
        if steps is not None and not self.min_steps <= steps <= self.max_steps:
            raise RequestError("num_inference_steps",
                               f"must be between {self.min_steps} and {self.max_steps}, got {steps}")
        if num_frames is not None:
            if self.frames is None:
                raise RequestError("num_frames", "this model makes images, not videos: omit num_frames")
            self.frames.check(num_frames)
        changes = dict(width=width, height=height, num_inference_steps=steps, guidance_scale=guidance_scale,
                       num_frames=num_frames)
        return RequestShape(self.setting.with_changes(**changes), num_images)

    def check(self, request: GenerateRequest) -> RequestShape:
        """The request checked against these limits: its shape, the default setting filled in."""
        for name in ("prompt", "negative_prompt"):
            text = getattr(request, name)
            if text is None:
                continue
            if len(text) > self.max_prompt_chars:
                raise RequestError(name, f"is {len(text)} characters; at most {self.max_prompt_chars}")
            if name == "prompt" and not _visible(text):
                raise RequestError(name, "must contain a visible character (not only spaces or control characters)")
            if "\x00" in text:
                raise RequestError(name, "must not contain NUL characters")
        return self.shape(**{name: getattr(request, name) for name in SHAPE_FIELDS})
