"""Fault drills under a real scheduler (LocalExecutor): what an operator does to a running DSS task, and
what must be true afterwards — the right sentence in the task's log, and, once the next run of those
tasks has started, no container, staging directory or run directory left.

One DAG run, five drills in parallel: out of memory (a 64m config), ``docker stop``, ``docker rm -f``,
SIGKILL of the task process (as the OOM killer or a node loss would), and the Docker daemon killed mid-task
(a TLS daemon in a test host, tests/hosts.py, restarted afterwards). The second run of the same DAG sweeps
what the first left.
"""

from __future__ import annotations

import os
import signal
import textwrap
import time
from typing import TYPE_CHECKING, Any

import pytest

from dss_airflow.config.loader import load_catalog
from dss_airflow.images.service import ImageService
from dss_airflow.leftovers import OWNER_LABEL
from dss_airflow.staging import run_dirs
from tests.airflow_cluster import AirflowCluster
from tests.helpers import leftover_staging, make_project, write_config

if TYPE_CHECKING:
    from pathlib import Path

    from tests.hosts import NamespaceHosts

pytestmark = [pytest.mark.docker, pytest.mark.airflow, pytest.mark.multihost]

DAG_ID = "dss_fault_drill"
DRILLS = {  # task: (execution config, what the recipe does when the run's mode is "fault")
    "drill_oom": ("docker-tiny", "oom"),
    "drill_stop": ("docker-small", "sleep"),
    "drill_rm": ("docker-small", "sleep"),
    "drill_kill": ("docker-small", "sleep"),
    "drill_daemon": ("remote-b", "sleep"),
}

RECIPE = """
import time, dss_recipe
params = dss_recipe.params()
(dss_recipe.output_dir(params["out"]) / "partial.txt").write_text("half")
if params["mode"] == "fault":
    if params["fault"] == "oom":
        hog = []
        while True:
            hog.append(b"x" * (32 * 2**20))
    print("sleeping", flush=True)
    time.sleep(120)
"""

DAG = """
from airflow.sdk import DAG, Param
from dss_airflow import DSSContainerRecipeOperator

with DAG({dag_id!r}, schedule=None, catchup=False, params={{"mode": Param("fault", type="string")}},
         default_args={{"retries": 0}}):
    for task_id, (config, fault) in {drills!r}.items():
        DSSContainerRecipeOperator(
            task_id=task_id, recipe="recipes/drill.py", execution_config=config, code_env="drill",
            outputs=["out_" + task_id], config_dir={config_dir!r},
            recipe_params={{"mode": "{{{{ params.mode }}}}", "fault": fault, "out": "out_" + task_id}},
        )
"""


def _config(root: Path, base_image: str, hosts: NamespaceHosts) -> Path:
    b = hosts["b"]
    folders = "\n".join(f"  out_{task}: {{path: out_{task}}}" for task in DRILLS)
    write_config(
        root,
        {
            "c.yaml": f"""
defaults: {{project: p, data_dir: data}}
base_images:
  base: {{image: "{base_image}"}}
execution_configs:
  docker-small: {{type: docker, base_image: base, resources: {{memory: 256m}}}}
  docker-tiny: {{type: docker, base_image: base, resources: {{memory: 64m}}}}
  remote-b:
    type: docker
    base_image: base
    docker_host: {b.docker_host}
    tls_cert_dir: {b.tls_dir}
    network_mode: none
code_envs:
  drill: {{packages: [six==1.16.0]}}
managed_folders:
{folders}
projects:
  p: {{root: project}}
"""
        },
    )
    make_project(root, {"recipes/drill.py": RECIPE})
    return root


def _wait_for(what: str, check: Any, timeout: float = 120) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        found = check()
        if found:
            return found
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what} did not happen in {timeout:.0f} s")
        time.sleep(0.3)


def _ours(client: Any, task: str | None = None) -> list[dict[str, Any]]:
    labels = [f"dss_airflow.dag_id={DAG_ID}"] + ([f"dss_airflow.task_id={task}"] if task else [])
    return list(client.containers(all=True, filters={"label": labels}))


def _leftover_dirs(root: Path) -> list[Path]:
    drill_runs = [p for p in run_dirs() if p.name.startswith("dss-run-drill_")]
    return leftover_staging(root / "data") + drill_runs


