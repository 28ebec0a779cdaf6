"""The backend-neutral container spec, and the pure builder that makes one from a planned task run.

Every task kind becomes "a command in a code env's image, with folders mounted and a JSON result"; the
backends (local venv, Docker, Kubernetes pod, Spark on Kubernetes) only translate a :class:`ContainerSpec`.
Nothing here touches the filesystem, Docker or Kubernetes, so it is unit-tested as plain data.
"""

from __future__ import annotations

import dataclasses
import hashlib
import re
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any, Literal

from dss_airflow.config.models import (
    DockerExecutionConfig,
    ExecutionConfig,
    GpuRequest,
    KubernetesExecutionConfig,
)
from dss_airflow.config.quantities import docker_size_text, parse_k8s_quantity

if TYPE_CHECKING:
    from collections.abc import Mapping

    from dss_airflow.config.resolve import ResolvedExecution
    from dss_airflow.task_secrets import TaskSecrets

#: Fixed paths inside containers; the local backend uses host paths instead.
RUNTIME_DIR = "/opt/dss-airflow/runtime"
PROJECT_DIR = "/dss/project"
RUN_DIR = "/dss/run"
INPUTS_DIR = "/dss/in"
OUTPUTS_DIR = "/dss/out"
#: Where a container or pod finds the task's connections and variables (never a mount of the worker's).
SECRETS_DIR = "/dss/secrets"
SECRETS_FILE = "secrets.json"
#: The runner's last resource snapshot, in the run directory: what the worker reads when a run is killed.
USAGE_FILE = "usage.json"
#: Kubernetes: output folders are mounted here (staging and destinations inside), and the result goes to
#: the KubernetesPodOperator's XCom file, read by its sidecar.
POD_OUTPUTS_ROOT = "/dss/out-root"
POD_RESULT_FILE = "/airflow/xcom/return.json"
LABEL_PREFIX = "dss_airflow"
#: Containers of notebook kernels (dss_airflow.notebook_kernels), swept like task containers.
KERNEL_LABEL = f"{LABEL_PREFIX}.kernel"
HOST_RUNTIME_DIR = Path(__file__).resolve().parent / "runtime"

#: "container": worker paths bind-mounted (docker); "copy": the same paths, copied into the container
#: before it starts and the writable ones back after it exits (a docker daemon that cannot see the
#: worker's files); "host": worker paths as is (local); "pod": the refs already hold in-pod paths
#: (kubernetes), the runner promotes outputs itself.
Layout = Literal["container", "copy", "host", "pod"]


@dataclass(frozen=True)
class MountSpec:
    """A directory made visible to the task at ``target``: a host directory, or (``claim`` set) a
    directory ``source`` of a Kubernetes PersistentVolumeClaim ("" for its root)."""

    source: str
    target: str
    read_only: bool = True
    claim: str | None = None


@dataclass(frozen=True)
class ResourceSpec:
    """Limits, already normalised: bytes and nano-CPUs for Docker, quantities for Kubernetes."""

    memory_bytes: int | None = None
    nano_cpus: int | None = None
    shm_bytes: int | None = None
    runtime: str | None = None
    gpus: GpuRequest | None = None
    k8s_requests: Mapping[str, str] = field(default_factory=dict)
    k8s_limits: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class ImageRef:
    """The image a code env runs in, and the Python interpreter inside it."""

    image: str
    python: str = "python3"


@dataclass(frozen=True)
class InputRef:
    """``folder`` or ``folder/sub/path`` as written by the DAG author, with the folder as the task sees it."""

    name: str
    folder: str
    sub_path: PurePosixPath
    host_folder: Path


@dataclass(frozen=True)
class OutputRef:
    """Where an output is staged during the run and where it lands after a success."""

    name: str
    folder: str
    sub_path: PurePosixPath
    host_staging: Path
    host_destination: Path


@dataclass(frozen=True)
class Entrypoint:
    """What a task runs: a file of the project, or (``builtin``) a module of the runtime."""

    path: PurePosixPath
    language: str = "python"
    builtin: bool = False
    #: Spark on Kubernetes only: an application the cluster reads (``s3a://...``), run as is.
    uri: str | None = None


@dataclass(frozen=True)
class TaskRun:
    """One planned run of a task: what it runs, with which folders (paths as the task will see them)."""

    resolved: ResolvedExecution
    entrypoint: Entrypoint
    inputs: tuple[InputRef, ...]
    outputs: tuple[OutputRef, ...]
    params: Mapping[str, Any]
    run_dir: Path
    task_labels: Mapping[str, str]
    #: Extra environment of the task kind (e.g. the Spark settings ``dss_recipe.spark()`` reads).
    env: Mapping[str, str] = field(default_factory=dict)
    #: Makes this try's container, pod and staging names unique (a resumed run keeps its own).
    unique: str = "0"
    #: The declared connections and variables (dss_airflow.task_secrets), read from Airflow; None: none.
    secrets: TaskSecrets | None = None


