"""Draw ``bench/results.json`` (written by the benchmarks' ``--record``) for the docs.

One horizontal bar chart per benchmark, each bar the measured rate with its ratio
to the benchmark's baseline, plus a reStructuredText fragment that shows the
charts with the command and time of each measurement. The Sphinx build runs it
(``docs/conf.py``), so the docs always show what ``results.json`` holds:

    python bench/plot.py OUT_DIR        # writes OUT_DIR/<key>.svg and OUT_DIR/benchmarks.inc
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).resolve().parent / "results.json"

#: Benchmarks in the order the docs show them (others follow, sorted).
ORDER = [
    "http",
    "workers",
    "ws_1",
    "ws_50",
    "tcp_1",
    "tcp_50",
    "client",
    "client_concurrent",
    "stream",
    "stream_take_put",
    "stream_connect",
    "stream_map",
]


def _is_ours(name: str) -> bool:
    return name.startswith("aleph") or name.endswith(("worker", "workers"))


def chart(entry: dict[str, Any], path: Path) -> None:
    """One chart: a bar per value, ours highlighted, labelled with rate and ratio."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    values: dict[str, float] = entry["values"]
    base = values[entry["baseline"]]
    names = sorted(values, key=values.__getitem__)
    fig, ax = plt.subplots(figsize=(7, 0.45 * len(names) + 1.1))
    colors = ["#c0392b" if _is_ours(n) else "#7f8c8d" for n in names]
    ax.barh(names, [values[n] for n in names], color=colors)
    top = max(values.values())
    for i, name in enumerate(names):
        ax.text(
            values[name] + top * 0.01,
            i,
            f"{values[name]:,.0f}  ({values[name] / base:.2f}x)",
            va="center",
            fontsize=9,
        )
    ax.set_xlim(0, top * 1.35)
    ax.set_xlabel(f"{entry['unit']} (higher is better; ratio to {entry['baseline']})")
    ax.set_title(entry["title"], fontsize=10)
    ax.spines[["top", "right"]].set_visible(False)
    fig.tight_layout()
    matplotlib.rcParams["svg.hashsalt"] = "aleph_tx"  # same input, same file
    fig.savefig(path, format="svg", metadata={"Date": None})
    plt.close(fig)


def fragment(results: dict[str, Any], image_prefix: str) -> str:
    """The reStructuredText showing every chart, in :data:`ORDER`."""
    keys = [k for k in ORDER if k in results] + sorted(k for k in results if k not in ORDER)
    parts = []
    for key in keys:
        entry = results[key]
        title = entry["title"]
        parts.append(
            f"{title}\n{'~' * len(title)}\n\n"
            f".. image:: {image_prefix}{key}.svg\n   :alt: {title}\n\n"
            f"Measured {entry['measured']} (1-minute load average {entry['load']}):\n\n"
            f".. code-block:: sh\n\n    {entry['command']}\n"
        )
    return "\n".join(parts)


def main(out_dir: Path, image_prefix: str = "") -> list[Path]:
    """Write every chart and ``benchmarks.inc`` into ``out_dir``; return the charts."""
    results: dict[str, Any] = json.loads(RESULTS.read_text())
    out_dir.mkdir(parents=True, exist_ok=True)
    charts = []
    for key, entry in results.items():
        if not entry["values"].get(entry["baseline"], 0) > 0:
            raise ValueError(f"{key}: baseline {entry['baseline']!r} has no positive value")
        path = out_dir / f"{key}.svg"
        chart(entry, path)
        charts.append(path)
    (out_dir / "benchmarks.inc").write_text(fragment(results, image_prefix))
    return charts


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    for written in main(Path(sys.argv[1])):
        print(written)
