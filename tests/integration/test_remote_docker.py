"""Remote TLS Docker hosts (network namespaces, tests/hosts.py): images built here and pushed (host a, pulled
by digest) or copied (host b), recipes run with their files copied in and out (nothing of the worker
mounted), outputs promoted on the worker only after a success, a wrong CA refused before anything runs."""

from __future__ import annotations

import json
import time
import uuid
from typing import TYPE_CHECKING, Any

import pytest

from dss_airflow.cli import main
from dss_airflow.config.loader import load_catalog
from dss_airflow.errors import DaemonUnreachableError, ExecutionError
from dss_airflow.images.service import ImageService
from dss_airflow.operators.recipe import DSSContainerRecipeOperator
from tests.helpers import execute_in_background, fake_context, leftover_staging, make_project, write_config

if TYPE_CHECKING:
    from pathlib import Path

    from tests.hosts import NamespaceHost, NamespaceHosts

pytestmark = [pytest.mark.docker, pytest.mark.multihost]

RECIPES = {
    # Slow enough for the test to inspect the running container on the remote daemon.
    "recipes/copy.py": """
        import os, time, dss_recipe
        seed = dss_recipe.input_path("raw").joinpath("seed.txt").read_text()
        time.sleep(float(dss_recipe.params().get("sleep", 0)))
        out = dss_recipe.output_dir("out")
        (out / "report.txt").write_text(seed + " via " + os.environ["DSS_EXECUTION_CONFIG"])
        (out / "deep").mkdir()
        (out / "deep" / "n.txt").write_text("1")
        dss_recipe.set_result({"uid": os.getuid(), "seed": seed})
    """,
    "recipes/fails.py": """
        import dss_recipe
        (dss_recipe.output_dir("out") / "report.txt").write_text("half a report")
        raise ValueError("bad row 42")
    """,
}


def _config(tmp_path: Path, base_image: str, hosts: NamespaceHosts, *, tls_a: Path | None = None) -> Path:
    assert hosts.registry is not None
    a, b = hosts["a"], hosts["b"]
    write_config(
        tmp_path,
        {
            "c.yaml": f"""
                defaults: {{project: demo, code_env: six, data_dir: data}}
                base_images:
                  base: {{image: "{base_image}"}}
                execution_configs:
                  local:
                    type: docker
                    base_image: base
                  remote-a:
                    type: docker
                    base_image: base
                    docker_host: {a.docker_host}
                    tls_cert_dir: {tls_a or a.tls_dir}
                    registry: {{url: "{hosts.registry.url}", connection_id: dsst_registry}}
                    network_mode: none
                  remote-b:
                    type: docker
                    base_image: base
                    docker_host: {b.docker_host}
                    tls_cert_dir: {b.tls_dir}
                    network_mode: none
                code_envs:
                  six: {{packages: [six==1.16.0]}}
                managed_folders:
                  raw: {{path: raw}}
                  out: {{path: out}}
                projects:
                  demo: {{root: project}}
            """
        },
    )
    make_project(tmp_path, RECIPES)
    (tmp_path / "data" / "raw").mkdir(parents=True, exist_ok=True)
    (tmp_path / "data" / "raw" / "seed.txt").write_text("seed")
    (tmp_path / "data" / "out").mkdir(parents=True, exist_ok=True)
    (tmp_path / "data" / "out" / "report.txt").write_text("old")
    return tmp_path


@pytest.fixture
def registry_login(remote_hosts: NamespaceHosts, monkeypatch: pytest.MonkeyPatch) -> None:
    assert remote_hosts.registry is not None
    connection = {
        "conn_type": "docker",
        "host": remote_hosts.registry.url,
        "login": remote_hosts.registry.login,
        "password": remote_hosts.registry.password,
    }
    monkeypatch.setenv("AIRFLOW_CONN_DSST_REGISTRY", json.dumps(connection))


def _operator(config_dir: Path, recipe: str, config: str, **kwargs: Any) -> DSSContainerRecipeOperator:
    return DSSContainerRecipeOperator(
        task_id=f"{recipe}-{config}",
        recipe=f"recipes/{recipe}.py",
        execution_config=config,
        config_dir=str(config_dir),
        inputs=["raw"],
        outputs=["out"],
        **kwargs,
    )


def _inspect_while_running(host: NamespaceHost, dag_id: str, timeout: float = 60) -> dict[str, Any]:
    """``docker inspect`` of the task's container on the remote daemon, taken while it runs."""
    with host.client() as client:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = client.containers(filters={"label": f"dss_airflow.dag_id={dag_id}"})
            if found:
                return dict(client.inspect_container(found[0]["Id"]))
            time.sleep(0.1)
    raise AssertionError(f"no running container of {dag_id} on {host.docker_host}")


