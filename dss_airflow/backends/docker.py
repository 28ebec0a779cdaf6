"""Docker backend: a :class:`ContainerSpec` run through the docker provider's DockerOperator.

We compose the provider's operator (built inside ``execute``) rather than talk to Docker ourselves, so its
log streaming, registry login and fixes come with each provider release. Two things it lacks are added
by a thin subclass: a *hard* CPU limit (``nano_cpus``; the provider's ``cpus`` is only relative shares) and
the Docker ``runtime`` (e.g. nvidia). Containers are labelled with the task instance, removed in every
case (``auto_remove="force"``, ``on_kill``), and leftovers of an earlier try of the same task instance
(a worker that died) are removed before a new one starts.

A daemon that does not see the worker's files (``shares_worker_filesystem``: false, the default for
tcp:// and ssh:// hosts) gets the "copy" layout: nothing of the worker is mounted; the project, the run
directory (context) and the inputs go into the created container before it starts, and the run directory
(result) and the staged outputs come back after it exits, before the provider removes it. The worker then
promotes as for any worker backend. The daemon is pinged when the run is prepared, so an unreachable host
or refused TLS fails before anything runs.
"""

from __future__ import annotations

import functools
import logging
import os
import tarfile
import tempfile
from collections import deque
from pathlib import Path
from typing import TYPE_CHECKING, Any

from dss_airflow.backends.base import WorkerBackend, execute_composed, usage_snapshot
from dss_airflow.config.models import DockerExecutionConfig
from dss_airflow.config.quantities import docker_size_text
from dss_airflow.errors import ExecutionError
from dss_airflow.hooks.docker import docker_hook
from dss_airflow.spec import LABEL_PREFIX, RUN_DIR, build_spec, user_ids
from dss_airflow.usage import Usage, larger_config, last_reading_text, out_of_memory_text

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping, Sequence

    from airflow.providers.docker.hooks.docker import DockerHook
    from airflow.providers.docker.operators.docker import DockerOperator
    from airflow.sdk import Context

    from dss_airflow.spec import ContainerSpec, MountSpec, TaskRun

log = logging.getLogger(__name__)

LOG_TAIL = 50
#: The labels a task's sweep filters on: every run and try of this DAG's task.
TASK_LABELS = (f"{LABEL_PREFIX}.dag_id", f"{LABEL_PREFIX}.task_id")


class _ProviderClient:
    """Wraps the provider's APIClient: every host config gets our extra keys, and with ``copies`` the
    worker's files go in before the container starts and the writable ones come back once it has exited
    (the provider calls ``wait`` before it removes the container). The task's secrets file
    (``secret_archive``) goes into the container's own filesystem before it starts: never on the worker's
    disk, gone when the container is removed."""

    def __init__(
        self,
        client: Any,
        extras: Mapping[str, Any],
        copies: Sequence[MountSpec] = (),
        on_exit: Callable[[Mapping[str, Any]], None] | None = None,
        secret_archive: bytes | None = None,
    ) -> None:
        self._client = client
        self._extras = dict(extras)
        self._copies = tuple(copies)
        self._on_exit = on_exit
        self._secret_archive = secret_archive

    def create_host_config(self, **kwargs: Any) -> Any:
        return self._client.create_host_config(**kwargs, **self._extras)

    def start(self, container: Any, *args: Any, **kwargs: Any) -> Any:
        if self._copies:
            copy_in(self._client, container, self._copies)
        if self._secret_archive is not None and not self._client.put_archive(
            _container_id(container), "/", self._secret_archive
        ):
            raise ExecutionError(
                f"putting the task's secrets into container {_container_id(container)} failed"
            )
        return self._client.start(container, *args, **kwargs)

    def wait(self, container: Any, *args: Any, **kwargs: Any) -> Any:
        result = self._client.wait(container, *args, **kwargs)
        if self._on_exit is not None and result.get("StatusCode") != 0:
            # Why it failed (OOMKilled...), read before the provider removes it; a success needs no call.
            try:
                self._on_exit(self._client.inspect_container(_container_id(container))["State"])
            except Exception:  # noqa: BLE001 - removed meanwhile: the exit code alone then tells
                self._on_exit({"ExitCode": result.get("StatusCode")})
        if self._copies:
            # The result file always (it holds the error of a failed run); outputs only after a success.
            succeeded = result.get("StatusCode") == 0
            copy_out(self._client, container, [c for c in self._copies if succeeded or c.target == RUN_DIR])
        return result

    def __getattr__(self, name: str) -> Any:
        return getattr(self._client, name)


