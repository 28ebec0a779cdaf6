"""Settings are read the same way with and without Airflow loaded: the CLI reads ``[dss_airflow]`` options
without importing Airflow (a second per command), tasks through Airflow's own config."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from tests.helpers import write_config

READ = """
import json, sys
{before}
from dss_airflow import settings
print(json.dumps([str(settings.state_dir()), str(settings.cache_dir()), settings.state_conn_id(),
                  "airflow.configuration" in sys.modules]))
"""


def read_settings(env: dict[str, str], *, with_airflow: bool) -> list[object]:
    code = READ.format(before="import airflow.configuration" if with_airflow else "")
    run = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    return list(json.loads(run.stdout.splitlines()[-1]))


def test_options_read_without_airflow_match_airflows_config(tmp_path):
    home = tmp_path / "airflow"
    home.mkdir()
    (home / "airflow.cfg").write_text(
        "[core]\nload_examples = False\n[dss_airflow]\nstate_dir = /srv/dss-state\ncache_dir = /srv/cache\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DSS_AIRFLOW_", "AIRFLOW"))}
    env |= {"AIRFLOW_HOME": str(home), "AIRFLOW__DSS_AIRFLOW__STATE_CONN_ID": "dss_state"}
    without = read_settings(env, with_airflow=False)
    assert without == ["/srv/dss-state", "/srv/cache", "dss_state", False]
    assert read_settings(env, with_airflow=True)[:3] == without[:3]
    env["AIRFLOW__DSS_AIRFLOW__STATE_DIR"] = "/srv/from-env"  # the environment wins over the file
    assert (
        read_settings(env, with_airflow=False)[0]
        == read_settings(env, with_airflow=True)[0]
        == "/srv/from-env"
    )


def test_images_plan_imports_no_airflow_without_a_registry_connection(tmp_path):
    config_dir = write_config(
        tmp_path / "config",
        {
            "c.yaml": """
base_images: {base: {image: "dss-airflow-base:bookworm-py311"}}
execution_configs: {docker: {type: docker, base_image: base, docker_host: "unix:///nonexistent/docker.sock"}}
code_envs: {pandas: {packages: [pandas]}}
projects: {p: {root: .}}
"""
        },
    )
    code = (
        "import sys\nfrom dss_airflow.cli import main\n"
        f"code = main(['images', 'plan', '--config-dir', {str(config_dir)!r}])\n"
        "print('airflow loaded' if any(m.split('.')[0] == 'airflow' for m in sys.modules) else 'no airflow')"
    )
    env = {
        **os.environ,
        "DSS_AIRFLOW_STATE": str(tmp_path / "state"),
        "DSS_AIRFLOW_CACHE": str(tmp_path / "c"),
    }
    run = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert "unknown" in run.stdout and "host unreachable" in run.stdout, run.stdout
    assert run.stdout.rstrip().endswith("no airflow"), run.stdout + run.stderr
    assert Path(tmp_path / "state").is_dir(), "sanity: the ledger was opened"
