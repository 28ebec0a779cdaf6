"""Issue 4 for real: edit a package list -> the sensor reports exactly that env -> rebuild -> asset event
-> a recipe runs on the new image. Through `airflow dags test` and the real Docker engine."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
import textwrap
import uuid
from collections import defaultdict
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from dss_airflow import cli
from dss_airflow.config.loader import load_catalog
from dss_airflow.images.service import ImageService
from dss_airflow.operators.images import DSSRebuildCodeEnvImagesOperator
from dss_airflow.sensors.code_env import CodeEnvChangeSensor
from tests.helpers import fake_context, make_project, write_config

CONFIG = """
defaults: {{project: p, data_dir: data}}
base_images:
  base: {{image: "{base}", bootstrap: {{}}}}
execution_configs:
  d1: {{type: docker, base_image: base, docker_host: "{docker_host}"}}
code_envs:
  {env}: {{packages: {packages}}}
  other: {{packages: ["six==1.16.0"]}}
managed_folders:
  out: {{path: out}}
projects:
  p: {{root: project}}
"""

DAG = """
from airflow.sdk import DAG
from dss_airflow import CodeEnvChangeSensor, DSSContainerRecipeOperator, DSSRebuildCodeEnvImagesOperator

with DAG("rebuild_then_use", schedule=None, render_template_as_native_obj=True):
    detect = CodeEnvChangeSensor(task_id="detect", mode="poke", poke_interval=1, timeout=120)
    pairs = "{{{{ ti.xcom_pull(task_ids='detect') }}}}"
    rebuild = DSSRebuildCodeEnvImagesOperator(task_id="rebuild", pairs=pairs)
    use = DSSContainerRecipeOperator(
        task_id="use", recipe="recipes/uses_attrs.py", code_env="{env}", execution_config="d1",
        outputs=["out"],
    )
    detect >> rebuild >> use
"""


def write(
    root: Path,
    base_image: str,
    env: str,
    packages: list[str],
    docker_host: str = "unix:///var/run/docker.sock",
):
    text = CONFIG.format(base=base_image, env=env, packages=json.dumps(packages), docker_host=docker_host)
    write_config(root, {"config/c.yaml": text})


@pytest.mark.docker
@pytest.mark.airflow
def test_package_list_edit_is_detected_rebuilt_announced_and_used(tmp_path, base_image):
    env = f"watched-{uuid.uuid4().hex[:6]}"
    config_dir = tmp_path / "config"
    write(tmp_path, base_image, env, ["six==1.16.0"])
    make_project(
        config_dir,
        {"recipes/uses_attrs.py": "import attrs, dss_recipe\n"
         "(dss_recipe.output_dir('out') / 'attrs.txt').write_text(attrs.__version__)\n"},
    )  # fmt: skip
    assert ImageService(load_catalog(config_dir)).build().ok  # both envs current
    write(tmp_path, base_image, env, ["six==1.16.0", "attrs==25.1.0"])  # the admin adds a package

    dags = tmp_path / "dags"
    dags.mkdir()
    (dags / "rebuild_then_use.py").write_text(textwrap.dedent(DAG.format(env=env)))
    home = tmp_path / "airflow"
    run_env = {
        **os.environ,
        "AIRFLOW_HOME": str(home),
        "AIRFLOW__CORE__DAGS_FOLDER": str(dags),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "DSS_AIRFLOW_CONFIG": str(config_dir),
        "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}",
    }
    subprocess.run(["airflow", "db", "migrate"], env=run_env, check=True, capture_output=True, timeout=600)
    run = subprocess.run(
        ["airflow", "dags", "test", "rebuild_then_use"],
        env=run_env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    output = run.stdout + run.stderr
    assert run.returncode == 0, output[-6000:]
    assert f"Stale: {env}/d1 (package list changed)" in output
    assert "Stale: other/" not in output, "exactly the edited env"
    assert (config_dir / "data" / "out" / "attrs.txt").read_text() == "25.1.0", (
        "the recipe ran on the new image"
    )
    with sqlite3.connect(home / "airflow.db") as db:
        uris = [
            row[0] for row in db.execute("SELECT a.uri FROM asset_event e JOIN asset a ON a.id = e.asset_id")
        ]
    # Airflow stores the URI normalised ("scheme://host/"), the same way it normalises schedule=[Asset(...)]
    assert [uri.rstrip("/") for uri in uris] == [f"dss-code-env://{env}"], "an event for the rebuilt env only"


@pytest.mark.docker
def test_poke_with_nothing_changed_builds_nothing_and_skips_docker_without_digest_checks(
    tmp_path, base_image, monkeypatch
):
    env = f"idle-{uuid.uuid4().hex[:6]}"
    config_dir = tmp_path / "config"
    write(tmp_path, base_image, env, ["six==1.16.0"])
    assert ImageService(load_catalog(config_dir)).build().ok
    sensor = CodeEnvChangeSensor(task_id="s", config_dir=str(config_dir))
    assert not sensor.poke(fake_context())
    # Point the config at a daemon that does not exist (a remote one: its base images live on the build
    # daemon, which is gone too): without digest checks, the poke never notices.
    write(tmp_path, base_image, env, ["six==1.16.0"], docker_host="tcp://127.0.0.1:9")
    monkeypatch.setenv("DSS_AIRFLOW_BUILD_DOCKER_HOST", "tcp://127.0.0.1:9")
    quiet = CodeEnvChangeSensor(task_id="s", config_dir=str(config_dir), check_base_digests=False)
    result = quiet.poke(fake_context())
    assert not result and result.xcom_value == []


DEAD_HOST = """
defaults: {{project: p, data_dir: data}}
base_images:
  base: {{image: "{base}", bootstrap: {{}}}}
