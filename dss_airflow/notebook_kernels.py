"""Notebook kernels in containers: the Jupyter server on the host, each kernel in its code env's image on
a docker execution config (DSS's "kernel running in a container"), so kernels do not compete with the
server for CPU and memory and a user picks the container per notebook.

``dss-airflow notebook kernels install`` writes one kernelspec per (code env with notebook support x local
docker execution config the project may use), e.g. "Python (pandas) · docker-small", and for an env with
R packages an R one too ("R (stats) · docker-small", IRkernel with dss_recipe.R attached). Its ``argv`` is
this module's launcher, which Jupyter starts with the connection file: the launcher resolves the env's
*current* image at that moment (a rebuilt image is used at the next kernel start), runs the kernel in a
container with the config's limits, as its non-root user, the project at ``/dss/project`` (``lib/`` on
the path) and ``--folder`` managed folders at ``/dss/folders/<name>`` as ``notebook serve`` does, and
publishes the five ZMQ ports on 127.0.0.1 only. It stays in the foreground: SIGINT interrupts the kernel,
SIGTERM or the kernel's shutdown removes the container, and when the Jupyter process that started it dies
(the launcher watches its parent) it removes the container too. A launcher killed with SIGKILL leaves
its container to the next launcher's sweep (owner label) or ``dss-airflow gc``.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import sys
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from dss_airflow.config.models import DockerExecutionConfig
from dss_airflow.config.resolve import require_notebook_support, resolve_execution
from dss_airflow.errors import DSSAirflowError
from dss_airflow.leftovers import OWNER_LABEL, owner_token, sweep_containers
from dss_airflow.notebook_server import (
    docker_config_of,
    hand_over,
    interactive_context,
    loopback_docker_arguments,
)
from dss_airflow.runtime.dss_notebook import r_kernel_argv, r_profile
from dss_airflow.spec import KERNEL_LABEL, LABEL_PREFIX, PROJECT_DIR, RUNTIME_DIR, MountSpec, code_env_spec
from dss_airflow.staging import write_private_file

if TYPE_CHECKING:
    from collections.abc import Iterable, Mapping

    from dss_airflow.config.catalog import Catalog
    from dss_airflow.config.models import CodeEnv
    from dss_airflow.config.resolve import ResolvedExecution
    from dss_airflow.spec import ContainerSpec, ImageRef

KERNEL_PREFIX = "dss-"
KERNEL_DIR = "/dss/kernel"
FOLDERS_DIR = "/dss/folders"
PORTS = ("shell_port", "iopub_port", "stdin_port", "control_port", "hb_port")
LANGUAGES = ("python", "R")
R_PROFILE = "dss_profile.R"
#: What a kernel container's labels say about it (``dss_airflow.<field>``, see spec.code_env_spec).
CONTAINER_FIELDS = ("code_env", "execution_config", "project")


# ------------------------------------------------------------------------------------------ pure
def kernel_name(project: str, code_env: str, config: str, language: str = "python") -> str:
    suffix = "-r" if language == "R" else ""
    return f"{KERNEL_PREFIX}{project}-{code_env}-{config}{suffix}".lower()


def kernel_languages(env: CodeEnv) -> list[str]:
    """Python always (ipykernel comes with notebook support); R when the env has R packages (IRkernel)."""
    return ["python", "R"] if env.r_packages_to_install else ["python"]


def kernel_targets(catalog: Catalog, project: str | None = None) -> list[ResolvedExecution]:
    """Every (code env with notebook support, local docker config) the project may use."""
    found = []
    for env_name, env in sorted(catalog.code_envs.items()):
        if not env.notebook:
            continue
        for config_name in sorted(catalog.execution_configs):
            try:
                resolved = resolve_execution(
                    catalog, project=project, execution_config=config_name, code_env=env_name
                )
                docker_config_of(resolved)
            except DSSAirflowError:  # not docker, not local, or not permitted to this project
                continue
            found.append(resolved)
    return found


def kernelspec(
    resolved: ResolvedExecution, config_dir: Path, folders: Iterable[str] = (), language: str = "python"
) -> dict[str, Any]:
    """The kernel.json of one target: the launcher, with what it resolves at start."""
    argv = [
        sys.executable, "-m", "dss_airflow.notebook_kernels", "launch",
        "--config-dir", str(config_dir), "--project", resolved.project_name,
        "--code-env", resolved.code_env_name, "--execution-config", resolved.execution_config_name,
        "--language", language,
        *(arg for folder in folders for arg in ("--folder", folder)),
        "{connection_file}",
    ]  # fmt: skip
    shown = "R" if language == "R" else "Python"
    return {
        "argv": argv,
        "display_name": f"{shown} ({resolved.code_env_name}) · {resolved.execution_config_name}",
        "language": language,
        "interrupt_mode": "signal",
        "metadata": {"dss_airflow": {"project": resolved.project_name, "code_env": resolved.code_env_name,
                                     "execution_config": resolved.execution_config_name}},
    }  # fmt: skip


def plan_kernel(
    resolved: ResolvedExecution,
    image: ImageRef,
    *,
    name: str,
    state_dir: Path,
    folders: Mapping[str, Path],
    owner: str,
    worker_uid: int,
    worker_gid: int,
    language: str = "python",
) -> ContainerSpec:
    """Pure: the kernel's container (ipykernel, or IRkernel with the R profile the launcher writes, on the
    container-side connection file), labelled with the launcher that owns it (``owner``, see
    leftovers.owner_token)."""
    mounts = (
        MountSpec(str(state_dir), KERNEL_DIR),
        MountSpec(str(resolved.project_root), PROJECT_DIR, read_only=False),
        *(
            MountSpec(str(path), f"{FOLDERS_DIR}/{folder}", read_only=False)
            for folder, path in folders.items()
        ),
    )
    env = {
        "PYTHONPATH": f"{RUNTIME_DIR}:{PROJECT_DIR}/lib",
        "DSS_CONTEXT": f"{KERNEL_DIR}/context.json",
        "HOME": "/tmp",
    }
    connection = f"{KERNEL_DIR}/connection.json"
    if language == "R":
        env["R_PROFILE_USER"] = f"{KERNEL_DIR}/{R_PROFILE}"
        command: tuple[str, ...] = tuple(r_kernel_argv(connection))
    else:
        command = (image.python, "-m", "ipykernel_launcher", "-f", connection)
    return code_env_spec(
        resolved,
        image,
        name=name,
        command=command,
        mounts=mounts,
        labels={KERNEL_LABEL: name, OWNER_LABEL: owner},
        env=env,
        workdir=PROJECT_DIR,
        host_result_file=state_dir / "result.json",  # a kernel writes no result; the field is unused
        worker_uid=worker_uid,
        worker_gid=worker_gid,
    )


def docker_arguments(
    spec: ContainerSpec, config: DockerExecutionConfig, connection: Mapping[str, Any]
) -> tuple[dict[str, Any], dict[str, Any]]:
    """(create_container, create_host_config) kwargs: the five ZMQ ports of the connection file, each
    published on loopback under its own number."""
    ports = [int(connection[key]) for key in PORTS]
    return loopback_docker_arguments(spec, config, {port: port for port in ports})


# ------------------------------------------------------------------------------------- kernelspecs
def kernels_dir(prefix: str | None = None) -> Path:
    """Where Jupyter looks for kernelspecs: ``PREFIX/share/jupyter/kernels``, else the user's data dir
    (``$JUPYTER_DATA_DIR``, else ``$XDG_DATA_HOME/jupyter``, as jupyter_core resolves it on Linux)."""
    if prefix:
        return Path(prefix) / "share" / "jupyter" / "kernels"
    data = os.environ.get("JUPYTER_DATA_DIR") or os.path.join(
        os.environ.get("XDG_DATA_HOME") or "~/.local/share", "jupyter"
    )
    return Path(data).expanduser() / "kernels"


def install(
    catalog: Catalog, *, project: str | None = None, folders: Iterable[str] = (), prefix: str | None = None
) -> list[str]:
    """Write (or refresh) the kernelspecs, each ``kernel.json`` replaced atomically; returns their names."""
    folder_names = list(dict.fromkeys(folders))
    for folder in folder_names:
        catalog.folder_path(folder)  # an unknown folder is an error now, not at kernel start
    names = []
    for resolved in kernel_targets(catalog, project):
        for language in kernel_languages(catalog.code_envs[resolved.code_env_name]):
            name = kernel_name(
                resolved.project_name, resolved.code_env_name, resolved.execution_config_name, language
            )
            directory = kernels_dir(prefix) / name
            directory.mkdir(parents=True, exist_ok=True)
            partial = directory / ".kernel.json.partial"
            spec = kernelspec(resolved, catalog.config_dir, folder_names, language)
            partial.write_text(json.dumps(spec, indent=1, ensure_ascii=False), encoding="utf-8")
            os.replace(partial, directory / "kernel.json")
            names.append(name)
    return names


def installed(prefix: str | None = None) -> dict[str, Path]:
    """dss_airflow's kernelspecs there: name -> directory."""
    root = kernels_dir(prefix)
    found = sorted(root.glob(f"{KERNEL_PREFIX}*/kernel.json")) if root.is_dir() else []
    return {path.parent.name: path.parent for path in found}


