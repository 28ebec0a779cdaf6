"""Weekly retraining of the ``breast-cancer`` model: prepare → retrain → evaluate → promote → score.

The challenger trained on this week's batch is evaluated with the active version (the champion) on the
same curated holdout set; it becomes active only if it is better on the model's metric (roc_auc), unless
the trigger form says "force promote". Scoring then uses the active version, or the one the form names.

Trigger form (Airflow UI "Trigger DAG w/ config"): execution config (where every step runs), version to
score with, force promote, and the share of flipped training labels (to see a bad batch rejected).

**Triggering it while it is paused:** the form's "Unpause dss_model_retraining on trigger" box is ticked
by default. Unpausing a scheduled DAG makes the scheduler run its latest weekly interval as well, with the
params' defaults (inherit, active, no force, no noise), after your run (one run at a time). Untick the box
to run only what you asked for.
"""

from __future__ import annotations

import os
from datetime import datetime
from pathlib import Path

from airflow.sdk import DAG, Param

from dss_airflow import (
    DSSContainerRecipeOperator,
    DSSEvaluateModelOperator,
    DSSPromoteModelOperator,
    DSSRetrainModelOperator,
    DSSScoreModelOperator,
    execution_config_param,
)

CONFIG_DIR = os.environ.get("DSS_AIRFLOW_CONFIG") or str(Path(__file__).parents[1] / "examples" / "config")
MODEL = "breast-cancer"
CHALLENGER = "{{ ti.xcom_pull(task_ids='retrain')['version'] }}"

with DAG(
    dag_id="dss_model_retraining",
    description="Weekly retraining: prepare, retrain, evaluate, promote if better, score",
    doc_md=__doc__,
    schedule="@weekly",
    start_date=datetime(2026, 1, 5),
    catchup=False,
    max_active_runs=1,
    tags=["dss_airflow", "example", "ml"],
    params={
        "execution_config": execution_config_param(
            CONFIG_DIR, "demo", description="Where every step runs; 'inherit' uses the project's default."
        ),
        "score_version": Param(
            "active",
            type="string",
            pattern=r"^(active|latest|v\d{8}T\d{6}Z-[0-9a-f]{4})$",
            title="Model version to score with",
            description="'active', 'latest' or a version id such as v20261122T101500Z-ab12.",
        ),
        "force_promote": Param(
            False, type="boolean", title="Force promote", description="Activate the new version anyway."
        ),
        "label_noise": Param(
            0.0,
            type="number",
            minimum=0.0,
            maximum=0.5,
            title="Label noise",
            description="Share of training labels flipped: simulates a broken feed (0 = clean data).",
        ),
    },
    default_args={
        "config_dir": CONFIG_DIR,
        "project": "demo",
        "execution_config": "{{ params.execution_config }}",
    },
):
    prepare = DSSContainerRecipeOperator(
        task_id="prepare_data",
        recipe="recipes/prepare_training_data.py",
        code_env="ml",
        outputs=["ml_data"],
        recipe_params={"batch": "{{ run_id }}", "label_noise": "{{ params.label_noise }}"},
    )
    retrain = DSSRetrainModelOperator(
        task_id="retrain", model=MODEL, data="ml_data/train.csv", promotion="never"
    )
    evaluate = DSSEvaluateModelOperator(
        task_id="evaluate", model=MODEL, data="ml_data/holdout.csv", version=CHALLENGER
    )
    promote = DSSPromoteModelOperator(
        task_id="promote", model=MODEL, version=CHALLENGER, force="{{ params.force_promote }}"
    )
    score = DSSScoreModelOperator(
        task_id="score",
        model=MODEL,
        data="ml_data/to_score.csv",
        version="{{ params.score_version }}",
        predictions="scored/breast-cancer",
    )
    prepare >> retrain >> evaluate >> promote >> score
