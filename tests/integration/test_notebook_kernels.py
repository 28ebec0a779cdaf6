"""Jupyter kernels that run in containers: a real jupyter_client session starts a kernel from the
installed kernelspec; the code runs in the env's image as a non-root user, writes to a managed folder,
and no container outlives the kernel — after a shutdown, and after the client process is SIGKILLed."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import pytest

from dss_airflow.spec import KERNEL_LABEL
from tests.helpers import write_config

pytestmark = pytest.mark.docker

CONFIG = """
    defaults: {project: demo, code_env: nb, data_dir: data}
    base_images: {base: {image: BASE}}
    execution_configs:
      docker-small: {type: docker, base_image: base, resources: {memory: 1g, cpus: 1}}
      local-only: {type: local}
    code_envs:
      nb: {notebook: true}
      plain: {}
    managed_folders: {out: {path: out}}
    projects: {demo: {root: project}}
"""

PROBE = textwrap.dedent(
    """
    import os, sys, papermill, dss_recipe
    (dss_recipe.output_dir("out") / "from-kernel.txt").write_text("written in the container")
    print(sys.prefix, os.environ.get("DSS_CODE_ENV"), os.getuid())
    """
)


@pytest.fixture(scope="module")
def state(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("kernel-state")


@pytest.fixture(autouse=True)
def _module_state(_isolated_state: None, state: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every test (and the launchers it starts) reads the ledger the module's build wrote."""
    monkeypatch.setenv("DSS_AIRFLOW_STATE", str(state))


@pytest.fixture(scope="module")
def kernels(tmp_path_factory, base_image, docker_engine, state):
    """The config, the nb image built, and the kernelspecs installed under a private prefix."""
    from dss_airflow.config.loader import load_catalog
    from dss_airflow.images.service import ImageService
    from dss_airflow.notebook_kernels import install

    root = tmp_path_factory.mktemp("kernels")
    write_config(root, {"c.yaml": CONFIG.replace("BASE", base_image)})
    (root / "project" / "lib").mkdir(parents=True)
    catalog = load_catalog(root)
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("DSS_AIRFLOW_STATE", str(state))
        assert ImageService(catalog).build(envs=["nb"]).ok
    prefix = root / "jupyter-prefix"
    names = install(catalog, folders=["out"], prefix=str(prefix))
    return root, prefix, names


def running_kernels(docker_client: Any) -> list[Any]:
    return docker_client.containers.list(all=True, filters={"label": KERNEL_LABEL})


def wait_for_no_kernel(docker_client: Any, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while running_kernels(docker_client):
        assert time.monotonic() < deadline, [c.name for c in running_kernels(docker_client)]
        time.sleep(0.5)


def test_one_kernelspec_per_notebook_env_and_docker_config(kernels):
    root, prefix, names = kernels
    assert names == ["dss-demo-nb-docker-small"], "no local config, no env without notebook support"
    spec = (prefix / "share" / "jupyter" / "kernels" / names[0] / "kernel.json").read_text()
    assert "Python (nb) · docker-small" in spec and "dss_airflow.notebook_kernels" in spec


def test_a_kernel_runs_in_the_image_and_leaves_no_container(kernels, docker_client, monkeypatch):
    from jupyter_client.manager import start_new_kernel

    root, prefix, names = kernels
    monkeypatch.setenv("JUPYTER_PATH", str(prefix / "share" / "jupyter"))
    manager, client = start_new_kernel(kernel_name=names[0], startup_timeout=120)
    try:
        outputs: list[str] = []

        def collect(message: dict[str, Any]) -> None:
            if message["msg_type"] == "stream":
                outputs.append(message["content"]["text"])

        reply = client.execute_interactive(PROBE, timeout=120, output_hook=collect)
        assert reply["content"]["status"] == "ok", reply["content"]
        prefix_inside, env, uid = "".join(outputs).split()
        assert (prefix_inside, env) == ("/opt/dss/env", "nb") and int(uid) != 0
        assert (root / "data" / "out" / "from-kernel.txt").read_text() == "written in the container"
        (container,) = running_kernels(docker_client)
        bound = {b["HostIp"] for bindings in container.ports.values() for b in bindings or []}
        assert bound == {"127.0.0.1"}, "the kernel's ports are reachable from loopback only"
    finally:
        client.stop_channels()
        manager.shutdown_kernel(now=False)
    wait_for_no_kernel(docker_client)


CLIENT = """
import sys, time
from jupyter_client.manager import start_new_kernel
manager, client = start_new_kernel(kernel_name=sys.argv[1], startup_timeout=120)
client.execute_interactive("x = 1", timeout=120)
print("ready", flush=True)
time.sleep(600)
"""


def test_killing_the_client_process_leaves_no_container(kernels, docker_client):
    root, prefix, names = kernels
    env = {**os.environ, "JUPYTER_PATH": str(prefix / "share" / "jupyter")}
    client = subprocess.Popen(
        [sys.executable, "-c", CLIENT, names[0]],
        env=env,
        stdout=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        assert client.stdout is not None and client.stdout.readline().strip() == "ready"
        assert len(running_kernels(docker_client)) == 1
        os.kill(client.pid, signal.SIGKILL)  # the Jupyter process dies without shutting its kernel down
        client.wait(timeout=30)
        wait_for_no_kernel(docker_client)
    finally:
        if client.poll() is None:
            os.killpg(client.pid, signal.SIGKILL)
    assert Path(root).is_dir()
