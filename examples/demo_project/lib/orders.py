"""Project library: importable from every recipe of the project (its lib/ is on the path)."""

from __future__ import annotations

import csv
from collections import defaultdict
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pathlib import Path


def read_orders(path: Path) -> list[dict[str, str]]:
    with path.open(newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


def revenue_by_day(orders: list[dict[str, str]]) -> dict[str, float]:
    totals: dict[str, float] = defaultdict(float)
    for order in orders:
        totals[order["day"]] += int(order["quantity"]) * float(order["unit_price"])
    return {day: round(total, 2) for day, total in sorted(totals.items())}
