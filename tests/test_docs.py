"""The Python examples in README.md and the docs a newcomer reads first run as written: a renamed
entry, function or argument fails here."""

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = [ROOT / "README.md", ROOT / "docs" / "engine.md"]
EXAMPLES = [(doc.relative_to(ROOT), code) for doc in DOCS
            for code in re.findall(r"```python\n(.*?)```", doc.read_text(encoding="utf-8"), flags=re.S)]


def test_every_doc_has_an_example():
    assert {str(doc) for doc, _ in EXAMPLES} == {str(d.relative_to(ROOT)) for d in DOCS}


@pytest.mark.parametrize("doc,code", EXAMPLES, ids=[f"{doc}-{i}" for i, (doc, _) in enumerate(EXAMPLES)])
def test_doc_python_example_runs(doc, code, monkeypatch):
    monkeypatch.chdir(ROOT)  # the examples use paths relative to the repository root
    exec(compile(code, str(doc), "exec"), {"__name__": "doc_example"})
