"""Data-aware scheduling on code-env images: runs whenever the 'reporting' env's image is rebuilt.

The rebuild DAG emits ``dss-code-env://reporting`` for each successful rebuild of that env; this DAG
re-runs its recipe on the new image (e.g. to refresh a report produced with the new library versions).
"""

from __future__ import annotations

import os
from pathlib import Path

from airflow.sdk import DAG

from dss_airflow import DSSContainerRecipeOperator, code_env_asset

CONFIG_DIR = os.environ.get("DSS_AIRFLOW_CONFIG") or str(Path(__file__).parents[1] / "examples" / "config")

with DAG(
    dag_id="dss_example_on_image_change",
    description="Re-runs a report whenever the 'reporting' code env's image is rebuilt",
    doc_md=__doc__,
    schedule=[code_env_asset("reporting")],
    catchup=False,
    tags=["dss_airflow", "example"],
):
    DSSContainerRecipeOperator(
        task_id="report",
        recipe="recipes/report_table.py",
        code_env="reporting",
        execution_config="docker-small",
        inputs={"summary": "curated/summary.json"},
        config_dir=CONFIG_DIR,
        project="demo",
    )