def _container_id(container: Any) -> str:
    return str(container["Id"] if isinstance(container, dict) else container)


def copy_in(client: Any, container: Any, copies: Sequence[MountSpec]) -> None:
    """Every copy as one tar at ``/``, spooled through a temporary file (large inputs never sit in memory)."""
    from dss_airflow.archives import write_copies

    with tempfile.TemporaryFile(prefix="dss-copy-in-") as archive:
        write_copies(copies, archive)
        archive.seek(0)
        if not client.put_archive(_container_id(container), "/", archive):
            raise ExecutionError(f"copying the task's files into container {_container_id(container)} failed")


def copy_out(client: Any, container: Any, copies: Sequence[MountSpec]) -> None:
    """The writable copies (run directory, output staging) back into their worker directories."""
    import docker.errors

    from dss_airflow.archives import extract_stream

    for copy in copies:
        if copy.read_only:
            continue
        try:
            chunks, _ = client.get_archive(_container_id(container), copy.target)
            extract_stream(chunks, Path(copy.source))
        except (docker.errors.APIError, tarfile.TarError) as exc:
            raise ExecutionError(f"copying {copy.target} out of the container failed: {exc}") from exc


@functools.cache
def _operator_class() -> type[DockerOperator]:
    from airflow.providers.docker.operators.docker import DockerOperator

    class DSSDockerOperator(DockerOperator):
        """DockerOperator plus hard CPU limit, runtime and file copies; created by dss_airflow only."""

        def __init__(
            self,
            *,
            docker_hook: DockerHook,
            host_config_extras: Mapping[str, Any] | None = None,
            copies: Sequence[MountSpec] = (),
            secret_archive: bytes | None = None,
            **kwargs: Any,
        ) -> None:
            super().__init__(**kwargs)
            self.docker_hook = docker_hook
            self.host_config_extras = dict(host_config_extras or {})
            self.copies = tuple(copies)
            self.secret_archive = secret_archive
            self.exit_state: Mapping[str, Any] | None = None

        @property
        def hook(self) -> DockerHook:
            """The hook the backend made when it prepared the run (hooks.docker.docker_hook: the config's
            TLS, verified against its ca.pem whatever $REQUESTS_CA_BUNDLE says, and registry login), so
            the daemon is contacted once per task."""
            return self.docker_hook

        @property
        def cli(self) -> Any:
            return _ProviderClient(
                self.hook.api_client, self.host_config_extras, self.copies, self._exited, self.secret_archive
            )

        def _exited(self, state: Mapping[str, Any]) -> None:
            self.exit_state = state

    return DSSDockerOperator


def hardening(config: DockerExecutionConfig) -> dict[str, Any]:
    """Host-config keys of the config's ``security`` the provider has no argument for: every capability
    dropped, no-new-privileges, the pids limit (the capabilities given back go through its ``cap_add``)."""
    security = config.security
    return {
        "cap_drop": ["ALL"],
        "security_opt": ["no-new-privileges"] if security.no_new_privileges else None,
        "pids_limit": security.pids_limit,
    }


