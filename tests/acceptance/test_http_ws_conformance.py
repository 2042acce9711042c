"""A short Autobahn|Testsuite run (kosoku): framing, pings, reserved bits, opcodes,
fragmentation, UTF-8 and closing cases against our server and our client.

The full run, with the size and compression cases, is ``bench/ws_conformance.sh``.
"""

from __future__ import annotations

import glob
import json
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
BENCH = ROOT / "bench"
#: Cases 1 (framing), 2 (pings), 3 (reserved bits), 4 (opcodes), 5 (fragmentation),
#: 6 (UTF-8), 7 (closing) and 10 (miscellaneous): a few seconds on two cores.
CASES = ["1.*", "2.*", "3.*", "4.*", "5.*", "6.*", "7.*", "10.*"]

#: kosoku (a test dependency: setup.cfg's ``test`` extra) next to this Python, else on PATH.
kosoku = str(Path(sys.executable).with_name("kosoku"))
if not os.path.exists(kosoku):
    kosoku = shutil.which("kosoku") or kosoku


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")])
    return env


def _results(folder: str) -> tuple[int, list[str]]:
    """How many cases ran, and the ids of those that FAILED."""
    failed, count = [], 0
    for path in glob.glob(f"{folder}/*case*.json"):
        with open(path) as f:
            case = json.load(f)
        count += 1
        if case["behavior"] == "FAILED" or case.get("behaviorClose") == "FAILED":
            failed.append(case.get("id"))
    return count, sorted(failed)


def _includes() -> list[str]:
    return [arg for case in CASES for arg in ("-i", case)]


def test_server_passes_the_autobahn_cases(tmp_path: Path) -> None:
    log = tmp_path / "server.log"
    with open(log, "w") as out:
        server = subprocess.Popen(
            [sys.executable, str(BENCH / "ws_echo_server.py"), "aleph", "0", "--big"],
            stdout=out,
            stderr=subprocess.STDOUT,
            env=_env(),
        )
    try:
        deadline = time.monotonic() + 30
        port = None
        while port is None and time.monotonic() < deadline:
            for line in log.read_text().splitlines():
                if line.startswith("PORT "):
                    port = int(line.split()[1])
            time.sleep(0.1)
        assert port is not None, log.read_text()
        subprocess.run(
            [
                kosoku,
                "-m",
                "fuzzingclient",
                "-p",
                "2",
                *_includes(),
                "-o",
                str(tmp_path / "r"),
                f"127.0.0.1:{port}",
            ],
            capture_output=True,
            timeout=300,
            check=False,
        )
    finally:
        server.kill()
        server.wait(timeout=10)
    count, failed = _results(str(tmp_path / "r"))
    assert count > 200 and failed == []


def test_client_passes_the_autobahn_cases(tmp_path: Path) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    fuzz = subprocess.Popen(
        [kosoku, "-m", "fuzzingserver", *_includes(), "-o", str(tmp_path / "r"), f"127.0.0.1:{port}"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                time.sleep(0.1)
        subprocess.run(
            [sys.executable, str(BENCH / "ws_fuzz_client.py"), f"127.0.0.1:{port}"],
            capture_output=True,
            timeout=300,
            env=_env(),
            check=False,
        )
        fuzz.wait(timeout=60)
    finally:
        if fuzz.poll() is None:
            fuzz.kill()
            fuzz.wait(timeout=10)
    count, failed = _results(str(tmp_path / "r"))
    assert count > 200 and failed == []
