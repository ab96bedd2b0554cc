"""Where ecad's shipped data lives: the bundled model and the schedule banks.

One definition for the CLIs, the server, the tests and the benchmarks. The data sits in the
package (``ecad/data/``), so an installed wheel finds it next to its code; in a source checkout
``ecad/data/schedules`` and ``ecad/data/models`` are links to the repository's ``schedules/`` and
``models/``, which therefore stay where every command and document expects them. A copy of the
sources without the package data (a Bento packs ``schedules/`` and ``models/`` beside ``ecad/``)
falls back to those folders next to the package.
"""

from __future__ import annotations

from pathlib import Path

PACKAGE_DIR = Path(__file__).resolve().parent
REPO_ROOT = PACKAGE_DIR.parent  # the checkout (or site-packages when installed)
DATA_DIR = PACKAGE_DIR / "data"


def _data_folder(name: str) -> Path:
    packaged = DATA_DIR / name
    return (packaged if packaged.is_dir() else REPO_ROOT / name).resolve()


MODELS_DIR = _data_folder("models")
SCHEDULES_DIR = _data_folder("schedules")
DEFAULT_MODEL = MODELS_DIR / "ecad-scenes"


def model_name(model: str | Path) -> str:
    """A model's short name: the folder name, or the last part of a hub id (``org/name``)."""
    return Path(str(model).rstrip("/")).name
