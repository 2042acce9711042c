"""``twist aleph-http|aleph-tcp|aleph-udp --version`` prints aleph_tx's version (aleph_tx/_tap/_version.py)."""

from __future__ import annotations

import importlib
import os
import subprocess
import sys
from pathlib import Path

import pytest

import aleph_tx
from aleph_tx._tap._version import version_line
from twisted import copyright

ROOT = Path(__file__).resolve().parent.parent


def test_version_line() -> None:
    line = version_line()
    assert line.startswith(f"aleph_tx {aleph_tx.__version__} (Twisted {copyright.version}, ")
    assert line.endswith(")")


@pytest.mark.parametrize("tap", ["http", "tcp", "udp"])
def test_each_subcommand_prints_it_and_exits_0(tap: str, capsys: pytest.CaptureFixture[str]) -> None:
    options = importlib.import_module(f"aleph_tx._tap.{tap}").Options()
    with pytest.raises(SystemExit) as info:
        options.parseOptions(["--version"])
    assert info.value.code == 0
    assert capsys.readouterr().out == version_line() + "\n"


def test_through_twist() -> None:
    env = dict(
        os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))
    )
    proc = subprocess.run(
        [sys.executable, "-m", "twisted", "aleph-tcp", "--version"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == version_line()
