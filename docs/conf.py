"""Sphinx configuration for aleph_tx (``sphinx-build -W -b html docs docs/_build``)."""

from __future__ import annotations

import importlib.util
import os
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import aleph_tx  # noqa: E402  (needs the path above)

project = "aleph_tx"
author = "the aleph_tx authors"
copyright = "the aleph_tx authors, MIT license"  # noqa: A001  (Sphinx's name)
release = aleph_tx.__version__
version = ".".join(release.split(".")[:2])

extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.intersphinx",
    "sphinx.ext.viewcode",
]

# Intersphinx needs the network to fetch the inventories, and a fetch that fails is
# a warning (an error under -W): it is on only when ALEPH_TX_DOCS_INTERSPHINX=1, so
# the offline build (CI, .ci/run) passes and an online build links to Python and
# Twisted.
if os.environ.get("ALEPH_TX_DOCS_INTERSPHINX") == "1":
    intersphinx_mapping = {
        "python": ("https://docs.python.org/3", None),
        "twisted": ("https://docs.twisted.org/en/stable/api/", None),
    }
else:
    intersphinx_mapping = {}

autodoc_member_order = "bysource"
autodoc_typehints = "description"
autodoc_typehints_format = "short"
autodoc_default_options = {"members": True, "show-inheritance": True}
autodoc_preserve_defaults = True

exclude_patterns = ["_build", "_generated", "examples/README.rst"]
templates_path: list[str] = []
html_theme = "alabaster"
html_static_path: list[str] = []
html_title = f"aleph_tx {release}"


def _draw_benchmarks(app: Any) -> None:
    """Draw bench/results.json into ``_generated/bench`` (benchmarks.rst shows it)."""
    spec = importlib.util.spec_from_file_location("aleph_tx_bench_plot", ROOT / "bench" / "plot.py")
    assert spec is not None and spec.loader is not None
    plot = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(plot)
    plot.main(Path(app.srcdir) / "_generated" / "bench", image_prefix="/_generated/bench/")


def setup(app: Any) -> None:
    """Sphinx extension hook: the benchmark charts are drawn before reading sources."""
    app.connect("builder-inited", _draw_benchmarks)
