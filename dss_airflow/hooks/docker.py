"""The docker provider's DockerHook for an execution config's daemon: its host, TLS and registry login."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from dss_airflow.errors import ConfigError, DaemonUnreachableError

if TYPE_CHECKING:
    import docker

    from dss_airflow.config.models import DockerExecutionConfig

DEFAULT_DOCKER_HOST = "unix:///var/run/docker.sock"
#: Seconds a remote daemon gets to answer before it is reported unreachable (builds get the full timeout).
PROBE_TIMEOUT_S = 10


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
    config_name: str | None = None,
    conn_id: str | None = None,
    timeout: int = 120,
) -> docker.APIClient:
    """The provider hook's low-level client for a daemon (with ``config``: its TLS and registry login).

    A daemon that does not answer raises :class:`DaemonUnreachableError` with the reason (the hook itself
    only logs it); a remote one is probed with a short timeout first, so a dead host costs seconds, not
    the build timeout."""
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
    if not docker_host.startswith("unix://"):
        _probe(docker_host, kwargs.get("tls"), config_name)
    hook = DockerHook(docker_conn_id=conn_id, base_url=docker_host, version="auto", timeout=timeout, **kwargs)
    try:
        return hook.api_client
    except Exception as exc:  # the hook turns every connection failure into a bare AirflowException
        if type(exc).__name__ != "AirflowException":
            raise
        _probe(docker_host, kwargs.get("tls"), config_name)
        raise DaemonUnreachableError(docker_host, str(exc), config=config_name) from exc


def _probe(docker_host: str, tls: Any, config_name: str | None) -> None:
    """Ask the daemon its version with a short timeout; raise why it does not answer."""
    import docker
    import requests

    try:
        docker.APIClient(
            base_url=docker_host, version="auto", tls=tls or False, timeout=PROBE_TIMEOUT_S
        ).close()
    except (docker.errors.DockerException, requests.exceptions.RequestException, OSError) as exc:
        reason, fix = unreachable_reason(exc)
        raise DaemonUnreachableError(docker_host, reason, config=config_name, fix=fix) from exc


def unreachable_reason(exc: BaseException) -> tuple[str, str | None]:
    """(short reason, fix) for a failed connection: the docker SDK's message nests urllib3's three deep."""
    text = str(exc)
    if "CERTIFICATE_VERIFY_FAILED" in text or "certificate verify failed" in text:
        return "TLS: the daemon's certificate is not signed by ca.pem", (
            "put the CA that signed the daemon's certificate in tls_cert_dir/ca.pem"
        )
    if "SSL" in text or "TLS" in text or "tlsv1 alert" in text:
        return "TLS handshake refused", "check cert.pem/key.pem in tls_cert_dir (the daemon must trust them)"
    for needle, reason in (
        ("NameResolution", "host name does not resolve"),
        ("Name or service not known", "host name does not resolve"),
        ("Temporary failure in name resolution", "host name does not resolve"),
        ("Connection refused", "connection refused (no daemon listening there)"),
        ("timed out", f"no answer within {PROBE_TIMEOUT_S} s"),
        ("No such file or directory", "no socket there (is dockerd running?)"),
        ("No route to host", "no route to host"),
    ):
        if needle in text:
            return reason, None
    return text.splitlines()[-1][:300] if text else type(exc).__name__, None
