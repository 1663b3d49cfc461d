"""Medians of repeated runs: ``python bench/_median.py results.jsonl`` reads the JSON lines
that ``--json results.jsonl`` appended (one line per figure per run) and prints, per figure,
the median figure, reference and ratio, the number of runs, and how many met the target."""

from __future__ import annotations

import json
import statistics
import sys
from collections import defaultdict
from typing import Any

from _common import number


def main() -> None:
    runs: dict[tuple[str, str], list[dict[str, Any]]] = defaultdict(list)
    for line in open(sys.argv[1]):  # noqa: SIM115 (a short script)
        if line.strip():
            row = json.loads(line)
            runs[(row["bench"], row["name"])].append(row)
    for (_, name), rows in runs.items():
        figure = statistics.median(row["figure"] for row in rows)
        refs = [row["reference_figure"] for row in rows if row["reference_figure"] is not None]
        ratios = [row["ratio"] for row in rows if row["ratio"] is not None]
        met = sum(1 for row in rows if row["ok"])
        text = f"{name:<42} {number(figure):>10} {rows[0]['unit']:<6} {rows[0]['target']:<14}"
        if rows[0]["ok"] is not None:
            text += f" met {met}/{len(rows)}"
        if refs:
            text += f"  ref {number(statistics.median(refs))}"
        if ratios:
            text += f"  ratio {statistics.median(ratios):.2f}"
        print(text + f"  (n={len(rows)})")


if __name__ == "__main__":
    main()
