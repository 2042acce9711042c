"""The Twisted plugins (twisted/plugins/aleph_tx_plugins.py): found, lazy, complete.

``twist`` imports every plugin file just to list the subcommands, so the plugin file
must import nothing of aleph_tx; each ``aleph_tx._tap`` module loads only when its
subcommand runs, and must then provide ``Options`` and ``makeService``.
"""

from __future__ import annotations

import importlib
import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest
from twisted.application.service import IServiceMaker, ServiceMaker
from twisted.python import usage

ROOT = Path(__file__).resolve().parent.parent
EXPECTED = {
    "aleph-http": "aleph_tx._tap.http",
    "aleph-tcp": "aleph_tx._tap.tcp",
    "aleph-udp": "aleph_tx._tap.udp",
}


def _run(code: str) -> str:
    """Run ``code`` in a fresh interpreter from the repository root; its stdout."""
    return subprocess.run(
        [sys.executable, "-c", code],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
        stdin=subprocess.DEVNULL,
    ).stdout


def test_plugin_file_is_a_namespace_portion() -> None:
    """Never ship twisted/__init__.py or twisted/plugins/__init__.py: they would shadow Twisted."""
    assert (ROOT / "twisted" / "plugins" / "aleph_tx_plugins.py").is_file()
    assert not (ROOT / "twisted" / "__init__.py").exists()
    assert not (ROOT / "twisted" / "plugins" / "__init__.py").exists()


def test_plugins_are_found_by_twisted() -> None:
    """Twisted's own plugin scan (what ``twist`` lists) finds the three service makers."""
    code = (
        "import sys; sys.path.insert(0, '.')\n"
        "from twisted.plugin import getPlugins\n"
        "from twisted.application.service import IServiceMaker\n"
        "for p in getPlugins(IServiceMaker):\n"
        "    if p.tapname.startswith('aleph-'): print(p.tapname, p.module)\n"
    )
    found = dict(line.split() for line in _run(code).splitlines())
    assert found == EXPECTED


def test_plugin_file_imports_nothing_of_aleph_tx() -> None:
    code = (
        "import sys, importlib.util\n"
        "spec = importlib.util.spec_from_file_location('p', 'twisted/plugins/aleph_tx_plugins.py')\n"
        "mod = importlib.util.module_from_spec(spec); spec.loader.exec_module(mod)\n"
        "print(sorted(m for m in sys.modules if m.startswith('aleph_tx')))\n"
    )
    assert _run(code).strip() == "[]"


@pytest.mark.parametrize(("tapname", "module"), sorted(EXPECTED.items()))
def test_service_maker_module_provides_options_and_make_service(tapname: str, module: str) -> None:
    """The subcommand's module loads and its ``Options`` accept an empty command line."""
    spec = importlib.util.spec_from_file_location(
        "_aleph_tx_plugins", ROOT / "twisted/plugins/aleph_tx_plugins.py"
    )
    assert spec is not None
    assert spec.loader is not None
    plugins = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(plugins)
    maker = next(
        obj for obj in vars(plugins).values() if isinstance(obj, ServiceMaker) and obj.tapname == tapname
    )
    assert IServiceMaker.providedBy(maker)
    assert maker.module == module
    assert maker.description
    tap = importlib.import_module(module)
    assert issubclass(tap.Options, usage.Options)
    assert callable(tap.makeService)
    tap.Options().parseOptions([])  # the defaults are valid