@dataclass(frozen=True)
class ContainerSpec:
    """One task as a process: image (None for the local backend), command, env, mounts, user, limits, and
    what the runner needs: its context, the outputs it stages, where its JSON result appears."""

    name: str
    image: str | None
    command: tuple[str, ...]
    env: Mapping[str, str]
    workdir: str
    user: str | None
    mounts: tuple[MountSpec, ...]
    resources: ResourceSpec
    labels: Mapping[str, str]
    #: Where the JSON result appears on the worker once the task has run (in the pod, for pods).
    host_result_file: Path
    #: The runner's context (paths as the task sees them); the worker writes it, pods get it in their env.
    context: Mapping[str, Any] = field(default_factory=dict)
    #: The run's private directory on the worker (None in a pod: an emptyDir there).
    run_dir: Path | None = None
    outputs: tuple[OutputRef, ...] = ()
    #: "copy" layout: what bind mounts would have shown, as archives instead. Every one is copied into
    #: the container before it starts; the writable ones (run directory, staging) back after it exits.
    copies: tuple[MountSpec, ...] = ()
    #: The task's connections and variables: never env, argv or labels. The backend delivers them as the
    #: file ``context["secrets_file"]`` names (a container's own filesystem, a pod's Secret volume) ...
    secrets: TaskSecrets | None = field(default=None, repr=False)
    #: ... or, when set, the worker writes them there (0600, in the run directory: local runs).
    host_secrets_file: Path | None = None


def container_name(labels: Mapping[str, str], unique: str) -> str:
    """A readable, valid and unique container name (Docker: [a-zA-Z0-9][a-zA-Z0-9_.-]*)."""
    readable = "-".join(labels.get(f"{LABEL_PREFIX}.{key}", "") for key in ("dag_id", "task_id"))
    readable = re.sub(r"[^a-zA-Z0-9_.-]+", "-", readable).strip("-.")[:80] or "task"
    digest = hashlib.sha256("\0".join(f"{k}={v}" for k, v in sorted(labels.items())).encode()).hexdigest()
    return f"dss-{readable}-{digest[:8]}-{unique}"


def resources_of(config: ExecutionConfig) -> ResourceSpec:
    if isinstance(config, DockerExecutionConfig):
        cpus = config.resources.cpus
        return ResourceSpec(
            memory_bytes=config.resources.memory,
            nano_cpus=int(cpus * 1_000_000_000) if cpus else None,
            shm_bytes=config.resources.shm_size,
            runtime=config.runtime,
            gpus=config.gpus,
        )
    if isinstance(config, KubernetesExecutionConfig):
        for quantity in (*config.resources.requests.values(), *config.resources.limits.values()):
            parse_k8s_quantity(quantity)  # validated at load; re-checked for hand-built configs
        return ResourceSpec(
            k8s_requests=dict(config.resources.requests), k8s_limits=dict(config.resources.limits)
        )
    return ResourceSpec()


def user_of(config: ExecutionConfig, worker_uid: int, worker_gid: int) -> str | None:
    """Never root: a non-root worker runs containers as itself (files stay its own), root as the config's."""
    if isinstance(config, DockerExecutionConfig):
        return f"{worker_uid}:{worker_gid}" if worker_uid != 0 else config.user
    if isinstance(config, KubernetesExecutionConfig):
        return str(config.run_as_user)
    return None


def user_ids(user: str) -> tuple[int, int]:
    """``uid[:gid]`` (a spec's ``user``) as numbers; the gid defaults to the uid."""
    uid, _, gid = user.partition(":")
    return int(uid), int(gid or uid)


def code_env_spec(
    resolved: ResolvedExecution,
    image: ImageRef,
    *,
    name: str,
    command: tuple[str, ...],
    mounts: tuple[MountSpec, ...],
    labels: Mapping[str, str],
    env: Mapping[str, str],
    workdir: str,
    host_result_file: Path,
    worker_uid: int = 1000,
    worker_gid: int = 1000,
) -> ContainerSpec:
    """Pure: a process in the code env's image on the resolved config, with what every such process gets
    (the config's env, our identification variables and labels, its limits, a non-root user, the
    runtime mounted read-only). Task runs and notebook servers are both built through here."""
    config = resolved.execution_config
    return ContainerSpec(
        name=name,
        image=image.image,
        command=command,
        env={**_base_env(resolved), **_container_env(image), **env},
        workdir=workdir,
        user=user_of(config, worker_uid, worker_gid),
        mounts=(MountSpec(str(HOST_RUNTIME_DIR), RUNTIME_DIR), *mounts),
        resources=resources_of(config),
        labels={**_base_labels(resolved), **labels},
        host_result_file=host_result_file,
    )


