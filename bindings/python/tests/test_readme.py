"""The README's Python example runs as written (from the repository root)."""

import os
import re
from pathlib import Path

import pytest

from conftest import REPO


def test_readme_python_example_runs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    text = (REPO / "README.md").read_text()
    blocks = re.findall(r"```python\n(.*?)```", text, re.S)
    assert blocks, "README.md has no python example"
    monkeypatch.chdir(REPO)
    monkeypatch.setenv("QUORUM_EXAMPLE_HOME", str(tmp_path / "home"))
    for block in blocks:
        exec(compile(block, "README.md", "exec"), {"os": os})
