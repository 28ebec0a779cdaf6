"""Spark job: quantity and revenue per product from the raw orders, into the 'curated' managed folder."""

from __future__ import annotations

import json

import dss_recipe
from pyspark.sql import functions as F  # noqa: TID253 - a Spark job: its code env has pyspark

spark = dss_recipe.spark()
orders = spark.read.csv(str(dss_recipe.input_path("orders")), header=True, inferSchema=True)
by_product = (
    orders.groupBy("product")
    .agg(
        F.count("*").alias("orders"),
        F.sum("quantity").alias("quantity"),
        F.round(F.sum(F.col("quantity") * F.col("unit_price")), 2).alias("revenue"),
    )
    .orderBy("product")
)
rows = [row.asDict() for row in by_product.collect()]
(dss_recipe.output_dir("by_product") / "orders_by_product.json").write_text(json.dumps(rows, indent=2))

print(f"{len(rows)} products over {orders.count()} orders (spark {spark.version})")
dss_recipe.set_result({"products": len(rows)})
