#!/usr/bin/env python3
"""Draws a chart of curves from JSON Lines files, one panel per entry of a JSON spec:
{"out": "chart.png", "title": "...", "panels": [{"title": "...", "x": "step", "y": "reward",
 "series": [{"file": "a.jsonl", "label": "GRPO"}], "hline": 475}]}.  A panel's "x" and "y" name
the keys read from each line; "hline" draws a dashed reference level.
usage: plot_curves.py SPEC.json  (relative file names are read beside the spec)"""
import json
import math
import pathlib
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def read(path):
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def main():
    spec_path = pathlib.Path(sys.argv[1])
    spec = json.loads(spec_path.read_text())
    panels = spec["panels"]
    columns = 2 if len(panels) == 4 else min(3, len(panels))
    rows = math.ceil(len(panels) / columns)
    fig, axes = plt.subplots(rows, columns, figsize=(4.4 * columns, 3.5 * rows), squeeze=False)
    fig.suptitle(spec.get("title", ""))
    for ax, panel in zip(axes.flat, panels):
        x, y = panel.get("x", "step"), panel["y"]
        for series in panel["series"]:
            lines = read(spec_path.parent / series["file"])
            points = [(r[x], r[y]) for r in lines if r.get(x) is not None and r.get(y) is not None]
            if points:
                ax.plot(*zip(*points), label=series.get("label", y), marker="o" if len(points) < 15 else None,
                        markersize=3)
        if "hline" in panel:
            ax.axhline(panel["hline"], linestyle="--", color="gray", linewidth=1)
        ax.set_title(panel.get("title", y))
        ax.set_xlabel(x)
        ax.grid(alpha=0.3)
        if ax.lines:
            ax.legend(fontsize=8)
    for ax in list(axes.flat)[len(panels):]:
        ax.axis("off")
    fig.tight_layout()
    fig.savefig(spec_path.parent / spec.get("out", "chart.png"), dpi=90)


if __name__ == "__main__":
    main()
