"""Shared fixtures for tests that need a real Docker engine and the dss_airflow base image.

``docker_engine`` makes an engine reachable (scripts/ensure-docker.sh starts one as root); when that is
impossible the tests fail under CI (CI=true) and skip elsewhere, always with the reason.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
from pathlib import Path
from typing import TYPE_CHECKING, NoReturn

import pytest

if TYPE_CHECKING:
    from collections.abc import Iterator

    import docker

    from tests.hosts import NamespaceHosts

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
    from dss_airflow.errors import BootstrapUnavailableError
    from dss_airflow.images.bootstrap import build_bootstrap_base_image, default_base_tag

    tag = default_base_tag()
    try:
        build_bootstrap_base_image(tag)
    except BootstrapUnavailableError as exc:  # not root / no debootstrap / no mirror: environment, not a bug
        _unavailable(f"cannot bootstrap the base image {tag}: {exc}")
    return tag


@pytest.fixture(scope="session")
def chromium() -> str:
    """Debian's Chromium (scripts/ensure-chromium.sh installs it as root), for Playwright to drive; like
    Docker, missing is a failure under CI and a skip elsewhere, with the reason."""
    script = REPO_ROOT / "scripts" / "ensure-chromium.sh"
    proc = subprocess.run(["bash", str(script)], capture_output=True, text=True, timeout=900, check=False)
    if proc.returncode != 0:
        reason = (proc.stderr.strip() or proc.stdout.strip()).splitlines()[-3:]
        if os.environ.get("CI", "").lower() in ("true", "1"):
            pytest.fail(f"Chromium is required in CI: {' | '.join(reason)}", pytrace=False)
        pytest.skip(f"no Chromium ({script.name} exited {proc.returncode}): {' | '.join(reason)}")
    return "/usr/bin/chromium"


@pytest.fixture(scope="session")
def registry(docker_engine: None, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    """A real image registry (Debian's docker-registry) on loopback, with htpasswd authentication."""
    import shutil
    import socket
    import time
    import urllib.error
    import urllib.request

    import bcrypt

    binary = shutil.which("docker-registry")
    if binary is None:
        _unavailable("docker-registry is not installed (scripts/ensure-docker.sh installs it as root)")
    root = tmp_path_factory.mktemp("registry")
    password = "test-only-" + os.urandom(6).hex()
    (root / "htpasswd").write_bytes(
        b"dss:" + bcrypt.hashpw(password.encode(), bcrypt.gensalt(rounds=5)) + b"\n"
    )
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    (root / "config.yml").write_text(
        f"""version: 0.1
storage:
  filesystem: {{rootdirectory: {root / "data"}}}
  delete: {{enabled: true}}
http:
  addr: 127.0.0.1:{port}
auth:
  htpasswd: {{realm: dss-test, path: {root / "htpasswd"}}}
"""
    )
    log = (root / "registry.log").open("wb")
    process = subprocess.Popen([binary, "serve", str(root / "config.yml")], stdout=log, stderr=log)
    url = f"127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while True:
        try:
            urllib.request.urlopen(f"http://{url}/v2/", timeout=1)
        except urllib.error.HTTPError as exc:
            if exc.code == 401:  # up, and asking for credentials as configured
                break
        except OSError:
            pass
        if time.monotonic() > deadline or process.poll() is not None:
            process.kill()
            _unavailable(f"docker-registry did not start: {(root / 'registry.log').read_text()[-2000:]}")
        time.sleep(0.2)
    try:
        yield {"url": url, "login": "dss", "password": password}
    finally:
        process.terminate()
        process.wait(timeout=10)
        log.close()


@pytest.fixture(scope="session")
def airflow_env(tmp_path_factory) -> dict[str, str]:
    """An isolated Airflow home with a migrated SQLite database, shared by the DAG runs of this session."""
    home = tmp_path_factory.mktemp("airflow-home")
    env = {
        **os.environ,
        "AIRFLOW_HOME": str(home),
        "AIRFLOW__CORE__DAGS_FOLDER": str(REPO_ROOT / "dags"),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "DSS_AIRFLOW_CONFIG": str(REPO_ROOT / "examples" / "config"),
        "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}",
    }
    env.pop("AIRFLOW__CORE__UNIT_TEST_MODE", None)
    subprocess.run(["airflow", "db", "migrate"], env=env, check=True, capture_output=True, timeout=600)
    return env


@pytest.fixture(scope="session")
def remote_hosts(docker_engine: None) -> Iterator[NamespaceHosts]:
    """Two remote TLS Docker hosts (network namespaces dsst-a, dsst-b) and a TLS registry, for the session;
    everything removed at the end, also after a failure (tests/hosts.py)."""
    from tests.hosts import namespace_hosts, require_root

    reason = require_root()
    if reason:
        _unavailable(f"no test hosts: {reason}")
    setup = subprocess.run(
        ["bash", str(REPO_ROOT / "scripts" / "ensure-test-hosts.sh")], capture_output=True, text=True
    )
    if setup.returncode != 0:
        _unavailable(f"no test hosts: {setup.stderr.strip()[-500:]}")
    with contextlib.ExitStack() as stack:
        try:
            hosts = stack.enter_context(namespace_hosts(("a", "b")))
        except RuntimeError as exc:
            _unavailable(f"cannot start the test hosts: {exc}")
        yield hosts
