"""The README's embedded example is real: it runs as written."""

from __future__ import annotations

import re
from pathlib import Path

README = Path(__file__).resolve().parents[2] / "README.md"


def test_the_readme_embedded_example_runs() -> None:
    """The ```python blocks of the README's "Embedded use" section execute without error (their
    asserts included); the client example needs a server and is covered by the client tests."""
    section = README.read_text().split("## Embedded use", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```python\n(.*?)```", section, flags=re.DOTALL)
    assert blocks, "the README lost its example"
    for block in blocks:
        exec(compile(block, str(README), "exec"), {"__name__": "readme"})
