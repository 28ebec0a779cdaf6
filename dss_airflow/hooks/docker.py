"""The docker provider's DockerHook for an execution config's daemon: its host, TLS and registry login."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from dss_airflow.errors import ConfigError

if TYPE_CHECKING:
    import docker

    from dss_airflow.config.models import DockerExecutionConfig

DEFAULT_DOCKER_HOST = "unix:///var/run/docker.sock"


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


def docker_client(
    docker_host: str = DEFAULT_DOCKER_HOST,
    *,
    config: DockerExecutionConfig | None = None,
    conn_id: str | None = None,
    timeout: int = 120,
) -> docker.APIClient:
    """The provider hook's low-level client for a daemon (with ``config``: its TLS and registry login)."""
    from airflow.providers.docker.hooks.docker import DockerHook

    kwargs: dict[str, Any] = {}
    if config is not None:
        tls = tls_paths(config)
        if tls:
            kwargs["tls"] = DockerHook.construct_tls_config(
                ca_cert=tls["tls_ca_cert"],
                client_cert=tls["tls_client_cert"],
                client_key=tls["tls_client_key"],
            )
        docker_host = config.docker_host
        if conn_id is None and config.registry is not None:
            conn_id = config.registry.connection_id
    hook = DockerHook(docker_conn_id=conn_id, base_url=docker_host, version="auto", timeout=timeout, **kwargs)
    return hook.api_client
