"""Recipe 1: generate a deterministic batch of orders into the 'raw' managed folder."""

from __future__ import annotations

import csv
import random

import dss_recipe

params = dss_recipe.params()
rng = random.Random(params.get("seed", 7))
count = int(params.get("orders", 200))
products = {"widget": 2.5, "gadget": 12.0, "gizmo": 7.25}

path = dss_recipe.output_dir("raw") / "orders.csv"
with path.open("w", newline="", encoding="utf-8") as handle:
    writer = csv.writer(handle)
    writer.writerow(["order_id", "day", "product", "quantity", "unit_price"])
    for order_id in range(1, count + 1):
        product = rng.choice(sorted(products))
        writer.writerow(
            [order_id, f"2026-11-{rng.randint(1, 7):02d}", product, rng.randint(1, 5), products[product]]
        )

print(f"wrote {count} orders to {path.name}")
dss_recipe.set_result({"orders": count})
