"""``dss-airflow notebook serve|stop|list``: JupyterLab in a code env's container, on loopback, with a token.

As DSS runs notebook kernels in containers so that they do not compete with the server for CPU and memory,
``serve`` starts JupyterLab in the env's current image for a docker execution config, with that config's
limits, as its non-root user, ``HOME=/tmp``. JupyterLab's root is ``/dss``: the project (read-write, its
notebooks) at ``/dss/project`` and each ``--folder`` managed folder at ``/dss/folders/<name>``; the
project's ``lib/`` and the runtime are on ``PYTHONPATH``, and ``dss_recipe.input_path``/``output_dir``
name the mounted folders (writes go straight to them: an interactive session is not a staged run).

The token (``secrets.token_urlsafe(32)``) is written to a 0600 file of the server's state directory, mounted
read-only, and read by Jupyter through ``JUPYTER_TOKEN_FILE``: it is in no command line (``ps``), no
environment or label (``docker inspect``, the daemon's debug log), and Jupyter shows a token it did not
generate as ``token=...`` in its own log. Only the URL printed once to the user's terminal carries it.

The container spec is built by the same pure builder as task runs (:func:`~dss_airflow.spec.code_env_spec`:
the config's env, limits, non-root user, labels, the runtime mounted), mapped onto Docker arguments by the
docker backend's own mapping, and run through the docker provider's hook client.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import socket
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from dss_airflow.backends.docker import docker_operator_kwargs
from dss_airflow.config.models import DockerExecutionConfig
from dss_airflow.config.resolve import require_notebook_support, resolve_execution
from dss_airflow.errors import ConfigError, ExecutionError, UnknownNameError
from dss_airflow.spec import (
    LABEL_PREFIX,
    PROJECT_DIR,
    RUNTIME_DIR,
    ContainerSpec,
    ImageRef,
    MountSpec,
    code_env_spec,
)
from dss_airflow.staging import write_private_file

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable, Mapping
    from pathlib import Path

    import docker

    from dss_airflow.config.catalog import Catalog
    from dss_airflow.config.resolve import ResolvedExecution

CONTAINER_PORT = 8888
SERVER_LABEL = f"{LABEL_PREFIX}.notebook"
PORT_LABEL = f"{LABEL_PREFIX}.notebook_port"
JUPYTER_ROOT = "/dss"
FOLDERS_DIR = "/dss/folders"
#: In the container: the token file and the interactive dss_recipe context (read-only).
SERVER_DIR = "/dss/notebook-server"
STARTUP_TIMEOUT_S = 60.0
LOG_TAIL = 30
LOOPBACK = "127.0.0.1"


@dataclass(frozen=True)
class NotebookServer:
    """A planned server: its container, the docker config it runs on, the loopback port, its state."""

    spec: ContainerSpec
    config_name: str
    config: DockerExecutionConfig
    port: int
    state_dir: Path

    @property
    def name(self) -> str:
        return self.spec.name


# ------------------------------------------------------------------------------------------ pure
def server_name(project: str, code_env: str) -> str:
    """One server per (project, code env): names are already valid Docker names (NAME_PATTERN)."""
    return f"dss-notebook-{project}-{code_env}"


def docker_config_of(resolved: ResolvedExecution) -> DockerExecutionConfig:
    """Only docker configs on the local daemon can serve on this machine's loopback."""
    config = resolved.execution_config
    name = resolved.execution_config_name
    if not isinstance(config, DockerExecutionConfig):
        raise ConfigError(
            f"notebook servers run on docker execution configs; {name!r} is a {config.type} config",
            field="execution_config",
            value=name,
            fix="choose a docker execution config (kubernetes and local configs are not supported)",
        )
    if not config.docker_host.startswith("unix://"):
        raise ConfigError(
            "the server is published on the Docker daemon's loopback, which is not this machine's",
            field=f"execution_configs.{name}.docker_host",
            value=config.docker_host,
            fix="serve from a docker config on the local daemon (unix://), or run the CLI on that host",
        )
    network = config.network_mode or ""
    if network in ("host", "none") or network.startswith("container:"):
        raise ConfigError(
            "a notebook server needs a published port, which this network mode cannot give",
            field=f"execution_configs.{name}.network_mode",
            value=network,
            fix="use a config with the default bridge network (or a user-defined network)",
        )
    return config


