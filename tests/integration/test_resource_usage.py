"""What runs used, measured by the real engines: Docker's cgroup (peak memory, throttling, an out-of-memory
kill, the "copy" layout), the local backend's process group, and `dss-airflow usage` after `airflow dags
test` reading the recorded XComs back through Airflow."""

from __future__ import annotations

import os
import re
import subprocess
import textwrap
import uuid

import pytest

from dss_airflow.errors import ExecutionError
from dss_airflow.operators.recipe import DSSContainerRecipeOperator
from tests.helpers import fake_context, make_project, write_config

MiB = 2**20

CONFIG = """
    defaults: {project: demo, code_env: plain, data_dir: data}
    base_images: {base: {image: "BASE"}}
    execution_configs:
      docker-tiny: {type: docker, base_image: base, resources: {memory: 256m, cpus: 1}}
      docker-tiny-copy:
        type: docker
        base_image: base
        shares_worker_filesystem: false  # the local daemon, told it does not see the worker's files
        resources: {memory: 256m, cpus: 1}
      docker-small: {type: docker, base_image: base, resources: {memory: 512m, cpus: 0.5}}
      docker-medium:  # larger than small, smaller than large, but not for project demo
        type: docker
        base_image: base
        resources: {memory: 1g, cpus: 1}
        allowed_groups: [ml-team]
      docker-large: {type: docker, base_image: base, resources: {memory: 2g, cpus: 2}}
    code_envs: {plain: {}}
    managed_folders: {out: {path: out}}
    projects: {demo: {root: project, groups: [analysts]}}
"""

#: Every page written, so the memory is resident (a bare bytearray of zeros may not be).
TOUCH = textwrap.dedent("""
    def touched(mib):
        block = bytearray(mib * 2**20)
        block[::4096] = b"x" * len(block[::4096])
        return block
""")
RECIPES = {
    "recipes/alloc_and_spin.py": TOUCH
    + textwrap.dedent("""
        import time
        held = touched(300)
        while time.process_time() < 1.0:  # one CPU-second: about two seconds of wall time at 0.5 CPU
            pass
    """),
    "recipes/grows.py": TOUCH
    + textwrap.dedent("""
        import time
        chunks = []
        for _ in range(40):  # 640 MiB in 16 MiB steps: past a 256m limit after about 1.5 s
            chunks.append(touched(16))
            time.sleep(0.1)
    """),
    "recipes/near_limit.py": TOUCH + "held = touched(470)\n",
    "recipes/killed.py": TOUCH
    + textwrap.dedent("""
        import os, signal, time
        held = touched(100)
        time.sleep(1)  # the meter samples every 0.25 s
        os.kill(os.getpid(), signal.SIGKILL)  # as the host's OOM killer would
    """),
    "recipes/group.py": TOUCH
    + textwrap.dedent("""
        import subprocess, sys
        held = touched(200)
        CHILD = "import time; b = bytearray(100 * 2**20); b[::4096] = b'x' * len(b[::4096]); time.sleep(1.5)"
        subprocess.run([sys.executable, "-c", CHILD], check=True)  # 100 MiB more, in a second process
    """),
}


@pytest.fixture
def config_dir(tmp_path, base_image):
    write_config(tmp_path, {"c.yaml": CONFIG.replace("BASE", base_image)})
    make_project(tmp_path, RECIPES)
    return tmp_path


def run(config_dir, recipe: str, config: str, pushed: list | None = None) -> dict:
    task_id = recipe.removeprefix("recipes/").removesuffix(".py")
    op = DSSContainerRecipeOperator(
        task_id=task_id, recipe=recipe, config_dir=str(config_dir), execution_config=config
    )
    context = fake_context(dag_id=f"usage-{uuid.uuid4().hex[:8]}", task_id=task_id)
    if pushed is not None:
        context["ti"].xcom_push = lambda key, value: pushed.append((key, value))
    result: dict = op.execute(context)
    return result


@pytest.mark.docker
def test_docker_reports_the_peak_memory_and_the_throttling_with_advice(config_dir):
    resources = run(config_dir, "recipes/alloc_and_spin.py", "docker-small")["resources"]
    assert 290 * MiB <= resources["peak_memory_bytes"] <= 400 * MiB, resources
    assert resources["measured_by"].startswith("cgroup v"), "the container's own accounting"
    assert resources["limits"] == {"memory_bytes": 512 * MiB, "cpus": 0.5}
    assert resources["cpu_s"] >= 1.0 and resources["throttled_s"] > 0, resources
    assert resources["throttled_pct"] > 25, "one CPU-second at half a CPU: throttled about half the time"
    assert re.fullmatch(
        r"used \d+ MiB of 512 MiB \(\d+ %\), [\d.]+ CPU-s over [\d.]+ s wall, throttled [\d.]+ s",
        resources["summary"],
    ), resources["summary"]
    assert resources["advice_level"] == "warning" and resources["suggested_config"] == "docker-large"
    assert "docker-medium" not in resources["advice"], "restricted to another group: never offered"


