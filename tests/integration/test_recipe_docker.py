"""DSSContainerRecipeOperator against the real Docker engine: limits, non-root, atomic outputs, cleanup."""

from __future__ import annotations

import contextlib
import json
import time
import uuid

import docker.errors
import pytest

from dss_airflow.errors import ExecutionError
from dss_airflow.operators.recipe import DSSContainerRecipeOperator
from tests.helpers import (
    BASE_CONFIG,
    execute_in_background,
    fake_context,
    leftover_staging,
    make_project,
    write_config,
)

pytestmark = pytest.mark.docker

RECIPES = {
    "recipes/inspect.py": """
        import os, pathlib, dss_recipe
        def read(path):
            try:
                return pathlib.Path(path).read_text().strip()
            except OSError:
                return None
        def cgroup_limits():
            if read("/sys/fs/cgroup/cpu.max"):  # cgroup v2
                quota, period = read("/sys/fs/cgroup/cpu.max").split()
                return int(quota) / int(period), int(read("/sys/fs/cgroup/memory.max"))
            quota = int(read("/sys/fs/cgroup/cpu/cpu.cfs_quota_us"))  # cgroup v1
            period = int(read("/sys/fs/cgroup/cpu/cpu.cfs_period_us"))
            return quota / period, int(read("/sys/fs/cgroup/memory/memory.limit_in_bytes"))
        cpus, memory = cgroup_limits()
        (dss_recipe.output_dir("out") / "inspect.txt").write_text("ok")
        dss_recipe.set_result({
            "uid": os.getuid(),
            "cpus": cpus,
            "memory": memory,
            "input": dss_recipe.input_path("raw").joinpath("seed.txt").read_text(),
            "params": dss_recipe.params(),
            "modes": [oct(os.stat(p).st_mode & 0o777) for p in ("..", "../context.json")],
            "status": {
                key: value.strip()
                for key, _, value in (line.partition(":") for line in open("/proc/self/status"))
                if key in ("CapEff", "CapBnd", "NoNewPrivs")
            },
            "pids_max": read("/sys/fs/cgroup/pids.max") or read("/sys/fs/cgroup/pids/pids.max"),
        })
    """,
    "recipes/fails.py": """
        import dss_recipe
        (dss_recipe.output_dir("out") / "partial.csv").write_text("half a file")
        raise ValueError("bad row 42")
    """,
    "recipes/cwd.py": """
        open("scratch.csv", "w").write("lost")
    """,
    "recipes/sleeps.py": """
        import time
        print("sleeping", flush=True)
        time.sleep(120)
    """,
}


@pytest.fixture
def config_dir(tmp_path, base_image):
    write_config(tmp_path, {"c.yaml": BASE_CONFIG.replace("dss-airflow-base:bookworm-py311", base_image)})
    make_project(tmp_path, RECIPES)
    (tmp_path / "data" / "raw").mkdir(parents=True)
    (tmp_path / "data" / "raw" / "seed.txt").write_text("seed")
    return tmp_path


def operator(config_dir, recipe: str, **kwargs) -> DSSContainerRecipeOperator:
    kwargs.setdefault("execution_config", "docker-small")
    return DSSContainerRecipeOperator(
        task_id=recipe.split("/")[-1].removesuffix(".py"), recipe=recipe, config_dir=str(config_dir), **kwargs
    )


def containers_of(docker_client, dag_id: str) -> list:
    return docker_client.containers.list(all=True, filters={"label": f"dss_airflow.dag_id={dag_id}"})


def test_recipe_runs_non_root_with_hard_limits_and_atomic_outputs(config_dir, docker_client):
    dag_id = f"dag-{uuid.uuid4().hex[:8]}"
    op = operator(config_dir, "recipes/inspect.py", inputs=["raw"], outputs=["out"], recipe_params={"k": 1})
    result = op.execute(fake_context(dag_id=dag_id))
    inside = result["result"]
    assert inside["uid"] == 1000, "containers never run as root"
    assert inside["cpus"] == 0.5, "cpus: 0.5 is a hard CFS quota, not relative shares"
    assert inside["memory"] == 256 * 2**20
    assert inside["input"] == "seed" and inside["params"] == {"k": 1}
    assert inside["modes"] == ["0o700", "0o600"], "rendered params are readable by the task's user only"
    assert inside["status"] == {"CapEff": "0" * 16, "CapBnd": "0" * 16, "NoNewPrivs": "1"}, "hardened"
    assert inside["pids_max"] == "1024"
    assert result["outputs"] == {"out": [str(config_dir / "data" / "out" / "inspect.txt")]}
    assert (config_dir / "data" / "out" / "inspect.txt").read_text() == "ok"
    assert leftover_staging(config_dir / "data") == []
    assert result["execution_config"] == "docker-small" and result["image"].startswith("dss-airflow-base")
    json.dumps(result)  # XCom-safe
    assert containers_of(docker_client, dag_id) == []


