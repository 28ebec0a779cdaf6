"""Example Spark pipeline: a recipe generates orders, a PySpark job aggregates them per product.

The Spark job runs on the ``local-spark`` spark config (examples/config/spark.yaml): Spark in local mode in
the ``spark`` code env's virtualenv, with the same inputs and atomic outputs as recipes.
"""

from __future__ import annotations

import os
from pathlib import Path

from airflow.sdk import DAG, Param

from dss_airflow import DSSContainerRecipeOperator, DSSSparkOperator

CONFIG_DIR = os.environ.get("DSS_AIRFLOW_CONFIG") or str(Path(__file__).parents[1] / "examples" / "config")

with DAG(
    dag_id="dss_example_spark",
    description="A recipe generates orders; a PySpark job aggregates them per product",
    doc_md=__doc__,
    schedule=None,
    catchup=False,
    tags=["dss_airflow", "example", "spark"],
    params={"orders": Param(500, type="integer", minimum=1, maximum=1_000_000, title="Orders to generate")},
    default_args={"config_dir": CONFIG_DIR, "project": "demo"},
):
    generate = DSSContainerRecipeOperator(
        task_id="generate_orders",
        recipe="recipes/generate_orders.py",
        code_env="stdlib",
        outputs=["raw"],
        recipe_params={"orders": "{{ params.orders }}", "seed": 7},
    )
    by_product = DSSSparkOperator(
        task_id="orders_by_product",
        application="jobs/orders_by_product.py",
        spark_config="local-spark",
        code_env="spark",
        inputs={"orders": "raw/orders.csv"},
        outputs={"by_product": "curated/spark"},
    )
    generate >> by_product