def docker_operator_kwargs(spec: ContainerSpec, config: DockerExecutionConfig) -> dict[str, Any]:
    """Pure mapping of a spec onto DockerOperator arguments (plus our host-config extras)."""
    from docker.types import DeviceRequest, Mount

    resources = spec.resources
    # docker-init as PID 1 forwards signals, so `docker stop` (on_kill) ends the task at once even
    # before the runner installs its SIGTERM handler, and reaps the recipe's zombie children.
    extras: dict[str, Any] = {"init": True, **hardening(config)}
    if resources.nano_cpus:
        extras["nano_cpus"] = resources.nano_cpus
    if resources.runtime:
        extras["runtime"] = resources.runtime
    device_requests = None
    if resources.gpus:
        gpus = resources.gpus
        device_requests = [
            DeviceRequest(
                driver=gpus.driver or "",
                count=0 if gpus.device_ids else (-1 if gpus.count == "all" else gpus.count),
                device_ids=gpus.device_ids or None,
                capabilities=[gpus.capabilities],
            )
        ]
    return {
        "image": spec.image,
        "command": list(spec.command),
        "environment": dict(spec.env),
        "user": spec.user,
        "working_dir": spec.workdir,
        "mounts": [Mount(m.target, m.source, type="bind", read_only=m.read_only) for m in spec.mounts],
        "labels": dict(spec.labels),
        "container_name": spec.name,
        "mem_limit": resources.memory_bytes,
        "shm_size": resources.shm_bytes,
        "device_requests": device_requests,
        "network_mode": config.network_mode,
        "cap_add": list(config.security.cap_add) or None,
        "docker_url": config.docker_host,
        "docker_conn_id": config.registry.connection_id if config.registry else None,
        "auto_remove": "force",
        "mount_tmp_dir": False,
        "do_xcom_push": False,
        "host_config_extras": extras,
        "copies": spec.copies,
        "secret_archive": secret_archive(spec),
    }


def secret_archive(spec: ContainerSpec) -> bytes | None:
    """The task's secrets file as a tar for ``put_archive``: readable by the container's user only."""
    if spec.secrets is None:
        return None
    from dss_airflow.archives import private_file_archive

    uid, gid = user_ids(spec.user or "0")
    return private_file_archive(spec.secrets.file_content(), spec.context["secrets_file"], uid, gid)


KILLED = "the task was killed (on_kill: marked failed or cleared in Airflow, or its worker stopping)"


def exit_cause(
    state: Mapping[str, Any] | None,
    killed: bool,
    config: DockerExecutionConfig,
    config_name: str,
    *,
    seen: Usage | None = None,
    larger: str | None = None,
) -> str | None:
    """The true sentence for why a container exited non-zero, when its state tells more than the code
    (the recipe's own error, in its result, tells the rest). Out of memory, it gives the runner's last
    reading before the kill (``seen``) and the next larger config the project may use (``larger``)."""
    if killed:
        return KILLED
    state = state or {}
    if state.get("OOMKilled"):
        limit = config.resources.memory
        reading = f"; {last_reading_text(seen)}" if seen is not None else ""
        if limit is None:
            return (
                "the recipe ran out of memory (no limit on execution config: the host's memory ran out"
                f"{reading})"
            )
        return out_of_memory_text(docker_size_text(limit), config_name, "resources.memory", larger, reading)
    code = state.get("ExitCode")
    if code == 137:
        return (
            "the container was killed from outside this task (SIGKILL: docker kill, or the host's OOM killer)"
        )
    if code == 143:
        return "the container was stopped from outside this task (SIGTERM: docker stop, or a daemon shutdown)"
    return None