def test_failed_recipe_leaves_no_partial_output_and_no_container(config_dir, docker_client):
    dag_id = f"dag-{uuid.uuid4().hex[:8]}"
    op = operator(config_dir, "recipes/fails.py", outputs=["out"])
    with pytest.raises(ExecutionError) as info:
        op.execute(fake_context(dag_id=dag_id))
    assert "recipe recipes/fails.py failed on docker-small (docker): ValueError: bad row 42" in str(
        info.value
    )
    assert any("bad row 42" in line for line in info.value.logs), "the traceback reaches the task log"
    assert list((config_dir / "data" / "out").rglob("*")) == []
    assert containers_of(docker_client, dag_id) == []


def test_files_left_in_the_working_directory_are_reported(config_dir):
    result = operator(config_dir, "recipes/cwd.py").execute(
        fake_context(dag_id=f"dag-{uuid.uuid4().hex[:8]}")
    )
    assert len(result["warnings"]) == 1
    assert "scratch.csv" in result["warnings"][0] and "lost when the task ends" in result["warnings"][0]


def test_on_kill_removes_the_container(config_dir, docker_client):
    dag_id = f"dag-{uuid.uuid4().hex[:8]}"
    op = operator(config_dir, "recipes/sleeps.py", outputs=["out"])
    thread, errors = execute_in_background(op, fake_context(dag_id=dag_id))
    deadline = time.monotonic() + 60
    while not containers_of(docker_client, dag_id) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert containers_of(docker_client, dag_id), "the container started"
    op.on_kill()
    thread.join(timeout=60)
    assert not thread.is_alive()
    assert errors and isinstance(errors[0], ExecutionError)
    assert containers_of(docker_client, dag_id) == []
    assert list((config_dir / "data" / "out").rglob("*")) == [], "killed run promoted nothing"


def test_leftover_container_of_an_earlier_try_is_removed(config_dir, docker_client, base_image):
    dag_id = f"dag-{uuid.uuid4().hex[:8]}"
    labels = {
        "dss_airflow.dag_id": dag_id,
        "dss_airflow.task_id": "cwd",
        "dss_airflow.run_id": "run1",
        "dss_airflow.map_index": "-1",
        "dss_airflow.try_number": "1",
    }
    leftover = docker_client.containers.run(base_image, ["sleep", "300"], labels=labels, detach=True)
    try:
        operator(config_dir, "recipes/cwd.py").execute(
            fake_context(dag_id=dag_id, task_id="cwd", try_number=2)
        )
        assert containers_of(docker_client, dag_id) == []
    finally:
        with contextlib.suppress(docker.errors.NotFound):  # removed by the operator, as expected
            leftover.remove(force=True)


def test_container_hardening_follows_the_config(config_dir, docker_client):
    """docker inspect of a running recipe: every capability dropped but the ones given back, and the
    config's no-new-privileges and pids limit."""
    (config_dir / "security.yaml").write_text(
        "execution_configs:\n"
        "  docker-loose:\n"
        "    type: docker\n"
        "    base_image: base\n"
        "    security: {cap_add: [NET_BIND_SERVICE], no_new_privileges: false, pids_limit: 64}\n"
    )
    dag_id = f"dag-{uuid.uuid4().hex[:8]}"
    inspected = {}
    for config in ("docker-small", "docker-loose"):
        op = operator(config_dir, "recipes/sleeps.py", execution_config=config)
        thread, _ = execute_in_background(op, fake_context(dag_id=dag_id))
        deadline = time.monotonic() + 60
        while not containers_of(docker_client, dag_id) and time.monotonic() < deadline:
            time.sleep(0.2)
        (container,) = containers_of(docker_client, dag_id)
        inspected[config] = container.attrs["HostConfig"]
        op.on_kill()
        thread.join(timeout=60)
        assert containers_of(docker_client, dag_id) == []
    strict, loose = inspected["docker-small"], inspected["docker-loose"]
    assert strict["CapDrop"] == ["ALL"] and not strict["CapAdd"]
    assert strict["SecurityOpt"] == ["no-new-privileges"] and strict["PidsLimit"] == 1024
    assert loose["CapDrop"] == ["ALL"] and loose["CapAdd"] == ["NET_BIND_SERVICE"]
    assert not loose["SecurityOpt"] and loose["PidsLimit"] == 64