def running(catalog: Catalog) -> list[dict[str, str]]:
    """The kernel containers on the local daemons of the catalog's docker configs, whoever launched them:
    name, state, code env, execution config and project (from the labels every container gets)."""
    from dss_airflow.hooks.docker import docker_client

    hosts: dict[str, tuple[str, DockerExecutionConfig]] = {}  # one config per daemon, to connect with
    for name, config in sorted(catalog.execution_configs.items()):
        if isinstance(config, DockerExecutionConfig) and config.docker_host.startswith("unix://"):
            hosts.setdefault(config.docker_host, (name, config))
    found = []
    for host, (name, config) in sorted(hosts.items()):
        client = docker_client(config=config, config_name=name)
        try:
            containers = client.containers(all=True, filters={"label": [KERNEL_LABEL]})
        finally:
            client.close()
        for container in containers:
            labels = container.get("Labels") or {}
            found.append(
                {
                    "name": container["Names"][0].lstrip("/"),
                    "state": container["State"],
                    "status": container.get("Status", ""),
                    "docker_host": host,
                    **{key: labels.get(f"{LABEL_PREFIX}.{key}", "") for key in CONTAINER_FIELDS},
                }
            )
    return found


def remove(names: Iterable[str] = (), *, every: bool = False, prefix: str | None = None) -> list[str]:
    present = installed(prefix)
    chosen = sorted(present) if every else [name for name in names if name in present]
    for name in chosen:
        shutil.rmtree(present[name])
    return chosen


