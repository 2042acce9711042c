"""``--record``: store a benchmark's result in ``bench/results.json``.

``results.json`` maps a benchmark key to its last recorded result: what the docs'
plots are drawn from (``bench/plot.py``, run by the Sphinx build). Each entry:
``title``, ``unit``, ``baseline`` (the peer the ratios are against), ``values``
(name -> number, higher is better), ``command``, ``measured`` (UTC) and ``load``
(the 1-minute load average when it was recorded: quote only quiet runs).
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).resolve().parent / "results.json"


def record(key: str, *, title: str, unit: str, baseline: str, values: dict[str, float], command: str) -> None:
    """Replace the entry ``key`` of ``results.json`` (the others are kept)."""
    if not values.get(baseline, 0) > 0:
        raise ValueError(f"baseline {baseline!r} has no positive value in {values}")
    data: dict[str, Any] = json.loads(RESULTS.read_text()) if RESULTS.exists() else {}
    data[key] = {
        "title": title,
        "unit": unit,
        "baseline": baseline,
        "values": values,
        "command": command,
        "measured": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "load": round(os.getloadavg()[0], 2),
    }
    RESULTS.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")
    print(f"recorded {key!r} in {RESULTS}")
