"""Every code example of the documentation runs, and every one is in the docs.

Each ``docs/examples/*.py`` is a script that asserts what it shows and ends by
printing ``<name>: ok``; it is run in a fresh interpreter (as a reader would run it)
with the repository root first on ``PYTHONPATH``. The docs pages include the files
with ``literalinclude``, so what readers see is what is tested.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
EXAMPLES = sorted((DOCS / "examples").glob("*.py"))
INCLUDE = re.compile(r"^\s*\.\. literalinclude::\s*(\S+)", re.MULTILINE)


def _included() -> dict[Path, list[Path]]:
    """Each docs page's ``literalinclude`` targets, resolved to paths."""
    found: dict[Path, list[Path]] = {}
    for page in DOCS.rglob("*.rst"):
        targets = INCLUDE.findall(page.read_text(encoding="utf-8"))
        found[page] = [(DOCS / t.lstrip("/")) if t.startswith("/") else (page.parent / t) for t in targets]
    return found


def test_there_are_examples() -> None:
    assert len(EXAMPLES) >= 5, EXAMPLES


@pytest.mark.parametrize("example", EXAMPLES, ids=[p.name for p in EXAMPLES])
def test_example_runs(example: Path) -> None:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), *filter(None, [env.get("PYTHONPATH")])])
    proc = subprocess.run(
        [sys.executable, str(example)],
        cwd=ROOT,
        env=env,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, f"{example.name} failed:\n{proc.stdout}\n{proc.stderr}"
    assert f"{example.stem}: ok" in proc.stdout.splitlines(), proc.stdout


def test_every_example_is_in_the_docs() -> None:
    shown = {path.resolve() for targets in _included().values() for path in targets}
    missing = [p.name for p in EXAMPLES if p.resolve() not in shown]
    assert not missing, f"examples no docs page includes: {missing}"


def test_every_include_exists() -> None:
    broken = [
        f"{page.relative_to(ROOT)} -> {path}"
        for page, targets in _included().items()
        for path in targets
        if not path.is_file()
    ]
    assert not broken, broken


PY_BLOCK = re.compile(r"^\.\. code-block:: python\n\n((?:(?:    .*)?\n)+)", re.MULTILINE)


def test_docs_pages_show_python_only_through_examples() -> None:
    """Python in the docs pages comes from docs/examples/ (tested), never inline."""
    inline = [page.name for page in DOCS.rglob("*.rst") if PY_BLOCK.search(page.read_text(encoding="utf-8"))]
    assert not inline, f"inline Python blocks (move them to docs/examples/): {inline}"


def test_readme_python_blocks_compile() -> None:
    """The README's tour (servers on fixed ports, so not run here) is at least valid Python."""
    blocks = PY_BLOCK.findall((ROOT / "README.rst").read_text(encoding="utf-8"))
    assert len(blocks) >= 5
    for i, block in enumerate(blocks):
        code = "\n".join(line[4:] for line in block.splitlines())
        compile(code, f"README.rst block {i}", "exec")
