"""What an answer is made of: an image as PNG (Pillow), a video as MP4 (PyAV).

A video is H.264 in 4:2:0 YUV in an MP4 file with its index at the front (``+faststart``): what
browsers play in a ``<video>`` element and ffmpeg reads. It is encoded by PyAV (the ``av`` package:
FFmpeg's own libraries, libx264 included in its wheels), imported the first time a video is
encoded, so an image server does not need it and a video server without it fails at its warm-up
with the package to install. H.264 is lossy: the frames a client decodes are near, not equal, to
the pipeline's; the same frames always give the same bytes (see ``VIDEO_OPTIONS``).
"""

from __future__ import annotations

import io
import os
import tempfile

import numpy as np
import torch

PNG = "image/png"
MP4 = "video/mp4"
VIDEO_CODEC = "libx264"
VIDEO_PIXEL_FORMAT = "yuv420p"  # what every browser decodes (4:4:4 H.264 plays in few)
#: x264: constant quality 18 (near-transparent for 8-bit frames), one thread, and no macroblock-tree
#: rate control: with it the same small frames gave different bytes from one call to the next
#: (32x32: up to 5 distinct MP4s in 20 encodes; none in 120 without it)
VIDEO_OPTIONS = {"crf": "18", "preset": "medium", "threads": "1", "x264-params": "threads=1:mbtree=0"}


class VideoEncoderMissing(RuntimeError):
    """PyAV is not installed: a video cannot be encoded."""


def to_uint8(pixels: torch.Tensor) -> np.ndarray:
    """[..., 3, H, W] in [0, 1] -> uint8 [..., H, W, 3], rounded to the nearest level."""
    return (pixels.clamp(0, 1) * 255).round().to(torch.uint8).movedim(-3, -1).cpu().numpy()


def tensor_to_image(image: torch.Tensor):
    """One [3, H, W] image in [0, 1] as an 8-bit RGB PIL image."""
    from PIL import Image

    return Image.fromarray(to_uint8(image))


def tensor_to_png(image: torch.Tensor) -> bytes:
    buffer = io.BytesIO()
    tensor_to_image(image).save(buffer, format="PNG")
    return buffer.getvalue()


def _av():
    try:
        import av
    except ImportError as err:
        raise VideoEncoderMissing(
            "serving a video model needs PyAV to encode MP4 (H.264): pip install av "
            f"(or pip install 'ecad[video]'); {err}") from None
    return av


def tensor_to_mp4(frames: torch.Tensor, fps: int) -> bytes:
    """One video, [F, 3, H, W] in [0, 1] (H and W even, as 4:2:0 needs), as MP4 bytes at ``fps``."""
    if frames.ndim != 4 or frames.shape[1] != 3:
        raise ValueError(f"a video is [frames, 3, height, width], got {tuple(frames.shape)}")
    height, width = frames.shape[-2:]
    if height % 2 or width % 2:
        raise ValueError(f"H.264 in 4:2:0 needs an even width and height, got {width}x{height}")
    av = _av()
    # A file, not a buffer: moving the index to the front re-reads what was written.
    with tempfile.TemporaryDirectory(prefix="ecad-video-") as folder:
        path = os.path.join(folder, "video.mp4")
        with av.open(path, mode="w", format="mp4", options={"movflags": "+faststart"}) as container:
            stream = container.add_stream(VIDEO_CODEC, rate=int(fps), options=VIDEO_OPTIONS)
            stream.width, stream.height, stream.pix_fmt = width, height, VIDEO_PIXEL_FORMAT
            for frame in to_uint8(frames):
                container.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
            container.mux(stream.encode())  # flush the encoder's delayed frames
        with open(path, "rb") as file:
            return file.read()


def media_type(item: torch.Tensor) -> str:
    """What one generated item ([3, H, W] image or [F, 3, H, W] video) is sent as."""
    return MP4 if item.ndim == 4 else PNG


def encode(item: torch.Tensor, fps: int | None = None) -> bytes:
    """One image as PNG, or one video as MP4 at ``fps``."""
    if item.ndim == 3:
        return tensor_to_png(item)
    if fps is None:
        raise ValueError("a video needs its frame rate")
    return tensor_to_mp4(item, fps)
