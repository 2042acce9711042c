"""The public surface: every public module's ``__all__`` is exact.

For each public module in :data:`PUBLIC_MODULES`:

- ``__all__`` exists, is a list or tuple of unique ``str``, and every name resolves;
- every class or function listed comes from aleph_tx (a private module or the module
  itself), not from a third-party package by accident;
- no public name is *defined* in the module (a top-level ``def``, ``class`` or
  assignment, or, for a package, a name imported from one of its own private
  ``_modules``) without being listed in ``__all__``. Imported modules and names
  imported from elsewhere (``Deferred``, ``Any``) are not the module's surface.

Every module listed must import: a missing public module fails here.
"""

from __future__ import annotations

import ast
import importlib
import inspect
import subprocess
import sys
import types
from pathlib import Path

import pytest

import aleph_tx

#: Every public module of aleph_tx: private machinery lives in
#: ``_modules`` behind these.
PUBLIC_MODULES = [
    "aleph_tx.stream",
    "aleph_tx.deferred",
    "aleph_tx.byte_streams",
    "aleph_tx.errors",
    "aleph_tx.testing",
    "aleph_tx.tcp",
    "aleph_tx.udp",
    "aleph_tx.tls",
    "aleph_tx.http",
]


def _is_private_part_of(source: str, package: str) -> bool:
    """Whether ``source`` (a module name) is a private module below ``package``."""
    if not source.startswith(package + "."):
        return False
    return any(part.startswith("_") for part in source[len(package) + 1 :].split("."))


def _defined_names(source: str, module_name: str, is_package: bool) -> set[str]:
    """Top-level public names that the module's ``source`` defines itself."""
    package = module_name if is_package else module_name.rpartition(".")[0]
    names: set[str] = set()
    for node in ast.parse(source).body:
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            names.add(node.name)
        elif isinstance(node, ast.Assign):
            for target in node.targets:
                names.update(n.id for n in ast.walk(target) if isinstance(n, ast.Name))
        elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            names.add(node.target.id)
        elif isinstance(node, ast.ImportFrom) and is_package:
            # A package's __init__ re-exports its private modules: what it imports
            # from them is its surface.
            base = node.module or ""
            if node.level:
                parts = package.split(".")
                base = ".".join([*parts[: len(parts) - node.level + 1], *([base] if base else [])])
            if _is_private_part_of(base, module_name):
                names.update(alias.asname or alias.name for alias in node.names)
    return {name for name in names if not name.startswith("_")}


def _module_defined_names(module: types.ModuleType) -> set[str]:
    return _defined_names(inspect.getsource(module), module.__name__, hasattr(module, "__path__"))


@pytest.fixture(params=PUBLIC_MODULES)
def public_module(request: pytest.FixtureRequest) -> types.ModuleType:
    return importlib.import_module(request.param)


def test_all_is_a_list_of_unique_names(public_module: types.ModuleType) -> None:
    exported = getattr(public_module, "__all__", None)
    assert isinstance(exported, list | tuple), f"{public_module.__name__} has no __all__ list"
    assert all(isinstance(name, str) for name in exported)
    duplicates = sorted({name for name in exported if list(exported).count(name) > 1})
    assert not duplicates, f"{public_module.__name__}.__all__ repeats {duplicates}"


def test_every_name_in_all_resolves(public_module: types.ModuleType) -> None:
    missing = [name for name in public_module.__all__ if not hasattr(public_module, name)]
    assert not missing, f"{public_module.__name__}.__all__ lists undefined names {missing}"


def test_exported_objects_come_from_aleph_tx(public_module: types.ModuleType) -> None:
    foreign = []
    for name in public_module.__all__:
        obj = getattr(public_module, name)
        if (isinstance(obj, type) or inspect.isfunction(obj)) and not obj.__module__.startswith("aleph_tx."):
            foreign.append(f"{name} (from {obj.__module__})")
    assert not foreign, f"{public_module.__name__}.__all__ re-exports foreign objects {foreign}"


def test_no_unlisted_public_name(public_module: types.ModuleType) -> None:
    unlisted = sorted(_module_defined_names(public_module) - set(public_module.__all__))
    assert not unlisted, (
        f"{public_module.__name__} defines public names missing from __all__: {unlisted} "
        "(list them, or rename them with a leading underscore)"
    )


@pytest.mark.parametrize(
    ("source", "is_package", "expected"),
    [
        ("import os\nfrom typing import Any\n__all__ = ['f']\ndef f(): pass\n", False, {"f"}),
        (
            "def leaked(): pass\nclass Leak: pass\nLIMIT = 3\nX: int = 1\n_private = 1\n",
            False,
            {"leaked", "Leak", "LIMIT", "X"},
        ),
        ("async def a(): pass\nA, (B, _c) = 1, (2, 3)\n", False, {"a", "A", "B"}),
        (
            "from pkg._core import Thing, helper as public_helper\nfrom pkg.other import Other\n",
            True,
            {"Thing", "public_helper"},
        ),
        ("from ._ops import op\nfrom . import _ops\nfrom .public import Fine\n", True, {"op"}),
        ("from pkg._core import Thing\n", False, set()),
    ],
)
def test_defined_names_finds_what_a_module_defines(source: str, is_package: bool, expected: set[str]) -> None:
    """The leak check itself can fail: it sees definitions and private re-exports."""
    assert _defined_names(source, "pkg", is_package) == expected


def test_top_level_package_is_light() -> None:
    """``import aleph_tx`` holds only ``__version__`` and loads neither Twisted nor OpenSSL."""
    assert aleph_tx.__all__ == ["__version__"]
    assert isinstance(aleph_tx.__version__, str)
    assert aleph_tx.__version__
    code = "import sys, aleph_tx; print(sorted(m for m in sys.modules if m.split('.')[0] in {'twisted', 'OpenSSL', 'aleph_tx'}))"
    out = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        check=True,
        timeout=30,
        cwd=Path(aleph_tx.__file__).parent.parent,
    ).stdout
    assert out.strip() == "['aleph_tx']"


def test_py_typed_marker_is_shipped() -> None:
    assert (Path(aleph_tx.__file__).parent / "py.typed").is_file()


def test_importing_testing_loads_neither_http_nor_autobahn() -> None:
    """``aleph_tx.testing`` loads the HTTP server only when ``request`` is used."""
    code = (
        "import sys, aleph_tx.testing as t\n"
        "assert 'aleph_tx.http' not in sys.modules and 'autobahn' not in sys.modules\n"
        "assert t.request.__module__ == 'aleph_tx.http._server.testing'\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


def test_http_and_tcp_export_the_same_server() -> None:
    """``start_server`` of HTTP and of TCP return one ``Server`` class, public in both."""
    from aleph_tx import http, tcp

    assert http.Server is tcp.Server
    assert "Server" in http.__all__ and "Server" in tcp.__all__
