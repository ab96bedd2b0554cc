"""The wheel carries the architectures, the banks and the bundled model, and the installed package
finds them next to its own code (not in a source checkout)."""

import json
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from ecad.bank_catalog import find_banks
from ecad.paths import DEFAULT_MODEL, REPO_ROOT

pytestmark = pytest.mark.skipif(not (REPO_ROOT / "pyproject.toml").is_file(), reason="needs the source checkout")

CHECK = """
import json, sys
from pathlib import Path
import ecad, ecad.paths as p
from ecad.bank_catalog import find_banks
from ecad.configs import get_architecture
print(json.dumps({
    "package": ecad.__file__, "schedules": str(p.SCHEDULES_DIR), "model": str(p.DEFAULT_MODEL),
    "model_index": (p.DEFAULT_MODEL / "model_index.json").is_file(),
    "flux_banks": [path.name for path in find_banks("black-forest-labs/FLUX.1-dev")],
    "scenes_banks": [path.name for path in find_banks(p.DEFAULT_MODEL)],
    "flux_hub_id": get_architecture("FLUX.1-dev").hub_id,
}))
"""


def test_wheel_carries_banks_and_model_and_finds_them_installed(tmp_path):
    source = tmp_path / "src"
    source.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(REPO_ROOT / name, source / name)
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    for name in ("ecad", "schedules", "models"):
        shutil.copytree(REPO_ROOT / name, source / name, symlinks=True, ignore=ignore)
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", str(source),
                    "-w", str(tmp_path / "dist")], check=True, cwd=tmp_path, capture_output=True, timeout=300)
    wheel = next((tmp_path / "dist").glob("ecad-*.whl"))
    names = set(zipfile.ZipFile(wheel).namelist())
    banks = {str(p.relative_to(REPO_ROOT)) for p in (REPO_ROOT / "schedules").glob("*/*.json")}
    assert {f"ecad/data/{b}" for b in banks} <= names
    model_files = {str(p.relative_to(REPO_ROOT)) for p in (REPO_ROOT / "models").rglob("*") if p.is_file()}
    assert {f"ecad/data/{m}" for m in model_files} <= names
    assert {"ecad/configs/FLUX.1-dev.json", "ecad/configs/PixArt-XL-2-256x256.json"} <= names
    assert "ecad-import-reference = ecad.cli.import_reference:main" in zipfile.ZipFile(wheel).read(
        next(n for n in names if n.endswith("entry_points.txt"))).decode()

    target = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", str(target), str(wheel)],
                   check=True, capture_output=True, timeout=300)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    out = subprocess.run([sys.executable, "-c", CHECK], cwd=elsewhere, capture_output=True, text=True, timeout=300,
                         env={"PYTHONPATH": str(target), "PATH": "/usr/bin:/bin", "HF_HUB_OFFLINE": "1"})
    assert out.returncode == 0, out.stderr[-2000:]
    found = json.loads(out.stdout.strip().splitlines()[-1])
    assert Path(found["package"]).is_relative_to(target)
    assert Path(found["schedules"]) == target / "ecad" / "data" / "schedules"
    assert Path(found["model"]).is_relative_to(target) and found["model_index"]
    assert found["flux_banks"] == [path.name for path in find_banks("black-forest-labs/FLUX.1-dev")]  # the checkout's
    assert found["scenes_banks"] == [path.name for path in find_banks(DEFAULT_MODEL)]
    assert "32x32-20steps.json" in found["scenes_banks"]
    assert found["flux_hub_id"] == "black-forest-labs/FLUX.1-dev"
