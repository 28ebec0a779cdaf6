"""The bootstrapped base image on a real Docker engine: Python, user, content cache, pip through the proxy."""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from dss_airflow.errors import ImageBuildError
from dss_airflow.images.bootstrap import BootstrapRecipe, build_bootstrap_base_image

if TYPE_CHECKING:
    import docker

pytestmark = pytest.mark.docker

LOGGER = "dss_airflow.images.bootstrap"
PROXY_VARS = ("http_proxy", "https_proxy", "no_proxy", "HTTP_PROXY", "HTTPS_PROXY", "NO_PROXY")


def run_in(client: docker.DockerClient, image: str, command: list[str], **kwargs: object) -> str:
    """Run a container to completion and return its output; a non-zero exit fails with that output."""
    container = client.containers.run(image, command, detach=True, **kwargs)
    try:
        status = container.wait(timeout=600)["StatusCode"]
        output: str = container.logs(stdout=True, stderr=True).decode(errors="replace")
    finally:
        container.remove(force=True)
    assert status == 0, f"{command} exited {status}:\n{output}"
    return output


def test_python_311_with_ssl_and_venv(docker_client: docker.DockerClient, base_image: str) -> None:
    output = run_in(
        docker_client, base_image, ["python3", "-c", "import ssl, venv, sys; print(sys.version_info[:2])"]
    )
    assert output.strip() == "(3, 11)"


def test_runs_as_uid_1000_by_default(docker_client: docker.DockerClient, base_image: str) -> None:
    assert run_in(docker_client, base_image, ["id", "-u"]).strip() == "1000"
    assert run_in(docker_client, base_image, ["pwd"]).strip() == "/home/dss"


def test_labels_carry_the_recipe_hash(docker_client: docker.DockerClient, base_image: str) -> None:
    labels = docker_client.images.get(base_image).labels
    assert labels["dss_airflow.kind"] == "base"
    assert labels["dss_airflow.base_hash"] == BootstrapRecipe().content_hash()


def test_second_build_is_a_cache_hit(
    docker_client: docker.DockerClient, base_image: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger=LOGGER)
    image_id = build_bootstrap_base_image(base_image)
    assert image_id == docker_client.images.get(base_image).id
    messages = [r.getMessage() for r in caplog.records if r.name == LOGGER]
    assert any("cached" in m for m in messages), messages
    assert not any("bootstrapping" in m for m in messages), messages


def test_pip_trusts_the_host_ca_through_the_proxy(
    docker_client: docker.DockerClient, base_image: str
) -> None:
    env = {name: os.environ[name] for name in PROXY_VARS if name in os.environ}
    output = run_in(
        docker_client,
        base_image,
        ["sh", "-c", "python3 -m venv /tmp/v && /tmp/v/bin/pip download --no-deps -d /tmp/d six"],
        environment=env,
    )
    assert "Saved /tmp/d/six-" in output


def test_failed_build_keeps_the_previous_image(docker_client: docker.DockerClient, base_image: str) -> None:
    if os.geteuid() != 0:
        pytest.skip("bootstrapping needs root")
    tag = "dss-airflow-test-failed-bootstrap:keep"
    previous = docker_client.images.get(base_image)
    previous.tag("dss-airflow-test-failed-bootstrap", "keep")
    scratch_before = set(Path("/var/tmp").glob("dss-airflow-bootstrap-*/"))
    try:
        broken = BootstrapRecipe(packages=("python3", "dss-airflow-no-such-package"))
        with pytest.raises(ImageBuildError, match="debootstrap") as info:
            build_bootstrap_base_image(tag, broken)
        assert info.value.logs, "the error must carry the tail of debootstrap's output"
        assert docker_client.images.get(tag).id == previous.id
        assert not [t for i in docker_client.images.list() for t in i.tags if "bootstrap-tmp" in t]
        assert set(Path("/var/tmp").glob("dss-airflow-bootstrap-*/")) <= scratch_before
    finally:
        docker_client.images.remove(tag, noprune=True)
