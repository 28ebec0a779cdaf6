"""Example pipeline: two recipes of the demo project, on the execution config chosen at trigger time.

``inherit`` runs on the project's default (the embedded local venv); pick ``docker-small`` in the trigger
form (or ``-c '{"execution_config": "docker-small"}'``) to run both recipes in containers.
"""

from __future__ import annotations

import os
from pathlib import Path

from airflow.sdk import DAG, Param

from dss_airflow import DSSContainerRecipeOperator, execution_config_param

CONFIG_DIR = os.environ.get("DSS_AIRFLOW_CONFIG") or str(Path(__file__).parents[1] / "examples" / "config")

with DAG(
    dag_id="dss_example_recipes",
    description="Two recipes of the demo project on the execution config chosen at trigger time",
    doc_md=__doc__,
    schedule=None,
    catchup=False,
    tags=["dss_airflow", "example"],
    params={
        "execution_config": execution_config_param(
            CONFIG_DIR, "demo", description="Where the recipes run; 'inherit' uses the project's default."
        ),
        "orders": Param(500, type="integer", minimum=1, maximum=1_000_000, title="Orders to generate"),
    },
    default_args={"config_dir": CONFIG_DIR, "project": "demo", "code_env": "stdlib"},
):
    generate = DSSContainerRecipeOperator(
        task_id="generate_orders",
        recipe="recipes/generate_orders.py",
        execution_config="{{ params.execution_config }}",
        outputs=["raw"],
        recipe_params={"orders": "{{ params.orders }}", "seed": 7},
    )
    summarize = DSSContainerRecipeOperator(
        task_id="summarize_orders",
        recipe="recipes/summarize_orders.py",
        execution_config="{{ params.execution_config }}",
        inputs={"orders": "raw/orders.csv"},
        outputs=["curated"],
    )
    generate >> summarize
