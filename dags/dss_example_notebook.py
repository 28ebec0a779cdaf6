"""Example notebook pipeline: a recipe generates orders, a parameterised notebook reports on them.

The notebook (``examples/demo_project/notebooks/orders_report.ipynb``) runs with papermill in the
``notebooks`` code env (``notebook: true``), on the execution config chosen at trigger time: ``inherit``
is the project's default (a local virtualenv), ``docker-small`` needs its image first (``dss-airflow images
build notebooks --config docker-small``). The executed notebook and its HTML export land in the ``reports``
managed folder, next to the CSV the notebook writes; a failing cell fails the task and writes nothing there.
"""

from __future__ import annotations

import os
from pathlib import Path

from airflow.sdk import DAG, Param

from dss_airflow import DSSContainerRecipeOperator, DSSNotebookOperator, execution_config_param

CONFIG_DIR = os.environ.get("DSS_AIRFLOW_CONFIG") or str(Path(__file__).parents[1] / "examples" / "config")

with DAG(
    dag_id="dss_example_notebook",
    description="A recipe generates orders; a parameterised notebook reports on them",
    doc_md=__doc__,
    schedule=None,
    catchup=False,
    tags=["dss_airflow", "example", "notebook"],
    render_template_as_native_obj=True,  # numbers stay numbers in the notebook's parameters
    params={
        "execution_config": execution_config_param(
            CONFIG_DIR,
            "demo",
            description="Where the recipe and the notebook run; 'inherit' uses the project's default.",
        ),
        "product": Param("all", type="string", enum=["all", "widget", "gadget", "gizmo"], title="Product"),
        "min_quantity": Param(1, type="integer", minimum=1, maximum=5, title="Minimum quantity"),
    },
    default_args={"config_dir": CONFIG_DIR, "project": "demo"},
):
    generate = DSSContainerRecipeOperator(
        task_id="generate_orders",
        recipe="recipes/generate_orders.py",
        code_env="stdlib",
        execution_config="{{ params.execution_config }}",
        outputs=["raw"],
        recipe_params={"orders": 300, "seed": 7},
    )
    report = DSSNotebookOperator(
        task_id="orders_report",
        notebook="notebooks/orders_report.ipynb",
        code_env="notebooks",
        execution_config="{{ params.execution_config }}",
        inputs=["raw"],
        output="reports",
        parameters={
            "product": "{{ params.product }}",
            "min_quantity": "{{ params.min_quantity }}",
            "title": "Orders report ({{ params.product }})",
        },
    )
    generate >> report
