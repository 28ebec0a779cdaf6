"""The example pipeline through real Airflow (`airflow dags test`): local default and Docker."""

from __future__ import annotations

import json
import subprocess
from typing import TYPE_CHECKING

import pytest

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


def test_example_dag_on_the_local_default(airflow_env, tmp_path):
    run = dags_test(airflow_env, tmp_path, {"orders": 120, "execution_confg": "docker-small"})
    assert run.returncode == 0, run.stdout[-4000:] + run.stderr[-4000:]
    output = run.stdout + run.stderr
    assert "execution config 'local' (local, chosen by the global default)" in output, "the typo is ignored"
    assert "Trigger conf key 'execution_confg' is not a param of this DAG and is ignored" in output
    assert "did you mean 'execution_config'?" in output
    assert_outputs(tmp_path, 120)


@pytest.mark.docker
def test_example_dag_on_docker(airflow_env, tmp_path, base_image, docker_client):
    run = dags_test(airflow_env, tmp_path, {"orders": 80, "execution_config": "docker-small"})
    output = run.stdout + run.stderr
    assert run.returncode == 0, output[-6000:]
    assert "execution config 'docker-small' (docker, chosen by the task)" in output
    assert "summarised 80 orders over 7 days" in output, "container logs stream into the task log"
    assert "cannot be called outside of the Task Runner" not in output
    assert_outputs(tmp_path, 80)
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
