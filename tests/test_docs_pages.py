"""The guide pages that name things keep naming real things.

- docs/coming_from_aleph.rst maps every Aleph/Manifold/byte-streams name of the
  reference README, and every aleph_tx name it gives resolves;
- docs/command_line.rst lists every option of the three ``twist`` subcommands;
- docs/examples.rst includes every runnable example (tests/test_examples.py runs them).
"""

from __future__ import annotations

import importlib
import re
from pathlib import Path

import pytest
from twisted.python import usage

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
README = ROOT.parent / "shared" / "reference" / "aleph-0.4-README.txt"

#: How coming_from_aleph.rst abbreviates our modules (the imports it states).
PREFIXES = {
    "s": "aleph_tx.stream",
    "dd": "aleph_tx.deferred",
    "bs": "aleph_tx.byte_streams",
    "http": "aleph_tx.http",
    "tcp": "aleph_tx.tcp",
    "udp": "aleph_tx.udp",
}


def _page(name: str) -> str:
    return (DOCS / name).read_text(encoding="utf-8")


def _our_names() -> set[tuple[str, str]]:
    """``(prefix, name)`` of every ``s.x(`` / ``st.x`` / ``http.x`` ... written in the page's literals."""
    literals = re.findall(r"``([^`]+)``", _page("coming_from_aleph.rst"))
    found = set()
    for literal in literals:
        for prefix, name in re.findall(r"(?<![\w.\"])(s|st|dd|bs|http|tcp|udp)\.([a-z_]+)(?![\w.])", literal):
            found.add((prefix, name))
    return found


def test_the_page_names_many_of_ours() -> None:
    assert len(_our_names()) > 60


@pytest.mark.parametrize(("prefix", "name"), sorted(_our_names()))
def test_every_aleph_tx_name_on_the_page_exists(prefix: str, name: str) -> None:
    if prefix == "st":
        from aleph_tx.stream import Stream

        assert hasattr(Stream, name), f"Stream has no {name!r}"
        return
    module = importlib.import_module(PREFIXES[prefix])
    assert name in module.__all__, f"{module.__name__}.{name} is not public"


def _readme_names() -> set[str]:
    text = README.read_text(encoding="utf-8")
    names = set()
    for qualified in re.findall(r"\(([a-z][a-z.]*/[a-z][a-z!?*>-]*)", text) + re.findall(
        r"\bbs/[a-z-]+", text
    ):
        ns, _, fn = qualified.rpartition("/")
        names.add(f"{ns.rpartition('.')[2]}/{fn}")  # aleph.http/x is written http/x
    for word in ("take!", "put!", "let-flow", ":broadcast?"):
        if word in text:
            names.add(word.lstrip(":"))
    return names


#: The names Aleph 0.4's README uses (shared/reference/aleph-0.4-README.txt, outside
#: this repository: the next test keeps the list equal to it where it is present).
README_NAMES = {
    "http/start-server",
    "http/get",
    "http/websocket-connection",
    "http/websocket-client",
    "tcp/start-server",
    "tcp/client",
    "udp/socket",
    "s/connect",
    "d/chain",
    "bs/to-string",
    "take!",
    "put!",
    "let-flow",
    "broadcast?",
}


@pytest.mark.skipif(not README.is_file(), reason="the reference README is outside this repository")
def test_readme_names_are_those_of_the_reference() -> None:
    assert _readme_names() == README_NAMES


def test_every_name_of_alephs_readme_is_mapped() -> None:
    page = _page("coming_from_aleph.rst")
    missing = sorted(n for n in README_NAMES if n not in page)
    assert not missing, f"coming_from_aleph.rst does not map {missing}"


@pytest.mark.parametrize("tap", ["http", "tcp", "udp"])
def test_command_line_page_lists_every_option(tap: str) -> None:
    options = importlib.import_module(f"aleph_tx._tap.{tap}").Options()
    assert isinstance(options, usage.Options)
    names = {opt.rstrip("=") for opt in options.longOpt} - {"help"}
    page = _page("command_line.rst")
    section = page.split(f"\ntwist aleph-{tap}\n---", 1)[1].split("\n.. _", 1)[0]
    missing = sorted(n for n in names if f"--{n}" not in section)
    assert not missing, f"docs/command_line.rst, aleph-{tap}: {missing}"


def test_examples_page_includes_every_example() -> None:
    included = set(re.findall(r"literalinclude::\s*\.\./examples/(\S+)", _page("examples.rst")))
    on_disk = {p.name for p in (ROOT / "examples").glob("*.py") if not p.name.startswith("_")}
    assert on_disk <= included, sorted(on_disk - included)
    assert all((ROOT / "examples" / name).is_file() for name in included)
