"""``--version`` for the ``twist aleph-*`` subcommands: aleph_tx's version, not only Twisted's."""

from __future__ import annotations

import platform
import sys
from typing import Any, NoReturn

__all__ = ["opt_version", "version_line"]


def version_line() -> str:
    """``aleph_tx 0.1.0 (Twisted 26.10.0, CPython 3.11.9)``."""
    import aleph_tx
    from twisted import copyright

    python = f"{platform.python_implementation()} {platform.python_version()}"
    return f"aleph_tx {aleph_tx.__version__} (Twisted {copyright.version}, {python})"


def opt_version(self: Any) -> NoReturn:
    """Display the aleph_tx, Twisted and Python versions and exit."""
    print(version_line())
    sys.exit(0)