def describe_spec(spec: ContainerSpec) -> dict[str, Any]:
    """What a spec runs, for people (the task's rendered ``resolved_execution``): image, command, the
    *names* of its environment (values may be credentials: never shown), mounts, user and limits."""
    described: dict[str, Any] = {
        "image": spec.image or "none: the code env's virtualenv on the worker",
        "command": list(spec.command),
        "workdir": spec.workdir,
        "user": spec.user or "the worker's own",
        "env_names": sorted(spec.env),
        "mounts": [_mount_text(mount) for mount in spec.mounts],
        "limits": _limits_text(spec.resources) or "none",
    }
    if spec.copies:  # the "copy" layout: nothing of the worker is mounted
        described["copied_into_the_container"] = [_mount_text(copy) for copy in spec.copies]
    return described


def _mount_text(mount: MountSpec) -> str:
    source = f"pvc {mount.claim}:/{mount.source}" if mount.claim else mount.source
    return f"{source} -> {mount.target} ({'ro' if mount.read_only else 'rw'})"


def _limits_text(resources: ResourceSpec) -> dict[str, Any]:
    limits: dict[str, Any] = {}
    if resources.memory_bytes:
        limits["memory"] = docker_size_text(resources.memory_bytes)
    if resources.nano_cpus:
        limits["cpus"] = resources.nano_cpus / 1_000_000_000
    if resources.shm_bytes:
        limits["shm_size"] = docker_size_text(resources.shm_bytes)
    if resources.runtime:
        limits["runtime"] = resources.runtime
    if resources.gpus:
        limits["gpus"] = resources.gpus.model_dump(exclude_none=True)
    if resources.k8s_requests:
        limits["requests"] = dict(resources.k8s_requests)
    if resources.k8s_limits:
        limits["limits"] = dict(resources.k8s_limits)
    return limits


def _base_env(resolved: ResolvedExecution) -> dict[str, str]:
    return {
        **resolved.execution_config.env,
        "PYTHONUNBUFFERED": "1",
        "PYTHONDONTWRITEBYTECODE": "1",
        "DSS_EXECUTION_CONFIG": resolved.execution_config_name,
        "DSS_CODE_ENV": resolved.code_env_name,
        "DSS_PROJECT": resolved.project_name,
    }


def _container_env(image: ImageRef) -> dict[str, str]:
    return {"HOME": "/tmp", "DSS_CONTAINER_EXEC": "1", "DSS_IMAGE": image.image}


def _base_labels(resolved: ResolvedExecution) -> dict[str, str]:
    return {
        f"{LABEL_PREFIX}.execution_config": resolved.execution_config_name,
        f"{LABEL_PREFIX}.code_env": resolved.code_env_name,
        f"{LABEL_PREFIX}.project": resolved.project_name,
    }


def build_context(run: TaskRun, layout: Layout) -> dict[str, Any]:
    """The JSON the runner reads: paths as the task will see them."""
    in_container = layout in ("container", "copy")
    on_host = layout == "host"
    project = PurePosixPath(run.resolved.project_root) if on_host else PurePosixPath(PROJECT_DIR)
    run_dir = PurePosixPath(run.run_dir) if on_host else PurePosixPath(RUN_DIR)
    runtime = PurePosixPath(HOST_RUNTIME_DIR) if on_host else PurePosixPath(RUNTIME_DIR)
    inputs = {
        ref.name: str(
            (PurePosixPath(INPUTS_DIR) / ref.folder if in_container else PurePosixPath(ref.host_folder))
            / ref.sub_path
        )
        for ref in run.inputs
    }
    outputs = {
        ref.name: str(
            PurePosixPath(OUTPUTS_DIR) / ref.name if in_container else PurePosixPath(ref.host_staging)
        )
        for ref in run.outputs
    }
    entry = run.entrypoint
    context: dict[str, Any] = {
        "recipe": entry.uri or str((runtime if entry.builtin else project) / entry.path),
        "recipe_name": entry.uri or str(entry.path),
        "language": entry.language,
        "inputs": inputs,
        "outputs": outputs,
        "params": dict(run.params),
        "python_path": [str(project / "lib")],
        "workdir": str(run_dir / "cwd"),
        "result_file": str(run_dir / "result.json"),
        # A container's own cgroup is its engine's accounting; a local run's cgroup is the worker's.
        "meter": "process" if on_host else "cgroup",
        "usage_file": str(run_dir / USAGE_FILE),
    }
    if layout == "pod":  # the worker never sees a pod's run directory: no snapshot to read there
        context["result_file"] = POD_RESULT_FILE
        del context["usage_file"]
        context["promote"] = [[str(ref.host_staging), str(ref.host_destination)] for ref in run.outputs]
    if run.secrets is not None:  # the path only: the values never enter the context
        context["secrets_file"] = str(secrets_file(run, layout))
    return context