def test_faults_give_true_messages_and_leave_nothing_once_the_next_run_starts(
    remote_hosts: NamespaceHosts, base_image: str, tmp_path: Path
):
    import docker

    config_dir = _config(tmp_path / "config", base_image, remote_hosts)
    report = ImageService(load_catalog(config_dir)).build(["drill"])
    assert report.ok, report.failed
    dags = tmp_path / "dags"
    dags.mkdir()
    text = DAG.format(dag_id=DAG_ID, drills=DRILLS, config_dir=str(config_dir))
    (dags / "drill.py").write_text(textwrap.dedent(text), encoding="utf-8")
    cluster = AirflowCluster.create(
        tmp_path / "airflow",
        dags_folder=dags,
        api_port=18180,
        extra_env={"AIRFLOW__CORE__PARALLELISM": "8", "DSS_AIRFLOW_CONFIG": str(config_dir)},
    )
    main, remote = docker.APIClient(), remote_hosts["b"].client()
    try:
        cluster.airflow("db", "migrate")
        cluster.start_core()
        cluster.wait_parsed([DAG_ID])
        first = cluster.trigger(DAG_ID)

        def running(client: Any, task: str) -> dict[str, Any] | None:
            found = [c for c in _ours(client, task) if c["State"] == "running"]
            return found[0] if found else None

        started = {
            task: _wait_for(f"{task} running", lambda task=task: running(main, task))
            for task in ("drill_stop", "drill_rm", "drill_kill")
        }
        _wait_for("drill_daemon running", lambda: running(remote, "drill_daemon"))
        time.sleep(2)  # past the recipes' first lines: the partial outputs are staged
        main.stop(started["drill_stop"]["Id"], timeout=5)
        main.remove_container(started["drill_rm"]["Id"], force=True)
        owner = started["drill_kill"]["Labels"][OWNER_LABEL]
        os.kill(int(owner.split("/")[2]), signal.SIGKILL)  # the task process, as the OOM killer would
        remote_hosts.kill_daemon("b")
        assert cluster.wait_run(DAG_ID, first, timeout=300) == "failed"

        states = {task: ti["state"] for task, ti in cluster.task_instances(DAG_ID, first).items()}
        assert states == dict.fromkeys(DRILLS, "failed"), states
        expected = {
            # (then, if the meter sampled it before the kill, "; the last reading before the kill: ...")
            "drill_oom": "the recipe ran out of memory (limit 64m of execution config 'docker-tiny'",
            "drill_stop": "the container was stopped from outside this task (SIGTERM: docker stop",
            "drill_rm": "was removed while it ran (docker rm -f?)",
            "drill_daemon": f"lost the Docker daemon at {remote_hosts['b'].docker_host} while running",
        }
        for task, sentence in expected.items():
            log = cluster.task_log(DAG_ID, first, task).replace('\\"', '"')
            assert sentence in log, f"{task}: {log[-3000:]}"
        assert "the task was killed" not in cluster.task_log(DAG_ID, first, "drill_stop")
        larger = "raise resources.memory or use execution config 'docker-small'"  # the next larger one
        assert larger in cluster.task_log(DAG_ID, first, "drill_oom").replace('\\"', '"')

        # What the killed task process could not clean: its container, staging and run directory.
        assert _ours(main, "drill_kill"), "the SIGKILLed try's container outlived it"
        left = _leftover_dirs(tmp_path / "config")
        assert any("drill_kill" in str(p) for p in left), left
        remote_hosts.start_daemon("b")
        assert _ours(remote, "drill_daemon"), "the dead daemon's container is back, exited"

        second = cluster.trigger(DAG_ID, {"mode": "quick"})
        assert cluster.wait_run(DAG_ID, second, timeout=300) == "success", cluster.tails()
        assert _ours(main) == [] and _ours(remote) == [], "no container of either run is left"
        assert _leftover_dirs(tmp_path / "config") == [], "no staging or run directory is left"
        swept = cluster.task_log(DAG_ID, second, "drill_kill")
        assert "left by a try that is gone" in swept, swept[-3000:]
    finally:
        cluster.stop()
        for client in (main, remote):
            for container in _ours(client):
                client.remove_container(container["Id"], force=True)
            client.close()
