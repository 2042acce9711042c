"""Handlers for the ``--workers`` acceptance tests: each answers with its worker's process id."""

from __future__ import annotations

import os
from typing import Any


def tcp_pid(conn: Any, info: dict[str, Any]) -> None:
    """``twist aleph-tcp --handler``: send ``PID ALEPH_TX_WORKER\\n`` and close."""
    conn.put(f"{os.getpid()} {os.environ.get('ALEPH_TX_WORKER', '-')}\n".encode())
    conn.close()


def http_pid(req: dict[str, Any]) -> dict[str, Any]:
    """``twist aleph-http --handler``: the body is ``PID ALEPH_TX_WORKER``."""
    return {"status": 200, "body": f"{os.getpid()} {os.environ.get('ALEPH_TX_WORKER', '-')}"}