execution_configs:
  alive: {{type: docker, base_image: base}}
  # A daemon next to the worker's files (it builds its own images) and a remote one (images built here,
  # then copied onto it): both down.
  dead: {{type: docker, base_image: base, docker_host: "tcp://127.0.0.1:9", shares_worker_filesystem: true}}
  dead-remote: {{type: docker, base_image: base, docker_host: "tcp://127.0.0.1:9"}}
code_envs:
  {env}: {{packages: {packages}}}
projects:
  p: {{root: project}}
"""


@pytest.mark.docker
def test_a_dead_daemon_makes_only_its_own_pairs_unknown(tmp_path, base_image, capsys):
    """Plan, sensor, CLI build and the rebuild operator with one host down: the live pair is planned and
    rebuilt; the dead one is "unknown (host unreachable ...)" in the plan (its base is read there) and
    unreachable in builds, like the remote one whose image could not be copied; neither is recorded as a
    failed build."""
    env = f"split-{uuid.uuid4().hex[:6]}"
    config_dir = tmp_path / "config"

    def configure(packages: list[str]) -> None:
        text = DEAD_HOST.format(base=base_image, env=env, packages=json.dumps(packages))
        write_config(tmp_path, {"config/c.yaml": text})

    configure(["six==1.16.0"])
    assert cli.main(["images", "plan", "--config-dir", str(config_dir)]) == 0, "plan reports, never fails"
    printed = capsys.readouterr().out
    assert f"build  {env}/alive  (never built)" in printed
    assert f"build  {env}/dead-remote  (never built)" in printed, "planned from the build daemon"
    assert f"unknown  {env}/dead  (host unreachable: tcp://127.0.0.1:9: connection refused" in printed
    assert "2 build, 0 up to date, 0 blocked, 1 unknown" in printed

    assert cli.main(["images", "build", "--all", "--config-dir", str(config_dir)]) == 1
    captured = capsys.readouterr()
    assert "switched 1" in captured.out and "failed 0, unreachable 2" in captured.out
    for name in ("dead", "dead-remote"):
        assert (
            f"UNREACHABLE {env}/{name}: Docker daemon tcp://127.0.0.1:9 of execution config '{name}' is "
            "unusable: connection refused"
        ) in captured.err

    configure(["six==1.16.0", "attrs==25.1.0"])
    stale = CodeEnvChangeSensor(task_id="s", config_dir=str(config_dir)).poke(fake_context())
    assert stale and {pair["config"] for pair in stale.xcom_value or []} == {"alive", "dead-remote"}

    pairs = [{"env": env, "config": name} for name in ("alive", "dead", "dead-remote")]
    rebuild = DSSRebuildCodeEnvImagesOperator(task_id="rebuild", pairs=pairs, config_dir=str(config_dir))
    outlets: dict[Any, Any] = defaultdict(lambda: SimpleNamespace(add=lambda *a, **k: None))
    context: Any = {**fake_context(), "outlet_events": outlets}
    result = rebuild.execute(context)  # the task succeeds
    assert result["switched"] == [f"{env}/alive"] and result["failed"] == {}
    assert sorted(result["unreachable"]) == [f"{env}/dead", f"{env}/dead-remote"]
    recorded = ImageService(load_catalog(config_dir)).ledger.read(env)
    assert recorded["alive"].status == "ok"
    assert "dead" not in recorded and "dead-remote" not in recorded, "an unreachable host is not a failure"


def test_forced_rebuild_from_the_trigger_form(tmp_path):
    write(tmp_path, "img:1", "wanted", ["six==1.16.0"])
    sensor = CodeEnvChangeSensor(task_id="s", config_dir=str(tmp_path / "config"), force_envs="wanted")
    result = sensor.poke(fake_context())
    assert result and result.xcom_value == [{"env": "wanted", "config": "d1", "reasons": ["requested"]}]
    everything = CodeEnvChangeSensor(task_id="s", config_dir=str(tmp_path / "config"), force_envs="all")
    pairs = everything.poke(fake_context()).xcom_value or []
    assert {pair["env"] for pair in pairs} == {"wanted", "other"}
    with pytest.raises(Exception, match="unknown code env 'wantd'.*Did you mean 'wanted'"):
        CodeEnvChangeSensor(task_id="s", config_dir=str(tmp_path / "config"), force_envs="wantd").poke(
            fake_context()
        )
