"""The docker provider's DockerHook for a Docker daemon: its host, TLS and registry login.

Every Docker client of dss_airflow (runs, builds, base images, digests, pushes, transfers) comes from
:func:`docker_hook` (task runs: the hook the composed DockerOperator uses) or :func:`docker_client`, so
TLS, registry login and the translation of "cannot talk to that daemon" into
:class:`~dss_airflow.errors.DaemonUnreachableError` are the same everywhere.
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import TYPE_CHECKING, Any

from dss_airflow.errors import ConfigError, DaemonUnreachableError
from dss_airflow.leftovers import OWNER_LABEL, owner_token
from dss_airflow.settings import LOCAL_DOCKER_HOST

if TYPE_CHECKING:
    import docker
    import docker.tls
    from airflow.providers.docker.hooks.docker import DockerHook

    from dss_airflow.config.models import DockerExecutionConfig

DEFAULT_DOCKER_HOST = LOCAL_DOCKER_HOST
#: A short timeout for the first contact: an unreachable host fails in seconds, not after minutes.
PING_TIMEOUT_S = 10


def tls_paths(config: DockerExecutionConfig) -> dict[str, str]:
    """ca.pem, cert.pem and key.pem of the config's TLS directory (the docker CLI's DOCKER_CERT_PATH)."""
    if not config.tls_cert_dir:
        return {}
    directory = Path(config.tls_cert_dir).expanduser()
    paths = {"tls_ca_cert": "ca.pem", "tls_client_cert": "cert.pem", "tls_client_key": "key.pem"}
    missing = [name for name in paths.values() if not (directory / name).is_file()]
    if missing:
        raise ConfigError(
            f"TLS directory {directory} lacks {', '.join(missing)}",
            field="tls_cert_dir",
            fix="put ca.pem, cert.pem and key.pem there (as for DOCKER_CERT_PATH), or remove tls_cert_dir",
        )
    return {key: str(directory / name) for key, name in paths.items()}


@functools.cache
def _own_ca_tls_config() -> type[docker.tls.TLSConfig]:
    from docker.tls import TLSConfig

    class OwnCATLSConfig(TLSConfig):  # type: ignore[misc]  # docker ships no types
        def configure_client(self, client: Any) -> None:
            super().configure_client(client)
            client.trust_env = False  # see tls_config

    return OwnCATLSConfig


def tls_config(config: DockerExecutionConfig) -> Any:
    """A TLSConfig of the config's TLS directory (False without one) that verifies against its ca.pem.

    requests lets ``$REQUESTS_CA_BUNDLE``/``$CURL_CA_BUNDLE`` replace a session's CA (psf/requests#3829),
    which makes every TLS daemon "unable to get local issuer certificate" on a worker that sets them for
    a proxy; the client it configures therefore ignores the environment (it talks to one daemon only).
    """
    tls = tls_paths(config)
    if not tls:
        return False
    return _own_ca_tls_config()(
        ca_cert=tls["tls_ca_cert"],
        client_cert=(tls["tls_client_cert"], tls["tls_client_key"]),
        verify=True,
    )


def daemon_unreachable(
    config_name: str | None, host: str, exc: BaseException, *, tls_dir: str | None = None
) -> DaemonUnreachableError:
    """One translation of a failed contact (SSL, connection, Docker errors) into a short reason and a fix:
    the docker SDK's message nests urllib3's three deep, so the cause is looked up in it."""
    text = str(exc)
    lowered = text.lower()
    if "certificate" in lowered or "ssl" in lowered or "tls" in lowered:
        reason = (
            "TLS: the daemon's certificate is not signed by ca.pem"
            if "certificate_verify_failed" in lowered or "certificate verify failed" in lowered
            else f"TLS handshake failed ({text.splitlines()[-1][:200]})"
        )
        fix = (
            f"check the certificates in {tls_dir}: ca.pem must be the CA that signed the daemon's "
            "certificate (whose SAN names the host), cert.pem/key.pem a client certificate it trusts"
            if tls_dir
            else "the daemon speaks TLS: set tls_cert_dir to a directory with ca.pem, cert.pem and key.pem"
        )
        return DaemonUnreachableError(config_name, host, reason, fix=fix)
    reachability = "check that dockerd listens there and that this worker can reach it (firewall, address)"
    for needles, reason, fix in (
        (("nameresolution", "name or service not known", "name resolution"), "host name does not resolve",
         "correct docker_host, or the worker's DNS"),
        (("connection refused",), "connection refused (no daemon listening there)", reachability),
        (("timed out",), f"no answer within {PING_TIMEOUT_S} s", reachability),
        (("no route to host",), "no route to host", reachability),
        (("no such file or directory",), "no socket there (is dockerd running?)", "start dockerd"),
        (("connect",), f"cannot connect ({text.splitlines()[-1][:200]})", reachability),
    ):  # fmt: skip
        if any(needle in lowered for needle in needles):
            return DaemonUnreachableError(config_name, host, reason, fix=fix)
    fix = "check the daemon's host, its TLS settings and the docker daemon log"
    return DaemonUnreachableError(
        config_name, host, text.splitlines()[-1][:300] if text else repr(exc), fix=fix
    )


def _target(docker_host: str, config: DockerExecutionConfig | None) -> tuple[str, Any, str | None]:
    """(host, TLSConfig or False, TLS directory for messages) of a daemon, from ``config`` when given."""
    if config is None:
        return docker_host, False, None
    tls = tls_config(config)
    return config.docker_host, tls, config.tls_cert_dir if tls else None


def _sdk_client(
    docker_host: str, tls: Any, config_name: str | None, tls_dir: str | None, *, version: str
) -> docker.APIClient:
    """The docker SDK's client, pinged within PING_TIMEOUT_S; its failure translated into a
    DaemonUnreachableError naming the reason."""
    import docker.errors
    import requests.exceptions

    failures = (requests.exceptions.RequestException, docker.errors.DockerException, OSError)
    client = None
    try:
        client = docker.APIClient(base_url=docker_host, version=version, tls=tls, timeout=PING_TIMEOUT_S)
        client.ping()
    except failures as exc:
        if client is not None:
            client.close()
        raise daemon_unreachable(config_name, docker_host, exc, tls_dir=tls_dir) from exc
    return client


def _ping(docker_host: str, tls: Any, config_name: str | None, tls_dir: str | None) -> None:
    """Why a daemon cannot be used: the hook's own failure only says "failed to connect", so a client at
    the oldest API version (no negotiation) pings it, and its error is translated."""
    from docker.constants import MINIMUM_DOCKER_API_VERSION

    _sdk_client(docker_host, tls, config_name, tls_dir, version=MINIMUM_DOCKER_API_VERSION).close()


def docker_hook(
    docker_host: str = DEFAULT_DOCKER_HOST,
    *,
    config: DockerExecutionConfig | None = None,
    config_name: str | None = None,
    conn_id: str | None = None,
    timeout: int = 120,
) -> DockerHook:
    """The provider's hook for a daemon (with ``config``: its host, TLS and registry login), its client
    already created, so the daemon answered: one API-version request and one ping, the same client then
    serving the whole task. A daemon that cannot be used is a DaemonUnreachableError naming the reason;
    first contact is bounded by PING_TIMEOUT_S, later requests by ``timeout``."""
    from airflow.providers.docker.hooks.docker import DockerHook
    from airflow.sdk.exceptions import AirflowException, AirflowNotFoundException

    docker_host, tls, tls_dir = _target(docker_host, config)
    if conn_id is None and config is not None and config.registry is not None:
        conn_id = config.registry.connection_id
    hook = DockerHook(
        docker_conn_id=conn_id, base_url=docker_host, version="auto", timeout=PING_TIMEOUT_S, tls=tls
    )
    try:
        hook.api_client.timeout = timeout
    except AirflowNotFoundException:  # a registry connection that is not defined: the caller says which
        raise
    except AirflowException as exc:
        _ping(docker_host, tls, config_name, tls_dir)  # raises with the reason
        raise daemon_unreachable(config_name, docker_host, exc, tls_dir=tls_dir) from exc  # it came back
    return hook


def docker_client(
    docker_host: str = DEFAULT_DOCKER_HOST,
    *,
    config: DockerExecutionConfig | None = None,
    config_name: str | None = None,
    conn_id: str | None = None,
    timeout: int = 120,
) -> docker.APIClient:
    """A low-level client for a daemon, pinged (same arguments and errors as :func:`docker_hook`). With a
    registry connection it is the hook's, logged in; without one the hook would add nothing but the
    Airflow import (~1 s for a CLI command), so it is the docker SDK's client with the same TLS and API
    version negotiation."""
    if conn_id is not None or (config is not None and config.registry is not None):
        hook = docker_hook(
            docker_host, config=config, config_name=config_name, conn_id=conn_id, timeout=timeout
        )
        return hook.api_client
    docker_host, tls, tls_dir = _target(docker_host, config)
    client = _sdk_client(docker_host, tls, config_name, tls_dir, version="auto")
    client.timeout = timeout
    return client


#: Label of the short-lived containers of image builds (builder, R lock, smoke test): swept when their
#: owner died (``dss-airflow gc``).
BUILD_CONTAINER_LABEL = "dss_airflow.kind=builder"


def run_to_end(
    api: docker.APIClient,
    image: str,
    command: list[str],
    *,
    labels: dict[str, str] | None = None,
    **create: Any,
) -> tuple[int, str]:
    """Run a short-lived build container to its end: (exit code, output). It carries the build label and
    this process as owner, so a sweep removes it if the process dies before its ``finally``."""
    key, _, value = BUILD_CONTAINER_LABEL.partition("=")
    container = api.create_container(
        image=image,
        command=command,
        labels={**(labels or {}), key: value, OWNER_LABEL: owner_token()},
        **create,
    )
    try:
        api.start(container["Id"])
        code = int(api.wait(container["Id"])["StatusCode"])
        return code, api.logs(container["Id"]).decode("utf-8", errors="replace")
    finally:
        api.remove_container(container["Id"], force=True)
