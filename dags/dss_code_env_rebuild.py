"""Keep code-env images current: detect what changed, rebuild exactly that, tell who cares.

Scheduled hourly, the sensor waits (in reschedule mode, holding no worker slot) for a package list,
requirements file, resources directory or base image digest to change; the rebuild task builds only the
stale (env, config) images, smoke-tests and switches them; each rebuilt env emits the asset
``dss-code-env://<env>``, which DAGs can be scheduled on (see dss_example_on_image_change.py).

From the trigger form, an admin can rebuild one env (or "all") right away. Each run also sweeps what
killed tries left behind on its worker's host (containers, staging and run directories: ``dss-airflow gc``).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from airflow.sdk import DAG, Param, task

from dss_airflow import CodeEnvChangeSensor, DSSRebuildCodeEnvImagesOperator, get_catalog

CONFIG_DIR = os.environ.get("DSS_AIRFLOW_CONFIG") or str(Path(__file__).parents[1] / "examples" / "config")
CODE_ENVS = get_catalog(CONFIG_DIR).code_envs

with DAG(
    dag_id="dss_code_env_rebuild",
    description="Rebuild the code-env images whose package lists, resources or base image changed",
    doc_md=__doc__,
    schedule="@hourly",
    catchup=False,
    max_active_runs=1,  # two rebuild runs never build at once (the ledger's env lock also guarantees it)
    render_template_as_native_obj=True,
    tags=["dss_airflow", "admin"],
    params={
        "env": Param(
            "none",
            type="string",
            enum=["none", "all", *sorted(CODE_ENVS)],
            values_display={
                "none": "none: wait for changes",
                "all": "all: every code env, right away",
                **{
                    name: f"{name}: {env.description}" if env.description else name
                    for name, env in CODE_ENVS.items()
                },
            },
            title="Rebuild now",
            description="'none' waits for changes; a code env (or 'all') is rebuilt right away.",
        ),
    },
):
    detect = CodeEnvChangeSensor(
        task_id="detect_changes",
        force_envs="{{ params.env }}",
        config_dir=CONFIG_DIR,
        poke_interval=120,
        timeout=55 * 60,
        soft_fail=True,  # nothing changed this hour: skip the rest, do not fail
    )
    rebuild = DSSRebuildCodeEnvImagesOperator(
        task_id="rebuild",
        pairs="{{ ti.xcom_pull(task_ids='detect_changes') }}",
        config_dir=CONFIG_DIR,
    )

    @task
    def notify(result: dict[str, Any]) -> str:
        """Replace with Slack/e-mail; the summary is also this task's XCom."""
        summary = f"rebuilt {', '.join(result['switched']) or 'nothing'}"
        print(summary)
        return summary

    detect >> rebuild >> notify(rebuild.output)  # type: ignore[arg-type]  # XComArg resolves at run time

    @task
    def sweep_leftovers() -> dict[str, int]:
        """Containers, staging and run directories of tries that were killed and never ran again."""
        from dss_airflow.gc import sweep_all

        swept = sweep_all(get_catalog(CONFIG_DIR))
        for problem in swept.unreachable:
            print(f"skipped: {problem}")
        return {"directories": len(swept.directories), "containers": len(swept.containers)}

    sweep_leftovers()