@pytest.mark.docker
@pytest.mark.parametrize("config", ["docker-tiny", "docker-tiny-copy"])
def test_an_out_of_memory_kill_names_the_peak_seen_before_it(config_dir, config):
    if config.endswith("-copy"):  # the image's own runtime: build it (or reuse it)
        from dss_airflow.config.loader import load_catalog
        from dss_airflow.images.service import ImageService

        assert ImageService(load_catalog(config_dir)).build(["plain"], [config]).ok
    pushed: list = []
    with pytest.raises(ExecutionError) as info:
        run(config_dir, "recipes/grows.py", config, pushed)
    message = str(info.value)
    assert f"ran out of memory (limit 256m of execution config '{config}'; the last reading" in message
    seen = re.search(r"the last reading before the kill: (\d+) MiB after [\d.]+ s\)", message)
    assert seen and 64 <= int(seen[1]) <= 256, message
    assert message.endswith("raise resources.memory or use execution config 'docker-large'; its "
                            "managed-folder outputs were left untouched"), message  # fmt: skip
    ((key, record),) = pushed  # a failed try has no return_value: its usage has a key of its own
    assert key == "resources" and record["out_of_memory"] and record["suggested_config"] == "docker-large"
    assert f"{record['peak_memory_bytes'] / MiB:.0f}" == seen[1]


def test_the_local_backend_reports_the_peak_of_its_process_group(config_dir):
    resources = run(config_dir, "recipes/group.py", "local")["resources"]
    assert resources["measured_by"].startswith("getrusage"), resources
    assert 300 * MiB <= resources["peak_memory_bytes"] <= 420 * MiB, "200 MiB here + 100 MiB in a child"
    assert resources["limits"] == {"memory_bytes": None, "cpus": None} and resources["throttled_s"] is None
    assert resources["summary"].startswith("used 3") and resources["advice"] is None


def test_a_local_run_killed_by_sigkill_names_its_last_reading(config_dir):
    with pytest.raises(ExecutionError) as info:
        run(config_dir, "recipes/killed.py", "local")
    message = str(info.value)
    assert (
        "the recipe process was killed (SIGKILL: the host's OOM killer, or kill -9; the last reading"
        in message
    )
    seen = re.search(r"the last reading before the kill: (\d+) MiB after [\d.]+ s\)", message)
    assert seen and 100 <= int(seen[1]) <= 160, message


DAG = """
from airflow.sdk import DAG
from dss_airflow import DSSContainerRecipeOperator

with DAG("DAG_ID", schedule=None):
    DSSContainerRecipeOperator(
        task_id="near_limit", recipe="recipes/near_limit.py", execution_config="docker-small"
    )
    DSSContainerRecipeOperator(task_id="light", recipe="recipes/alloc_and_spin.py", execution_config="local")
"""


@pytest.mark.airflow
@pytest.mark.docker
def test_the_usage_command_summarises_a_dag_run(config_dir, airflow_env, tmp_path):
    dag_id = f"usage_{uuid.uuid4().hex[:8]}"
    dags = tmp_path / "dags"
    dags.mkdir()
    (dags / f"{dag_id}.py").write_text(DAG.replace("DAG_ID", dag_id))
    env = {
        **airflow_env,
        "AIRFLOW__CORE__DAGS_FOLDER": str(dags),
        "DSS_AIRFLOW_CONFIG": str(config_dir),
        "DSS_AIRFLOW_DATA_DIR": str(config_dir / "data"),
        # this test's own state and the session's cache (airflow_env predates them)
        "DSS_AIRFLOW_STATE": os.environ["DSS_AIRFLOW_STATE"],
        "DSS_AIRFLOW_CACHE": os.environ["DSS_AIRFLOW_CACHE"],
    }
    done = subprocess.run(
        ["airflow", "dags", "test", dag_id], env=env, capture_output=True, text=True, timeout=600
    )
    output = done.stdout + done.stderr
    assert done.returncode == 0, output[-6000:]
    line = re.search(r"Resources of recipe recipes/near_limit.py on 'docker-small': (used .*)", output)
    assert line and re.match(r"used 4\d\d MiB of 512 MiB \(9\d %\), [\d.]+ CPU-s over [\d.]+ s wall", line[1])
    assert "Recipe recipes/near_limit.py used 9" in output and "use execution config 'docker-large'" in output
    usage = subprocess.run(
        ["dss-airflow", "usage", "--dag", dag_id, "--since", "1h"],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert usage.returncode == 0, usage.stderr[-3000:]
    header, *rows = usage.stdout.splitlines()
    assert header.startswith("DAG") and "PEAK MEMORY p50 / p95" in header
    near = next(row for row in rows if " near_limit " in row)
    assert re.search(
        rf"^{dag_id}\s+near_limit\s+docker-small\s+1\s+4\d\d MiB / 4\d\d MiB\s+512 MiB, 0.5 CPUs", near
    )
    assert "warning: used 9" in near and "use execution config 'docker-large'" in near
    assert "docker-medium" not in usage.stdout
    light = next(row for row in rows if " light " in row)
    assert re.search(rf"^{dag_id}\s+light\s+local\s+1\s+3\d\d MiB / 3\d\d MiB\s+no memory limit", light)