def test_images_built_here_run_on_remote_hosts_with_files_copied(
    tmp_path, base_image, remote_hosts, registry_login, monkeypatch, capsys
):
    # A worker behind a TLS proxy sets this; requests would let it replace the daemons' CA.
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", "/etc/ssl/certs/ca-certificates.crt")
    config_dir = _config(tmp_path, base_image, remote_hosts)
    assert main(["images", "build", "--all", "--quiet", "--config-dir", str(config_dir)]) == 0
    printed = capsys.readouterr()
    summary = printed.out.strip().splitlines()[-1]
    assert summary.endswith("switched 3, up to date 0, failed 0, unreachable 0"), summary
    assert summary.startswith(("built 1, reused 0", "built 0, reused 1")), "one image for the three configs"
    assert "pushing" in printed.err and "copying" in printed.err, "pushed for host a, copied to host b"
    service = ImageService(load_catalog(config_dir))
    pushed = service.ledger.pair("six", "remote-a").current
    copied = service.ledger.pair("six", "remote-b").current
    assert pushed is not None and copied is not None
    assert pushed.image.startswith(f"{remote_hosts.registry.url}/dss-code-envs@sha256:"), "a: by digest"
    assert copied.image == copied.tag, "b: copied under its content-hash tag"
    assert pushed.build_hash == copied.build_hash, "the same base identity (image id) on every host"
    a, b = remote_hosts["a"], remote_hosts["b"]
    with b.client() as client:
        assert client.inspect_image(copied.tag)["Id"] == copied.image_id, "same image id after the copy"
    with a.client() as client:
        assert not client.images(name=pushed.image), "host a gets the image only when a task pulls it"

    for host, config in ((a, "remote-a"), (b, "remote-b")):
        dag_id = f"dsst-{uuid.uuid4().hex[:8]}"
        (config_dir / "data" / "out" / "report.txt").write_text("old")
        operator = _operator(config_dir, "copy", config, recipe_params={"sleep": 2})
        thread, errors = execute_in_background(operator, fake_context(dag_id=dag_id))
        try:
            inspected = _inspect_while_running(host, dag_id)
            staged = (config_dir / "data" / "out" / "report.txt").read_text()
        finally:
            thread.join(timeout=120)
        assert not errors, errors
        assert inspected["Mounts"] == [] and not inspected["HostConfig"]["Binds"], "no worker path mounted"
        assert not inspected["HostConfig"].get("Mounts"), "no worker path mounted"
        assert inspected["HostConfig"]["NetworkMode"] == "none"
        assert staged == "old", "nothing promoted while the task runs"
        assert (config_dir / "data" / "out" / "report.txt").read_text() == f"seed via {config}"
        assert (config_dir / "data" / "out" / "deep" / "n.txt").read_text() == "1"
        assert leftover_staging(config_dir / "data") == []
        with host.client() as client:
            assert not client.containers(all=True, filters={"label": f"dss_airflow.dag_id={dag_id}"})
    with a.client() as client:
        assert client.images(name=pushed.image), "host a pulled the image by digest"

    (config_dir / "data" / "out" / "report.txt").write_text("old")
    with pytest.raises(ExecutionError, match="bad row 42"):
        _operator(config_dir, "fails", "remote-b").execute(fake_context(dag_id="dsst-fails"))
    assert (config_dir / "data" / "out" / "report.txt").read_text() == "old", "a failure promotes nothing"


def test_a_wrong_ca_is_refused_before_anything_runs(tmp_path, base_image, remote_hosts):
    from tests.hosts import TestCA

    other = TestCA(tmp_path / "other-ca", name="dsst-other-ca")
    wrong = other.client_dir(tmp_path / "wrong-tls")
    config_dir = _config(tmp_path, base_image, remote_hosts, tls_a=wrong)
    a = remote_hosts["a"]
    with a.client() as client:
        before = len(client.containers(all=True))
    with pytest.raises(DaemonUnreachableError) as caught:
        _operator(config_dir, "copy", "remote-a").execute(fake_context(dag_id="dsst-wrong-ca"))
    error = caught.value
    assert error.config == "remote-a" and error.host == a.docker_host
    assert "TLS" in error.reason and str(wrong) in str(error), str(error)
    with a.client() as client:
        assert len(client.containers(all=True)) == before, "no container was created"
    assert (config_dir / "data" / "out" / "report.txt").read_text() == "old"


def test_an_unreachable_host_is_a_clear_error(remote_hosts):
    from dss_airflow.config.models import DockerExecutionConfig
    from dss_airflow.hooks.docker import docker_client

    host = remote_hosts["a"]
    config = DockerExecutionConfig(
        type="docker",
        base_image="base",
        docker_host=f"tcp://{host.address}:18509",  # nothing listens there
        tls_cert_dir=str(host.tls_dir),
    )
    with pytest.raises(DaemonUnreachableError, match="connection refused.*dockerd listens there") as caught:
        docker_client(config=config, config_name="gone")
    assert caught.value.config == "gone" and caught.value.host.endswith(":18509")
