"""Docker backend: a :class:`ContainerSpec` run through the docker provider's DockerOperator.

We compose the provider's operator (built inside ``execute``) rather than talk to Docker ourselves, so its
log streaming, registry login and fixes come with each provider release. Two things it lacks are added
by a thin subclass: a *hard* CPU limit (``nano_cpus``; the provider's ``cpus`` is only relative shares) and
the Docker ``runtime`` (e.g. nvidia). Containers are labelled with the task instance, removed in every
case (``auto_remove="force"``, ``on_kill``), and leftovers of an earlier try of the same task instance
(a worker that died) are removed before a new one starts.
"""

from __future__ import annotations

import functools
import logging
import os
from collections import deque
from typing import TYPE_CHECKING, Any

from dss_airflow.backends.base import WorkerBackend, execute_composed
from dss_airflow.config.models import DockerExecutionConfig
from dss_airflow.errors import ExecutionError
from dss_airflow.hooks.docker import tls_paths
from dss_airflow.spec import LABEL_PREFIX, build_spec

if TYPE_CHECKING:
    from collections.abc import Mapping

    from airflow.providers.docker.operators.docker import DockerOperator
    from airflow.sdk import Context

    from dss_airflow.spec import ContainerSpec, TaskRun

log = logging.getLogger(__name__)

#: Labels that identify one task instance across tries (try_number deliberately left out).
TASK_INSTANCE_LABELS = ("dag_id", "task_id", "run_id", "map_index")
LOG_TAIL = 50


class _HostConfigExtras:
    """Wraps the provider's APIClient so that every host config also gets our extra keys."""

    def __init__(self, client: Any, extras: Mapping[str, Any]) -> None:
        self._client = client
        self._extras = dict(extras)

    def create_host_config(self, **kwargs: Any) -> Any:
        return self._client.create_host_config(**kwargs, **self._extras)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._client, name)


@functools.cache
def _operator_class() -> type[DockerOperator]:
    from airflow.providers.docker.operators.docker import DockerOperator

    class DSSDockerOperator(DockerOperator):
        """DockerOperator plus hard CPU limit and runtime; created by dss_airflow, never by DAG authors."""

        def __init__(self, *, host_config_extras: Mapping[str, Any] | None = None, **kwargs: Any) -> None:
            super().__init__(**kwargs)
            self.host_config_extras = dict(host_config_extras or {})

        @property
        def cli(self) -> Any:
            client = self.hook.api_client
            return _HostConfigExtras(client, self.host_config_extras) if self.host_config_extras else client

    return DSSDockerOperator


def docker_operator_kwargs(spec: ContainerSpec, config: DockerExecutionConfig) -> dict[str, Any]:
    """Pure mapping of a spec onto DockerOperator arguments (plus our host-config extras)."""
    from docker.types import DeviceRequest, Mount

    resources = spec.resources
    # docker-init as PID 1 forwards signals, so `docker stop` (on_kill) ends the task at once even
    # before the runner installs its SIGTERM handler, and reaps the recipe's zombie children.
    extras: dict[str, Any] = {"init": True}
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
    tls = tls_paths(config)
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
        "docker_url": config.docker_host,
        "docker_conn_id": config.registry.connection_id if config.registry else None,
        "tls_verify": bool(tls),
        **tls,
        "auto_remove": "force",
        "mount_tmp_dir": False,
        "do_xcom_push": False,
        "host_config_extras": extras,
    }


class DockerBackend(WorkerBackend):
    """Runs one spec in a container on the config's daemon; the container is gone afterwards."""

    layout = "container"

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        config = self.resolved.execution_config
        assert isinstance(config, DockerExecutionConfig)
        self.config = config
        self._operator: DockerOperator | None = None

    def prepare(self, run: TaskRun) -> ContainerSpec:
        from dss_airflow.images.lookup import image_for

        image = self.options.pinned_image or image_for(self.catalog, self.resolved)
        return build_spec(
            run,
            layout="container",
            image=image,
            worker_uid=os.getuid(),
            worker_gid=os.getgid(),
        )

    def execute(self, spec: ContainerSpec, context: Context) -> None:
        from airflow.providers.docker.exceptions import DockerContainerFailedException
        from docker.errors import APIError

        task_id = context["ti"].task_id
        operator = _operator_class()(
            task_id=f"{task_id}.container", **docker_operator_kwargs(spec, self.config)
        )
        self._operator = operator
        self.remove_leftovers(operator.cli, spec.labels)
        self.log.info(
            "Running in Docker (%s): image %s, container %s", self.config.docker_host, spec.image, spec.name
        )
        try:
            execute_composed(operator, context)
        except DockerContainerFailedException as exc:
            logs = [str(line) for line in (exc.logs or [])]
            tail: deque[str] = deque(logs, maxlen=LOG_TAIL)
            raise ExecutionError(f"container {spec.name} failed: {exc}", logs=list(tail)) from exc
        except APIError as exc:
            if self._killed:  # on_kill removed the container under the provider's own clean-up
                raise ExecutionError(f"container {spec.name} was stopped by on_kill") from exc
            raise
        if self._killed:
            # Never report success for a killed task (cf. apache/airflow#73006 for the pod operator).
            raise ExecutionError(f"container {spec.name} was stopped by on_kill")

    def remove_leftovers(self, client: Any, labels: Mapping[str, str]) -> None:
        """Remove containers of earlier tries of this task instance (worker killed before cleanup).

        A first try has no earlier one, so it skips the lookup (one Docker API call less per task).
        """
        if labels.get(f"{LABEL_PREFIX}.try_number", "1") in ("0", "1"):
            return
        selectors = [
            f"{LABEL_PREFIX}.{key}={labels[f'{LABEL_PREFIX}.{key}']}"
            for key in TASK_INSTANCE_LABELS
            if f"{LABEL_PREFIX}.{key}" in labels
        ]
        if not selectors:
            return
        for container in client.containers(all=True, filters={"label": selectors}):
            self.log.warning("Removing leftover container %s of an earlier try", container["Names"])
            client.remove_container(container["Id"], force=True)

    def kill(self) -> None:
        super().kill()
        if self._operator is not None:
            self._operator.on_kill()
