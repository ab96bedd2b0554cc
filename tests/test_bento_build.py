"""`bentoml build` packs the service with the library and the schedule banks."""

import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def test_bentoml_build_includes_service_library_and_banks(tmp_path):
    env = {**os.environ, "BENTOML_HOME": str(tmp_path), "BENTOML_DO_NOT_TRACK": "true"}
    done = subprocess.run([sys.executable, "-m", "bentoml", "build"], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    (bento,) = [p for p in (tmp_path / "bentos" / "ecad").iterdir() if p.is_dir()]
    src = bento / "src"
    assert (src / "server" / "service.py").is_file()
    assert (src / "ecad" / "hooks" / "actions.py").is_file()  # the engine, a package
    banks = sorted(p.relative_to(REPO) for p in (REPO / "schedules").rglob("*.json"))
    assert banks, "the bundled model's bank is missing from schedules/"
    assert all((src / b).is_file() for b in banks)
    assert not list(src.rglob("__pycache__"))