def interactive_context(folders: Iterable[str]) -> dict[str, Any]:
    """What ``dss_recipe`` reads in served notebooks: each mounted folder as an input and an output."""
    paths = {name: f"{FOLDERS_DIR}/{name}" for name in folders}
    return {
        "recipe": "interactive notebook",
        "recipe_name": "interactive notebook",
        "language": "python",
        "inputs": paths,
        "outputs": paths,
        "params": {},
        "python_path": [f"{PROJECT_DIR}/lib"],
        "workdir": "/tmp",
        "result_file": "/tmp/dss-result.json",
    }


def plan_server(
    resolved: ResolvedExecution,
    image: ImageRef,
    *,
    port: int,
    folders: Mapping[str, Path],
    state_dir: Path,
    worker_uid: int,
    worker_gid: int,
) -> NotebookServer:
    """Pure: the server's container (no token in it: Jupyter reads the mounted token file)."""
    config = docker_config_of(resolved)
    name = server_name(resolved.project_name, resolved.code_env_name)
    env = {
        "PYTHONPATH": f"{RUNTIME_DIR}:{PROJECT_DIR}/lib",
        "JUPYTER_TOKEN_FILE": f"{SERVER_DIR}/token",
        "DSS_CONTEXT": f"{SERVER_DIR}/context.json",
    }
    mounts = (
        MountSpec(str(state_dir), SERVER_DIR),
        MountSpec(str(resolved.project_root), PROJECT_DIR, read_only=False),
        *(
            MountSpec(str(path), f"{FOLDERS_DIR}/{folder}", read_only=False)
            for folder, path in folders.items()
        ),
    )
    command = (
        image.python, "-m", "jupyterlab",
        "--ip=0.0.0.0", f"--port={CONTAINER_PORT}", "--no-browser",
        f"--ServerApp.root_dir={JUPYTER_ROOT}",
    )  # fmt: skip
    spec = code_env_spec(
        resolved,
        image,
        name=name,
        command=command,
        mounts=mounts,
        labels={SERVER_LABEL: name, PORT_LABEL: str(port)},
        env=env,
        workdir=PROJECT_DIR,
        host_result_file=state_dir / "result.json",  # a server writes no result; the field is unused
        worker_uid=worker_uid,
        worker_gid=worker_gid,
    )
    return NotebookServer(spec, resolved.execution_config_name, config, port, state_dir)


def docker_arguments(server: NotebookServer) -> tuple[dict[str, Any], dict[str, Any]]:
    """Pure: (``create_container`` kwargs, ``create_host_config`` kwargs) of the server, published on
    loopback only."""
    return loopback_docker_arguments(server.spec, server.config, {CONTAINER_PORT: server.port})


