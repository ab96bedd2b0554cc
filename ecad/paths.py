"""Where ecad's shipped data lives: the bundled model and the schedule banks.

One definition for the CLIs, the server, the tests and the benchmarks.
"""

from __future__ import annotations

from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
MODELS_DIR = REPO_ROOT / "models"
SCHEDULES_DIR = REPO_ROOT / "schedules"
DEFAULT_MODEL = MODELS_DIR / "ecad-scenes"


def model_name(model: str | Path) -> str:
    """A model's short name: the folder name, or the last part of a hub id (``org/name``)."""
    return Path(str(model).rstrip("/")).name
