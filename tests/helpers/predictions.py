"""Reading predict.py's CSV."""

from __future__ import annotations

import csv
from pathlib import Path


def read_predictions(output: Path) -> dict[str, dict[int, float]]:
    """Per image path, the probability of each class listed for it, most probable first."""
    with output.open() as file:
        rows = list(csv.DictReader(file))
    ranks = range(1, (len(rows[0]) - 1) // 3 + 1)
    return {
        row["path"]: {int(row[f"class_{r}"]): float(row[f"prob_{r}"]) for r in ranks}
        for row in rows
    }
