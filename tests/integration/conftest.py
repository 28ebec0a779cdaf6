"""Shared fixtures for tests that need a real Docker engine and the dss_airflow base image.

``docker_engine`` makes an engine reachable (scripts/ensure-docker.sh starts one as root); when that is
impossible the tests fail under CI (CI=true) and skip elsewhere, always with the reason.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path
from typing import TYPE_CHECKING, NoReturn

import pytest

if TYPE_CHECKING:
    from collections.abc import Iterator

    import docker

REPO_ROOT = Path(__file__).resolve().parents[2]
ENSURE_DOCKER = REPO_ROOT / "scripts" / "ensure-docker.sh"


def _unavailable(reason: str) -> NoReturn:
    """Fail in CI (a missing engine there is a broken pipeline), skip on developer machines."""
    if os.environ.get("CI", "").lower() in ("true", "1"):
        pytest.fail(f"Docker is required in CI: {reason}", pytrace=False)
    pytest.skip(reason)


@pytest.fixture(scope="session")
def docker_engine() -> None:
    """A reachable Docker engine (installed and started by scripts/ensure-docker.sh when run as root)."""
    try:
        proc = subprocess.run(
            ["bash", str(ENSURE_DOCKER)], capture_output=True, text=True, timeout=900, check=False
        )
    except subprocess.TimeoutExpired:
        _unavailable(f"{ENSURE_DOCKER.name} did not finish within 900s")
    if proc.returncode != 0:
        output = (proc.stderr.strip() or proc.stdout.strip()).splitlines()[-15:]
        _unavailable(
            f"no Docker engine ({ENSURE_DOCKER.name} exited {proc.returncode}): " + " | ".join(output)
        )


@pytest.fixture(scope="session")
def docker_client(docker_engine: None) -> Iterator[docker.DockerClient]:
    """A high-level docker SDK client for the session; closed at teardown."""
    import docker

    try:
        client = docker.from_env(timeout=600)
    except docker.errors.DockerException as exc:
        _unavailable(f"cannot connect to the Docker engine: {exc}")
    try:
        yield client
    finally:
        client.close()


@pytest.fixture(scope="session")
def base_image(docker_engine: None) -> str:
    """Tag of the air-gapped Debian base image, bootstrapped once and then reused from the content cache."""
    from dss_airflow.images.bootstrap import (
        BootstrapUnavailableError,
        build_bootstrap_base_image,
        default_base_tag,
    )

    tag = default_base_tag()
    try:
        build_bootstrap_base_image(tag)
    except BootstrapUnavailableError as exc:  # not root / no debootstrap / no mirror: environment, not a bug
        _unavailable(f"cannot bootstrap the base image {tag}: {exc}")
    return tag
