"""Packaging (setup.cfg, pyproject.toml): what ``pip install .`` and ``pip install -e .`` ship.

The layout (docs/internals.rst, "Plugin packaging"): ``package_dir = =.`` and ``find_namespace:`` with
``aleph_tx``, ``aleph_tx.*`` and ``twisted.plugins``, so the plugin file ships and an
editable install uses a plain ``.pth`` (which Twisted's plugin scan can see).
"""

from __future__ import annotations

import configparser
import os
import re
import tomllib
from pathlib import Path
from typing import Any

import pytest

import aleph_tx

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def config() -> dict[str, Any]:
    setupcfg = pytest.importorskip("setuptools.config.setupcfg", reason="setuptools reads setup.cfg")
    cwd = os.getcwd()
    os.chdir(ROOT)  # find_namespace: and attr: resolve from the project root
    try:
        result: dict[str, Any] = setupcfg.read_configuration(str(ROOT / "setup.cfg"))
    finally:
        os.chdir(cwd)
    return result


def test_packages_ship_aleph_tx_and_the_plugin_namespace(config: dict[str, Any]) -> None:
    packages = set(config["options"]["packages"])
    assert {"aleph_tx", "aleph_tx.stream", "aleph_tx.http", "aleph_tx._tap", "twisted.plugins"} <= packages
    assert "twisted" not in packages  # never ship Twisted's own package
    assert not {p for p in packages if p.split(".")[0] not in {"aleph_tx", "twisted"}}, packages
    assert config["options"]["package_dir"] == {"": "."}
    assert "py.typed" in config["options"]["package_data"]["aleph_tx"]


def test_every_aleph_tx_package_is_shipped(config: dict[str, Any]) -> None:
    on_disk = {
        ".".join(path.parent.relative_to(ROOT).parts)
        for path in (ROOT / "aleph_tx").rglob("__init__.py")
        if "__pycache__" not in path.parts
    }
    assert on_disk <= set(config["options"]["packages"])


def test_version_has_one_home(config: dict[str, Any]) -> None:
    assert config["metadata"]["version"] == aleph_tx.__version__
    assert re.fullmatch(r"\d+\.\d+\.\d+((a|b|rc)\d+)?(\.dev\d+)?", aleph_tx.__version__)
    raw = configparser.ConfigParser()
    raw.read(ROOT / "setup.cfg")
    assert raw["metadata"]["version"] == "attr: aleph_tx.__version__"


def test_metadata(config: dict[str, Any]) -> None:
    meta = config["metadata"]
    assert meta["name"] == "aleph_tx"
    assert meta["license"] == "MIT"
    assert "Framework :: Twisted" in meta["classifiers"]
    assert config["options"]["python_requires"] == ">=3.11"
    requires = " ".join(config["options"]["install_requires"])
    for dep in ("Twisted[tls,http2]", "autobahn", "treq", "pyOpenSSL", "service-identity", "httptools"):
        assert dep in requires
    extras = config["options"]["extras_require"]
    assert {"test", "lint", "docs", "bench"} <= set(extras)
    assert {"pytest", "pytest-twisted", "pytest-timeout", "hypothesis"} <= set(extras["test"])
    assert {"mypy", "mypy-zope", "ruff", "towncrier"} <= set(extras["lint"])


def test_pyproject_holds_only_the_build_system() -> None:
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    assert set(pyproject) == {"build-system"}
    assert pyproject["build-system"]["build-backend"] == "setuptools.build_meta"


def test_tool_configs_parse() -> None:
    ruff = tomllib.loads((ROOT / "ruff.toml").read_text(encoding="utf-8"))
    assert ruff["target-version"] == "py311"
    towncrier = tomllib.loads((ROOT / "towncrier.toml").read_text(encoding="utf-8"))["tool"]["towncrier"]
    assert towncrier["directory"] == "newsfragments"
    assert towncrier["filename"] == "CHANGELOG.rst"
    types = {t["directory"] for t in towncrier["type"]}
    for fragment in (ROOT / "newsfragments").iterdir():
        if fragment.name.startswith("."):
            continue
        issue, kind, ext = fragment.name.split(".")
        assert issue.isdigit(), fragment.name
        assert kind in types, fragment.name
        assert ext == "rst", fragment.name


@pytest.mark.timeout(600)
def test_build_sdist_and_wheel_that_install_in_a_fresh_venv(tmp_path: Path) -> None:
    """``python -m build`` (the wheel is built from the sdist), then the wheel in a new venv.

    The new virtualenv has none of the test environment: pip resolves the
    dependencies, and ``twist --help`` run outside the source tree must list the
    plugins the wheel installed.
    """
    import subprocess
    import sys
    import tarfile
    import zipfile

    dist = tmp_path / "dist"
    subprocess.run(
        [sys.executable, "-m", "build", "--outdir", str(dist), str(ROOT)],
        check=True,
        capture_output=True,
        timeout=300,
    )
    (sdist,) = dist.glob("aleph_tx-*.tar.gz")
    (wheel,) = dist.glob("aleph_tx-*.whl")
    assert sdist.name == f"aleph_tx-{aleph_tx.__version__}.tar.gz"
    with tarfile.open(sdist) as tar:
        in_sdist = {name.split("/", 1)[1] for name in tar.getnames() if "/" in name}
    assert {"setup.cfg", "pyproject.toml", "README.rst", "LICENSE", "aleph_tx/py.typed"} <= in_sdist
    assert "twisted/plugins/aleph_tx_plugins.py" in in_sdist
    in_wheel = set(zipfile.ZipFile(wheel).namelist())
    assert {
        "aleph_tx/py.typed",
        "aleph_tx/http/__init__.py",
        "twisted/plugins/aleph_tx_plugins.py",
    } <= in_wheel
    assert not {"twisted/__init__.py", "twisted/plugins/__init__.py"} & in_wheel  # never shadow Twisted
    assert not {n for n in in_wheel if n.startswith(("tests/", "bench/", "docs/"))}

    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    subprocess.run(
        [str(venv / "bin" / "python"), "-m", "pip", "install", "-q", str(wheel)],
        check=True,
        capture_output=True,
        timeout=480,
        env=env,
    )
    twist = [str(venv / "bin" / "twist")]
    out = subprocess.run(
        [*twist, "--help"], capture_output=True, text=True, cwd=tmp_path, env=env, timeout=60
    )
    assert out.returncode == 0, out.stderr
    for plugin in ("aleph-http", "aleph-tcp", "aleph-udp"):
        assert plugin in out.stdout
    version = subprocess.run(
        [*twist, "aleph-http", "--version"], capture_output=True, text=True, cwd=tmp_path, env=env, timeout=60
    )
    assert aleph_tx.__version__ in version.stdout + version.stderr