def loopback_docker_arguments(
    spec: ContainerSpec, config: DockerExecutionConfig, published: Mapping[int, int]
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Pure: the docker backend's mapping of a spec (mounts, memory, hard CPU limit, shm, runtime, GPUs,
    hardening) as ``create_container``/``create_host_config`` kwargs, each container port of
    ``published`` bound to its host port on 127.0.0.1 only (notebook servers and kernels)."""
    mapped = docker_operator_kwargs(spec, config)
    create = {
        "image": mapped["image"],
        "command": mapped["command"],
        "environment": mapped["environment"],
        "user": mapped["user"],
        "working_dir": mapped["working_dir"],
        "labels": mapped["labels"],
        "name": mapped["container_name"],
        "ports": list(published),
        "detach": True,
    }
    host = {
        "mounts": mapped["mounts"],
        "mem_limit": mapped["mem_limit"],
        "shm_size": mapped["shm_size"],
        "device_requests": mapped["device_requests"],
        "network_mode": mapped["network_mode"],
        "port_bindings": {inside: (LOOPBACK, outside) for inside, outside in published.items()},
        "cap_add": mapped["cap_add"],
        **mapped["host_config_extras"],  # init, CPU limit, runtime and the config's hardening
    }
    return create, host


def server_url(port: int, token: str | None = None) -> str:
    return f"http://{LOOPBACK}:{port}/lab" + (f"?token={token}" if token else "")


# ------------------------------------------------------------------------------------------ state
def servers_dir() -> Path:
    from dss_airflow.settings import state_dir

    return state_dir() / "notebook-servers"


def _write_private(server: NotebookServer, token: str, folders: Iterable[str]) -> None:
    """Token (0600) and interactive context in the server's state dir, owned by the container's user."""
    directory = server.state_dir
    shutil.rmtree(directory, ignore_errors=True)  # a stopped server's leftovers
    directory.mkdir(parents=True, mode=0o700)
    token_file = directory / "token"
    write_private_file(token_file, token.encode())
    (directory / "context.json").write_text(json.dumps(interactive_context(folders)), encoding="utf-8")
    labels = server.spec.labels
    record = {
        "name": server.name,
        "port": server.port,
        "execution_config": server.config_name,
        "code_env": labels[f"{LABEL_PREFIX}.code_env"],
        "project": labels[f"{LABEL_PREFIX}.project"],
    }
    (directory / "server.json").write_text(json.dumps(record), encoding="utf-8")
    hand_over(server.spec, (directory, token_file, directory / "context.json"))


def hand_over(spec: ContainerSpec, paths: Iterable[Path]) -> None:
    """As root, give files the container reads or writes to its non-root user (the spec's ``uid:gid``)."""
    if os.getuid() == 0 and spec.user:
        uid, _, gid = spec.user.partition(":")
        for path in paths:
            os.chown(path, int(uid), int(gid or uid))


def _records() -> dict[str, dict[str, Any]]:
    """The servers this state directory started: name -> {name, execution_config, port}."""
    found = {}
    for path in sorted(servers_dir().glob("*/server.json")):
        record = json.loads(path.read_text(encoding="utf-8"))
        found[record["name"]] = record
    return found


# ------------------------------------------------------------------------------------------ docker
def _client(config: DockerExecutionConfig) -> docker.APIClient:
    """The docker provider's hook client for the config's daemon (TLS, registry login)."""
    from dss_airflow.hooks.docker import docker_client

    return docker_client(config=config)


def _remove_stopped(client: docker.APIClient, name: str) -> None:
    """A running server of the same name is an error; an exited one is removed."""
    from docker.errors import NotFound

    try:
        state = client.inspect_container(name)["State"]
    except NotFound:
        return
    if state.get("Running"):
        raise ExecutionError(
            f"notebook server {name} is already running; open the URL printed when it started, or "
            f"`dss-airflow notebook stop {name}` and serve again"
        )
    client.remove_container(name, force=True)


def _ensure_image(client: docker.APIClient, image: str) -> None:
    from docker.errors import ImageNotFound

    try:
        client.inspect_image(image)
    except ImageNotFound:
        client.pull(image)


def _answers(port: int, token: str) -> bool:
    """True once Jupyter answers an authenticated status request (token in a header, not the URL)."""
    request = urllib.request.Request(
        f"http://{LOOPBACK}:{port}/api/status", headers={"Authorization": f"token {token}"}
    )
    try:
        with urllib.request.urlopen(request, timeout=2) as response:
            return bool(response.status == 200)
    except (urllib.error.URLError, OSError):
        return False


def _wait_until_ready(client: docker.APIClient, server: NotebookServer, token: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not _answers(server.port, token):
        state = client.inspect_container(server.name)["State"]
        if not state.get("Running"):
            raise ExecutionError(f"notebook server {server.name} exited with code {state.get('ExitCode')}")
        if time.monotonic() > deadline:
            raise ExecutionError(f"notebook server {server.name} did not answer within {timeout:.0f}s")
        time.sleep(0.5)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind((LOOPBACK, 0))
        port: int = probe.getsockname()[1]
        return port


def serve(
    catalog: Catalog,
    *,
    code_env: str,
    execution_config: str,
    project: str | None = None,
    port: int | None = None,
    folders: Iterable[str] = (),
    show_url: Callable[[str], None] = print,
    timeout: float = STARTUP_TIMEOUT_S,
) -> NotebookServer:
    """Start the server, wait until it answers, then show its URL (with the token) once."""
    from dss_airflow.images.lookup import image_for

    resolved = resolve_execution(
        catalog, project=project, execution_config=execution_config, code_env=code_env
    )
    require_notebook_support(catalog, resolved.code_env_name, what="`dss-airflow notebook serve`")
    docker_config_of(resolved)  # refused before any image lookup or Docker call
    folder_paths = {name: catalog.folder_path(name) for name in dict.fromkeys(folders)}
    for path in folder_paths.values():  # a folder nothing wrote to yet is simply empty
        path.mkdir(parents=True, exist_ok=True)
    image = image_for(catalog, resolved)
    name = server_name(resolved.project_name, resolved.code_env_name)
    server = plan_server(
        resolved,
        image,
        port=port or free_port(),
        folders=folder_paths,
        state_dir=servers_dir() / name,
        worker_uid=os.getuid(),
        worker_gid=os.getgid(),
    )
    client = _client(server.config)
    _remove_stopped(client, name)
    _ensure_image(client, image.image)
    token = secrets.token_urlsafe(32)
    _write_private(server, token, folder_paths)
    create, host = docker_arguments(server)
    try:
        container = client.create_container(host_config=client.create_host_config(**host), **create)
        client.start(container["Id"])
        _wait_until_ready(client, server, token, timeout)
    except BaseException as exc:
        logs = _logs_tail(client, name)
        _remove(client, name)
        if isinstance(exc, ExecutionError):
            raise ExecutionError(f"{exc}; its log ends with:\n{logs}", logs=logs.splitlines()) from None
        raise
    show_url(server_url(server.port, token))
    return server


def _logs_tail(client: docker.APIClient, name: str) -> str:
    from docker.errors import NotFound

    try:
        return bytes(client.logs(name, tail=LOG_TAIL)).decode("utf-8", "replace")
    except NotFound:
        return ""


def _remove(client: docker.APIClient, name: str) -> None:
    """Remove the container (if any) and the server's state, token included."""
    from docker.errors import NotFound

    with contextlib.suppress(NotFound):
        client.remove_container(name, force=True)
    shutil.rmtree(servers_dir() / name, ignore_errors=True)


def stop(catalog: Catalog, names: Iterable[str] = (), *, every: bool = False) -> list[str]:
    """Remove the named servers (or every one this state directory started); returns their names."""
    records = _records()
    chosen = list(records) if every else list(names)
    for name in chosen:
        if name not in records:
            raise UnknownNameError("notebook server", name, records, field="name")
    for name in chosen:
        config = catalog.lookup("execution_configs", records[name]["execution_config"])
        _remove(_client(config), name)
    return chosen


def list_servers(catalog: Catalog) -> list[dict[str, Any]]:
    """Each started server with its container's status and its URL (without the token)."""
    from docker.errors import NotFound

    listed = []
    for name, record in _records().items():
        config = catalog.lookup("execution_configs", record["execution_config"])
        try:
            status = str(_client(config).inspect_container(name)["State"]["Status"])
        except NotFound:
            status = "gone"
        listed.append({**record, "status": status, "url": server_url(record["port"])})
    return listed