# ------------------------------------------------------------------------------------------ launch
def launch(args: argparse.Namespace) -> int:
    """Run the kernel's container until the kernel ends, its Jupyter dies, or it is told to stop."""
    from dss_airflow.config.loader import get_catalog
    from dss_airflow.hooks.docker import docker_client
    from dss_airflow.images.lookup import image_for

    parent = os.getppid()
    catalog = get_catalog(args.config_dir)
    resolved = resolve_execution(
        catalog, project=args.project, execution_config=args.execution_config, code_env=args.code_env
    )
    require_notebook_support(catalog, resolved.code_env_name, what="a containerized kernel")
    config = docker_config_of(resolved)
    folders = {name: catalog.folder_path(name) for name in args.folder}
    created = [path for path in folders.values() if not path.exists()]
    for path in created:  # a folder nothing wrote to yet is simply empty
        path.mkdir(parents=True)
    connection = json.loads(Path(args.connection_file).read_text(encoding="utf-8"))
    client = docker_client(config=config)
    sweep_containers(client, [KERNEL_LABEL])  # kernels whose launcher was SIGKILLed
    image = image_for(catalog, resolved)  # the current image now: a rebuild counts at the next start
    with tempfile.TemporaryDirectory(prefix="dss-kernel-") as state:
        state_dir = Path(state)
        spec = plan_kernel(
            resolved,
            image,
            name=f"dss-kernel-{os.getpid()}-{int(time.time())}",
            state_dir=state_dir,
            folders=folders,
            owner=owner_token(),
            worker_uid=os.getuid(),
            worker_gid=os.getgid(),
            language=args.language,
        )
        _write_private(state_dir, spec, connection, folders)
        hand_over(spec, created)
        create, host = docker_arguments(spec, config, connection)
        container = client.create_container(host_config=client.create_host_config(**host), **create)
        return _supervise(client, container["Id"], parent)


def _write_private(state_dir: Path, spec: ContainerSpec, connection: Mapping[str, Any], folders: Any) -> None:
    """The container-side connection file (listening on every interface of the container, which Docker
    publishes on loopback only; 0600, the key is a secret) and the interactive dss_recipe context."""
    inside = {**connection, "ip": "0.0.0.0", "transport": "tcp"}
    target = state_dir / "connection.json"
    write_private_file(target, json.dumps(inside).encode())
    (state_dir / "context.json").write_text(json.dumps(interactive_context(folders)), encoding="utf-8")
    (state_dir / R_PROFILE).write_text(r_profile(RUNTIME_DIR), encoding="utf-8")  # read by R kernels
    hand_over(spec, (state_dir, target, state_dir / "context.json", state_dir / R_PROFILE))


def _supervise(client: Any, container: str, parent: int) -> int:
    """Start the container and wait for it; every way out removes it."""
    stopping: list[int] = []

    def on_signal(signum: int, _frame: Any) -> None:
        if signum == signal.SIGINT:  # Jupyter's interrupt: the kernel's, not ours
            client.kill(container, signal="SIGINT")
        else:
            stopping.append(signum)

    for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, on_signal)
    try:
        client.start(container)
        while not stopping:
            if os.getppid() != parent:  # the Jupyter process that started us is gone
                break
            try:
                return int(client.wait(container, timeout=1)["StatusCode"])
            except Exception:  # noqa: BLE001 - the wait timed out (requests' ReadTimeout): poll again
                continue
        return 143
    finally:
        client.remove_container(container, force=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m dss_airflow.notebook_kernels")
    commands = parser.add_subparsers(dest="command", required=True)
    run = commands.add_parser("launch", help="started by Jupyter from a dss_airflow kernelspec")
    run.add_argument("--config-dir", required=True)
    run.add_argument("--project", required=True)
    run.add_argument("--code-env", required=True)
    run.add_argument("--execution-config", required=True)
    run.add_argument("--language", choices=LANGUAGES, default="python")
    run.add_argument("--folder", action="append", default=[])
    run.add_argument("connection_file")
    return launch(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