class DockerBackend(WorkerBackend):
    """Runs one spec in a container on the config's daemon; the container is gone afterwards."""

    layout = "container"

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        config = self.resolved.execution_config
        assert isinstance(config, DockerExecutionConfig)
        self.config = config
        self._operator: DockerOperator | None = None
        self._hook: DockerHook | None = None

    def prepare(self, run: TaskRun) -> ContainerSpec:
        from dss_airflow.images.lookup import image_for

        # First, before anything runs: an unreachable daemon or refused TLS is a DaemonUnreachableError.
        self._hook = docker_hook(config=self.config, config_name=self.resolved.execution_config_name)
        image = self.options.pinned_image or image_for(self.catalog, self.resolved)
        return build_spec(
            run,
            layout="container" if self.config.shares_filesystem else "copy",
            image=image,
            worker_uid=os.getuid(),
            worker_gid=os.getgid(),
        )

    def describe(self, spec: ContainerSpec) -> dict[str, Any]:
        config = self.config
        return {
            "docker_host": config.docker_host,
            "shares_worker_filesystem": config.shares_filesystem,
            "registry": config.registry.url if config.registry else None,
            "container": spec.name,
            "network_mode": config.network_mode or "default",
            "security": {**hardening(config), "cap_add": list(config.security.cap_add)},
        }

    def execute(self, spec: ContainerSpec, context: Context) -> None:
        import requests
        import urllib3
        from airflow.providers.docker.exceptions import DockerContainerFailedException
        from docker.errors import APIError

        from dss_airflow.leftovers import OWNER_LABEL, owner_token, sweep_containers

        task_id = context["ti"].task_id
        kwargs = docker_operator_kwargs(spec, self.config)
        kwargs["labels"][OWNER_LABEL] = owner_token()  # what a sweep checks before removing it
        operator = _operator_class()(task_id=f"{task_id}.container", docker_hook=self._hook, **kwargs)
        self._operator = operator
        # Containers of this DAG's task that a killed try or a dead daemon left (one filtered call).
        task = [f"{key}={spec.labels[key]}" for key in TASK_LABELS if key in spec.labels]
        sweep_containers(operator.cli, task, current=spec.labels)
        self.log.info(
            "Running in Docker (%s): image %s, container %s", self.config.docker_host, spec.image, spec.name
        )
        try:
            execute_composed(operator, context)
        except DockerContainerFailedException as exc:
            logs = [str(line) for line in (exc.logs or [])]
            tail: deque[str] = deque(logs, maxlen=LOG_TAIL)
            state = getattr(operator, "exit_state", None) or {}
            out_of_memory = bool(state.get("OOMKilled")) and not self._killed
            cause = exit_cause(
                state,
                self._killed,
                self.config,
                self.resolved.execution_config_name,
                **(self._memory_context(spec) if out_of_memory else {}),
            )
            message = f"container {spec.name} failed: {cause or exc}"
            raise ExecutionError(message, logs=list(tail), cause=cause, out_of_memory=out_of_memory) from exc
        except APIError as exc:
            if self._killed:  # on_kill removed the container under the provider's own clean-up
                raise ExecutionError(f"container {spec.name} was stopped by on_kill", cause=KILLED) from exc
            if exc.status_code in (404, 409):  # removed (docker rm -f) while the provider waited on it
                cause = f"container {spec.name} was removed while it ran (docker rm -f?): {exc.explanation}"
                raise ExecutionError(cause, cause=cause) from exc
            raise
        except (
            requests.exceptions.ConnectionError,
            urllib3.exceptions.ProtocolError,
            ConnectionError,
        ) as exc:
            cause = (
                f"lost the Docker daemon at {self.config.docker_host} while running container {spec.name} "
                f"({type(exc).__name__}: {str(exc)[:200]}); a leftover container is removed by the next "
                "run of this task or by `dss-airflow gc`"
            )
            raise ExecutionError(cause, cause=cause) from exc
        if self._killed:
            # Never report success for a killed task (cf. apache/airflow#73006 for the pod operator).
            raise ExecutionError(f"container {spec.name} was stopped by on_kill", cause=KILLED)

    def _memory_context(self, spec: ContainerSpec) -> dict[str, Any]:
        """For an out-of-memory message: the runner's last snapshot (back from a "copy" container too:
        its run directory is copied out after every exit) and the next larger permitted config."""
        resolved = self.resolved
        return {
            "seen": Usage.from_reading(usage_snapshot(spec)),
            "larger": larger_config(
                self.catalog,
                project=resolved.project_name,
                config_name=resolved.execution_config_name,
                code_env=resolved.code_env_name,
            ),
        }

    def kill(self) -> None:
        super().kill()
        if self._operator is not None:
            self._operator.on_kill()