def secrets_file(run: TaskRun, layout: Layout) -> PurePosixPath:
    """Where the task reads its secrets: in the run directory for local runs (the worker writes it there),
    else in ``SECRETS_DIR``, which no mount of the worker's covers."""
    if layout == "host":
        return PurePosixPath(run.run_dir) / SECRETS_FILE
    return PurePosixPath(SECRETS_DIR) / SECRETS_FILE


def build_spec(
    run: TaskRun,
    *,
    layout: Layout,
    image: ImageRef | None,
    local_python: str | None = None,
    worker_uid: int = 1000,
    worker_gid: int = 1000,
) -> ContainerSpec:
    """Pure: a planned run → the spec a backend executes. ``layout`` says which paths the task sees."""
    resolved = run.resolved
    labels = {**run.task_labels, **_base_labels(resolved)}
    name = container_name(labels, run.unique)
    context = build_context(run, layout)
    if layout == "host":
        if local_python is None:
            raise ValueError("a host layout needs the code env's python")
        return ContainerSpec(
            name=name,
            image=None,
            command=(local_python, str(HOST_RUNTIME_DIR / "runner.py"), str(run.run_dir / "context.json")),
            env={**_base_env(resolved), **run.env},
            workdir=str(run.run_dir / "cwd"),
            user=None,
            mounts=(),
            resources=resources_of(resolved.execution_config),
            labels=labels,
            host_result_file=run.run_dir / "result.json",
            context=context,
            run_dir=run.run_dir,
            outputs=run.outputs,
            secrets=run.secrets,
            host_secrets_file=Path(context["secrets_file"]) if run.secrets is not None else None,
        )
    if image is None:
        raise ValueError(f"a {layout} layout needs an image")
    if layout == "pod":
        # Volumes come from the kubernetes backend (PVCs); the context travels in DSS_CONTEXT_JSON.
        mounts: tuple[MountSpec, ...] = ()
        argument, result_file, run_dir = "-", Path(POD_RESULT_FILE), None
    else:
        mounts = _container_mounts(run)
        argument, result_file, run_dir = f"{RUN_DIR}/context.json", run.run_dir / "result.json", run.run_dir
    spec = code_env_spec(
        resolved,
        image,
        name=name,
        command=(image.python, f"{RUNTIME_DIR}/runner.py", argument),
        mounts=mounts,
        labels=labels,
        env=run.env,
        workdir=f"{RUN_DIR}/cwd",
        host_result_file=result_file,
        worker_uid=worker_uid,
        worker_gid=worker_gid,
    )
    if layout == "pod":  # the runtime is baked into code-env images: nothing to mount from the worker
        spec = dataclasses.replace(spec, mounts=())
    if layout == "copy":  # as for pods, the image's own runtime; the rest travels as archives
        spec = dataclasses.replace(spec, mounts=(), copies=mounts)
    return dataclasses.replace(
        spec, context=context, run_dir=run_dir, outputs=run.outputs, secrets=run.secrets
    )


def _container_mounts(run: TaskRun) -> tuple[MountSpec, ...]:
    """Project read-only, the run directory, each input folder once (read-only), each output's staging."""
    mounts = [
        MountSpec(str(run.resolved.project_root), PROJECT_DIR),
        MountSpec(str(run.run_dir), RUN_DIR, read_only=False),
    ]
    input_folders: dict[str, Path] = {}
    for ref in run.inputs:
        input_folders.setdefault(ref.folder, ref.host_folder)
    mounts += [MountSpec(str(path), f"{INPUTS_DIR}/{name}") for name, path in input_folders.items()]
    mounts += [
        MountSpec(str(ref.host_staging), f"{OUTPUTS_DIR}/{ref.name}", read_only=False) for ref in run.outputs
    ]
    return tuple(mounts)
