"""`dss-airflow config validate --check-connections` against real Airflow: a connection in the metadata
database, one in an AIRFLOW_CONN_* variable, and names that exist nowhere."""

from __future__ import annotations

import subprocess
import sys
import uuid

import pytest

from tests.helpers import write_config

pytestmark = pytest.mark.airflow


def test_missing_connections_are_reported_where_the_config_names_them(airflow_env, tmp_path):
    suffix = uuid.uuid4().hex[:8]
    in_db, in_env, nowhere = f"dss_reg_{suffix}", f"dss_k8s_{suffix}", f"dss_gone_{suffix}"
    write_config(
        tmp_path,
        {
            "c.yaml": f"""
                base_images:
                  base: {{image: dss-airflow-base:bookworm-py311}}
                execution_configs:
                  docker-reg:
                    type: docker
                    base_image: base
                    registry: {{url: "registry.example.internal:5000", connection_id: {in_db}}}
                  k8s:
                    type: kubernetes
                    base_image: base
                    kubernetes_conn_id: {in_env}
                clusters:
                  far:
                    kubernetes_conn_id: {nowhere}
            """
        },
    )
    added = subprocess.run(
        ["airflow", "connections", "add", in_db, "--conn-type", "docker", "--conn-host", "registry.internal"],
        env=airflow_env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert added.returncode == 0, added.stderr[-2000:]
    env = {
        **airflow_env,
        f"AIRFLOW_CONN_{in_env.upper()}": '{"conn_type": "kubernetes"}',
        "DSS_AIRFLOW_STATE_CONN_ID": f"dss_state_{suffix}",
    }
    command = [sys.executable, "-m", "dss_airflow.cli", "config", "validate", "--config-dir", str(tmp_path)]
    plain = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    assert plain.returncode == 0 and "connections:" not in plain.stdout, "looked up only when asked"

    checked = subprocess.run(
        [*command, "--check-connections"], env=env, capture_output=True, text=True, timeout=300
    )
    assert checked.returncode == 1, checked.stdout + checked.stderr
    assert "connections: 4 named, 2 missing" in checked.stdout
    where = f"{tmp_path / 'c.yaml'}:15: clusters.far.kubernetes_conn_id"
    assert f"{where}: Airflow connection {nowhere!r} does not exist" in checked.stderr
    assert f"airflow connections add {nowhere} --conn-type kubernetes" in checked.stderr
    assert (
        f"$DSS_AIRFLOW_STATE_CONN_ID: state_conn_id: Airflow connection 'dss_state_{suffix}'"
        in checked.stderr
    )
    assert in_db not in checked.stderr, "found in the metadata database"
    assert in_env not in checked.stderr, "found in its environment variable"
