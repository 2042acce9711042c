"""``twist aleph-http`` run in a subprocess for the acceptance tests."""

from __future__ import annotations

import os
import pathlib
import re
import signal
import subprocess
import sys
import time

ROOT = pathlib.Path(__file__).resolve().parents[2]
HERE = pathlib.Path(__file__).resolve().parent


class Twist:
    def __init__(self, *args: str, listen: str = "tcp:0:interface=127.0.0.1") -> None:
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join([str(ROOT), str(HERE)])
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "twisted",
                "--log-format",
                "text",
                "aleph-http",
                "--listen",
                listen,
                *args,
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            env=env,
            cwd=str(ROOT),
        )
        self.lines: list[str] = []
        self.terminated = False
        deadline = time.monotonic() + 20
        assert self.proc.stdout is not None
        while time.monotonic() < deadline:
            line = self.proc.stdout.readline().decode()
            if not line:
                raise AssertionError("twist exited: " + "".join(self.lines))
            self.lines.append(line)
            m = re.search(r"aleph-http listening on (?:tcp|ssl):127\.0\.0\.1:(\d+)", line)
            if m:
                self.port = int(m.group(1))
                return
        raise AssertionError("no listening line: " + "".join(self.lines))

    def stop_async(self) -> None:
        self.terminated = True
        self.proc.send_signal(signal.SIGTERM)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def stop(self) -> int:
        """SIGTERM (once) and the exit status (Twisted re-raises the signal: -15)."""
        if self.proc.poll() is None and not self.terminated:
            self.terminated = True
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout=20)
        finally:
            if self.proc.poll() is None:
                self.proc.kill()
