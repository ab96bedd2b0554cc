"""README's Python examples run as written: a renamed entry, function or argument fails here."""

import re
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"
PYTHON_BLOCKS = re.findall(r"```python\n(.*?)```", README.read_text(encoding="utf-8"), flags=re.S)


def test_readme_has_python_examples():
    assert PYTHON_BLOCKS, "README.md lost its Python examples"


@pytest.mark.parametrize("code", PYTHON_BLOCKS, ids=lambda code: code.strip().splitlines()[0][:40])
def test_readme_python_example_runs(code, monkeypatch):
    monkeypatch.chdir(README.parent)  # the examples use paths relative to the repository root
    exec(compile(code, str(README), "exec"), {"__name__": "readme_example"})
