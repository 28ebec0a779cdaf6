"""The example pipeline through real Airflow (`airflow dags test`): local default and Docker."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from typing import TYPE_CHECKING, Any

import pytest
import yaml

from tests.helpers import leftover_staging

if TYPE_CHECKING:
    from pathlib import Path

pytestmark = pytest.mark.airflow


def dags_test(
    env: dict[str, str], data_dir: Path, conf: dict[str, object]
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["airflow", "dags", "test", "dss_example_recipes", "-c", json.dumps(conf)],
        env={**env, "DSS_AIRFLOW_DATA_DIR": str(data_dir)},
        capture_output=True,
        text=True,
        timeout=600,
    )


def assert_outputs(data_dir: Path, orders: int) -> None:
    assert (data_dir / "raw" / "orders.csv").read_text().count("\n") == orders + 1
    summary = json.loads((data_dir / "curated" / "summary.json").read_text())
    assert summary["orders"] == orders and summary["revenue"] > 0
    assert (data_dir / "curated" / "daily_revenue.csv").is_file()
    assert leftover_staging(data_dir) == [], "no staging directory left behind"


def rendered_fields(env: dict[str, str], dag_id: str, task_id: str) -> dict[str, Any]:
    """What the UI's Rendered Templates tab shows for ``task_id`` in the DAG's latest run: the rendered
    fields Airflow stored (RenderedTaskInstanceFields), read through Airflow's own models."""
    script = textwrap.dedent("""
        import json, sys
        from sqlalchemy import select
        from airflow.models.dagrun import DagRun
        from airflow.models.renderedtifields import RenderedTaskInstanceFields as Rendered
        from airflow.utils.session import create_session

        dag_id, task_id = sys.argv[1:]
        with create_session() as session:
            runs = select(DagRun.run_id).where(DagRun.dag_id == dag_id).order_by(DagRun.id.desc())
            latest = runs.limit(1).scalar_subquery()
            where = (Rendered.dag_id == dag_id, Rendered.task_id == task_id, Rendered.run_id == latest)
            row = session.scalar(select(Rendered).where(*where))
            print(json.dumps(row.rendered_fields))
    """)
    done = subprocess.run(
        [sys.executable, "-c", script, dag_id, task_id], env=env, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr[-3000:]
    fields: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return fields


def resolved_execution(env: dict[str, str], dag_id: str, task_id: str) -> dict[str, Any]:
    """The stored ``resolved_execution`` field, parsed; environment values never appear in it."""
    text = rendered_fields(env, dag_id, task_id)["resolved_execution"]
    assert text.startswith("# What this try runs"), text[:300]
    described: dict[str, Any] = yaml.safe_load(text)
    return described


def test_example_dag_on_the_local_default(airflow_env, tmp_path):
    run = dags_test(airflow_env, tmp_path, {"orders": 120, "execution_confg": "docker-small"})
    assert run.returncode == 0, run.stdout[-4000:] + run.stderr[-4000:]
    output = run.stdout + run.stderr
    assert "execution config 'local' (local; chosen by the global default)" in output, "the typo is ignored"
    assert "Trigger conf key 'execution_confg' is not a param of this DAG and is ignored" in output
    assert "did you mean 'execution_config'?" in output
    assert_outputs(tmp_path, 120)
    fields = rendered_fields(airflow_env, "dss_example_recipes", "summarize_orders")
    assert fields["execution_config"] == "inherit", "the argument as rendered"
    described = resolved_execution(airflow_env, "dss_example_recipes", "summarize_orders")
    assert (described["execution_config"], described["backend"]) == ("local", "local"), "what it resolved to"
    assert described["chosen"] == "by the global default"
    assert described["command"][0].endswith("/bin/python") and described["image"].startswith("none")
    assert "DSS_CODE_ENV" in described["env_names"]


@pytest.mark.docker
def test_example_dag_on_docker(airflow_env, tmp_path, base_image, docker_client):
    run = dags_test(airflow_env, tmp_path, {"orders": 80, "execution_config": "docker-small"})
    output = run.stdout + run.stderr
    assert run.returncode == 0, output[-6000:]
    chosen = "chosen in the trigger form (or run conf): params.execution_config"
    assert f"execution config 'docker-small' (docker; {chosen})" in output
    assert "summarised 80 orders over 7 days" in output, "container logs stream into the task log"
    assert "cannot be called outside of the Task Runner" not in output
    assert_outputs(tmp_path, 80)
    described = resolved_execution(airflow_env, "dss_example_recipes", "summarize_orders")
    assert (described["execution_config"], "chosen " + described["chosen"]) == ("docker-small", chosen)
    assert described["backend"] == "docker" and described["docker_host"] == "unix:///var/run/docker.sock"
    assert described["image"] == base_image, "stdlib needs no image of its own: the base image as is"
    assert described["limits"] == {"memory": "512m", "cpus": 1.0, "shm_size": "64m"}
    assert described["security"]["cap_drop"] == ["ALL"] and described["user"]
    assert any(m.endswith("-> /dss/project (ro)") for m in described["mounts"]), described["mounts"]
    assert any(m.endswith("-> /dss/out/curated (rw)") for m in described["mounts"]), described["mounts"]
    assert "DSS_CODE_ENV" in described["env_names"]
    assert described["container"].startswith("dss-dss_example_recipes-summarize_orders-")
    leftovers = docker_client.containers.list(
        all=True, filters={"label": "dss_airflow.dag_id=dss_example_recipes"}
    )
    assert leftovers == []


def test_a_forbidden_config_in_the_run_conf_is_refused(airflow_env, tmp_path):
    """The trigger form's enum refuses it; the operator re-checks at run time as well (unit-tested)."""
    run = dags_test(airflow_env, tmp_path, {"execution_config": "docker-gpu"})
    assert run.returncode != 0
    assert "docker-gpu" in run.stdout + run.stderr
    assert not (tmp_path / "raw").exists(), "nothing ran"
