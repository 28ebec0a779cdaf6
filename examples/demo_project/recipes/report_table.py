"""Recipe 3: a plain-text table of the summary, with the 'reporting' env's tabulate."""

from __future__ import annotations

import json

import dss_recipe
from tabulate import tabulate

summary = json.loads(dss_recipe.input_path("summary").read_text())
print(tabulate(sorted(summary.items()), headers=["measure", "value"]))
dss_recipe.set_result(summary)
