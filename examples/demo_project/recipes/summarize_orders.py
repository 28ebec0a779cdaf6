"""Recipe 2: revenue per day from the raw orders, into the 'curated' managed folder."""

from __future__ import annotations

import csv
import json

import dss_recipe
from orders import read_orders, revenue_by_day  # from the project's lib/

orders = read_orders(dss_recipe.input_path("orders"))
daily = revenue_by_day(orders)
out = dss_recipe.output_dir("curated")

with (out / "daily_revenue.csv").open("w", newline="", encoding="utf-8") as handle:
    writer = csv.writer(handle)
    writer.writerow(["day", "revenue"])
    writer.writerows(daily.items())
(out / "summary.json").write_text(
    json.dumps({"orders": len(orders), "revenue": round(sum(daily.values()), 2)})
)

print(f"summarised {len(orders)} orders over {len(daily)} days")
dss_recipe.set_result({"orders": len(orders), "days": len(daily)})
