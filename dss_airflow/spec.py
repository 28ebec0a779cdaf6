"""The backend-neutral container spec, and the pure function that builds one for a recipe.

Every task kind becomes "a command in a code env's image, with folders mounted and a JSON result"; the
backends (local venv, Docker, Kubernetes) only translate a :class:`ContainerSpec`. Nothing here touches the
filesystem, Docker or Kubernetes, so it is unit-tested as plain data.
"""

from __future__ import annotations

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
from dss_airflow.config.quantities import parse_k8s_quantity

if TYPE_CHECKING:
    from collections.abc import Mapping

    from dss_airflow.config.resolve import ResolvedExecution

#: Fixed paths inside containers; the local backend uses host paths instead.
RUNTIME_DIR = "/opt/dss-airflow/runtime"
PROJECT_DIR = "/dss/project"
RUN_DIR = "/dss/run"
INPUTS_DIR = "/dss/in"
OUTPUTS_DIR = "/dss/out"
#: Kubernetes: output folders are mounted here (staging and destinations inside), and the result goes to
#: the KubernetesPodOperator's XCom file, read by its sidecar.
POD_OUTPUTS_ROOT = "/dss/out-root"
POD_RESULT_FILE = "/airflow/xcom/return.json"
LABEL_PREFIX = "dss_airflow"
HOST_RUNTIME_DIR = Path(__file__).resolve().parent / "runtime"

#: "container": worker paths bind-mounted (docker); "host": worker paths as is (local); "pod": the refs
#: already hold in-pod paths (kubernetes), the runner promotes outputs itself.
Layout = Literal["container", "host", "pod"]


@dataclass(frozen=True)
class MountSpec:
    """A host directory made visible to the task at ``target``."""

    source: str
    target: str
    read_only: bool = True


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
class ContainerSpec:
    """One task as a process: image (None for the local backend), command, env, mounts, user, limits."""

    name: str
    image: str | None
    command: tuple[str, ...]
    env: Mapping[str, str]
    workdir: str
    user: str | None
    mounts: tuple[MountSpec, ...]
    resources: ResourceSpec
    labels: Mapping[str, str]
    #: Where the JSON result appears on the worker once the task has run.
    host_result_file: Path


@dataclass(frozen=True)
class ImageRef:
    """The image a code env runs in, and the Python interpreter inside it."""

    image: str
    python: str = "python3"


@dataclass(frozen=True)
class InputRef:
    """``folder`` or ``folder/sub/path`` as written by the DAG author, resolved on the worker."""

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


#: What a task runs: (path, language, builtin) -- a project file, or a runtime module when builtin.
Entrypoint = tuple[PurePosixPath, str, bool]


@dataclass(frozen=True)
class RecipeRun:
    """Everything the worker decided about one recipe run (host side)."""

    resolved: ResolvedExecution
    recipe: PurePosixPath
    language: str
    inputs: tuple[InputRef, ...]
    outputs: tuple[OutputRef, ...]
    params: Mapping[str, Any]
    run_dir: Path
    task_labels: Mapping[str, str]
    #: True when ``recipe`` names a module of the runtime (model tasks), not a file of the project.
    builtin: bool = False


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


def build_recipe_context(run: RecipeRun, layout: Layout) -> dict[str, Any]:
    """The JSON the runner reads: paths as the recipe will see them."""
    in_container = layout == "container"
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
    context: dict[str, Any] = {
        "recipe": str((runtime if run.builtin else project) / run.recipe),
        "recipe_name": str(run.recipe),
        "language": run.language,
        "inputs": inputs,
        "outputs": outputs,
        "params": dict(run.params),
        "python_path": [str(project / "lib")],
        "workdir": str(run_dir / "cwd"),
        "result_file": str(run_dir / "result.json"),
    }
    if layout == "pod":
        context["result_file"] = POD_RESULT_FILE
        context["promote"] = [[str(ref.host_staging), str(ref.host_destination)] for ref in run.outputs]
    return context


def build_recipe_spec(
    run: RecipeRun,
    *,
    layout: Layout,
    image: ImageRef | None,
    local_python: str | None = None,
    worker_uid: int = 1000,
    worker_gid: int = 1000,
    unique: str = "0",
) -> ContainerSpec:
    """Pure: a recipe run → the spec a backend executes. ``layout`` says which paths the task sees."""
    resolved = run.resolved
    config = resolved.execution_config
    labels = {
        **run.task_labels,
        f"{LABEL_PREFIX}.execution_config": resolved.execution_config_name,
        f"{LABEL_PREFIX}.code_env": resolved.code_env_name,
        f"{LABEL_PREFIX}.project": resolved.project_name,
    }
    env = {
        **config.env,
        "PYTHONUNBUFFERED": "1",
        "PYTHONDONTWRITEBYTECODE": "1",
        "DSS_EXECUTION_CONFIG": resolved.execution_config_name,
        "DSS_CODE_ENV": resolved.code_env_name,
        "DSS_PROJECT": resolved.project_name,
    }
    context_file = run.run_dir / "context.json"
    result_file = run.run_dir / "result.json"
    if layout == "pod":
        # Volumes come from the kubernetes backend (PVCs); the context travels in DSS_CONTEXT_JSON.
        if image is None:
            raise ValueError("a pod layout needs an image")
        env.update({"HOME": "/tmp", "DSS_CONTAINER_EXEC": "1", "DSS_IMAGE": image.image})
        mounts: list[MountSpec] = []
        command = (image.python, f"{RUNTIME_DIR}/runner.py", "-")
        workdir = f"{RUN_DIR}/cwd"
        image_name: str | None = image.image
        result_file = Path(POD_RESULT_FILE)
    elif layout == "container":
        if image is None:
            raise ValueError("a container layout needs an image")
        env.update({"HOME": "/tmp", "DSS_CONTAINER_EXEC": "1", "DSS_IMAGE": image.image})
        mounts = [
            MountSpec(str(HOST_RUNTIME_DIR), RUNTIME_DIR),
            MountSpec(str(resolved.project_root), PROJECT_DIR),
            MountSpec(str(run.run_dir), RUN_DIR, read_only=False),
        ]
        seen_folders: set[str] = set()
        for ref in run.inputs:
            if ref.folder not in seen_folders:
                seen_folders.add(ref.folder)
                mounts.append(MountSpec(str(ref.host_folder), f"{INPUTS_DIR}/{ref.folder}"))
        mounts += [
            MountSpec(str(ref.host_staging), f"{OUTPUTS_DIR}/{ref.name}", read_only=False)
            for ref in run.outputs
        ]
        command = (image.python, f"{RUNTIME_DIR}/runner.py", f"{RUN_DIR}/context.json")
        workdir = f"{RUN_DIR}/cwd"
        image_name = image.image
    else:
        if local_python is None:
            raise ValueError("a host layout needs the code env's python")
        mounts = []
        command = (local_python, str(HOST_RUNTIME_DIR / "runner.py"), str(context_file))
        workdir = str(run.run_dir / "cwd")
        image_name = None
    return ContainerSpec(
        name=container_name(labels, unique),
        image=image_name,
        command=command,
        env=env,
        workdir=workdir,
        user=user_of(config, worker_uid, worker_gid),
        mounts=tuple(mounts),
        resources=resources_of(config),
        labels=labels,
        host_result_file=result_file,
    )
