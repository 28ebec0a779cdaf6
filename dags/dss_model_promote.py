"""Make a saved model version the active one: a promotion, or a rollback to an older version.

Triggered from the admin page ("Make active" on a model's version) or the trigger form. The pointer moves
unconditionally (``force``: an admin chose the version), through the same promote task as the retraining
pipeline, so ``active.json`` and its history record say who moved it, from which run, and why.
"""

from __future__ import annotations

import os
from pathlib import Path

from airflow.sdk import DAG, Param

from dss_airflow import DSSPromoteModelOperator, get_catalog

CONFIG_DIR = os.environ.get("DSS_AIRFLOW_CONFIG") or str(Path(__file__).parents[1] / "examples" / "config")
MODELS = sorted(get_catalog(CONFIG_DIR).models)

with DAG(
    dag_id="dss_model_promote",
    description="Make a saved model version the active one (promote or roll back)",
    doc_md=__doc__,
    schedule=None,
    catchup=False,
    max_active_runs=1,  # pointer moves of one model take turns anyway (the folder's writer lock)
    tags=["dss_airflow", "admin", "ml"],
    params={
        "model": Param(MODELS[0] if MODELS else "", type="string", enum=MODELS or [""], title="Model"),
        "version": Param(
            "latest",
            type="string",
            pattern=r"^(latest|v\d{8}T\d{6}Z-[0-9a-f]{4})$",
            title="Version to make active",
            description="A version id such as v20261122T101500Z-ab12, or 'latest'.",
        ),
    },
):
    DSSPromoteModelOperator(
        task_id="activate",
        model="{{ params.model }}",
        version="{{ params.version }}",
        force=True,
        config_dir=CONFIG_DIR,
    )
