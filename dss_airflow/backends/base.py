"""The one backend contract: a planned task run becomes a :class:`ContainerSpec`, which a backend runs.

::

    backend = backend_for(catalog, resolved, log)      # dss_airflow.backends: by the config's type
    spec = backend.prepare(run)                        # image or venv, and the spec (pure builder)
    result = backend.run(spec, context)                # RunResult: the runner's JSON, promoted outputs
    backend.kill()                                     # from the operator's on_kill, in another thread

Where the task sees the managed folders decides the staging: *worker* backends (local, Docker) see the
worker's folders, stage outputs there and promote them after a success (:class:`WorkerBackend`); cluster
backends (Kubernetes pods, Spark on Kubernetes) see them on PVCs, where the runner promotes in the pod and
lists what it did.
"""

from __future__ import annotations

import logging
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar, Protocol

from dss_airflow.errors import ExecutionError
from dss_airflow.spec import USAGE_FILE
from dss_airflow.staging import (
    plan_inputs,
    plan_outputs,
    promote_outputs,
    read_result,
    run_dir_path,
    worker_staging,
)

if TYPE_CHECKING:
    from collections.abc import Mapping
    from pathlib import Path

    from airflow.sdk import Context

    from dss_airflow.config.catalog import Catalog
    from dss_airflow.config.resolve import ResolvedExecution
    from dss_airflow.spec import ContainerSpec, ImageRef, InputRef, Layout, OutputRef, TaskRun
    from dss_airflow.staging import FolderRefs

log = logging.getLogger(__name__)


class TaskLog(Protocol):
    """What runs log through: the task's own logger (Airflow's) or a stdlib one."""

    def info(self, msg: str, /, *args: Any) -> Any: ...

    def warning(self, msg: str, /, *args: Any) -> Any: ...


@dataclass(frozen=True)
class RunResult:
    """What a run produced: the runner's JSON result (None when it wrote none), the files promoted into
    each output, and the backend's own failure (a container that could not start, a dead daemon)."""

    result: Mapping[str, Any] | None
    promoted: Mapping[str, list[str]] = field(default_factory=dict)
    failure: ExecutionError | None = None
    #: The last resource reading when the runner's result has none (it was killed): its snapshot, or
    #: the metrics API's sample of a pod.
    usage: Mapping[str, Any] | None = None

    @property
    def succeeded(self) -> bool:
        return self.failure is None and self.result is not None and self.result.get("status") == "success"


@dataclass(frozen=True)
class RunOptions:
    """How the operator asks for a run: waiting in the triggerer, or resuming a deferred one."""

    deferrable: bool = False
    #: The trigger's event when a deferred kubernetes run resumes (the pod exists; only finish it).
    resume_event: Mapping[str, Any] | None = None
    #: The image a resumed run started with: a rebuild in between must not change it.
    pinned_image: ImageRef | None = None


class Backend(ABC):
    """Runs planned task runs of one resolved execution."""

    layout: ClassVar[Layout]
    #: Whether the backend gets a task's connections and variables to it (``ContainerSpec.secrets``).
    delivers_secrets: ClassVar[bool] = True

    def __init__(
        self,
        catalog: Catalog,
        resolved: ResolvedExecution,
        logger: TaskLog | None = None,
        options: RunOptions | None = None,
    ) -> None:
        self.catalog = catalog
        self.resolved = resolved
        self.log = logger or log
        self.options = options or RunOptions()
        self._killed = False

    def plan_io(
        self, inputs: FolderRefs, outputs: FolderRefs, run_key: str
    ) -> tuple[tuple[InputRef, ...], tuple[OutputRef, ...]]:
        """Inputs and outputs with the folder paths the task sees (default: the worker's directories)."""
        return plan_inputs(self.catalog, inputs), plan_outputs(self.catalog, outputs, run_key)

    def run_dir(self, run_key: str) -> Path:
        """The run's private directory, as the task sees it (default: one on the worker)."""
        return run_dir_path(run_key)

    @abstractmethod
    def prepare(self, run: TaskRun) -> ContainerSpec:
        """The run's spec: the backend's image (or virtualenv), paths as its layout shows them."""

    @abstractmethod
    def run(self, spec: ContainerSpec, context: Context) -> RunResult:
        """Run the spec to its end; infrastructure failures come back in ``RunResult.failure``."""

    def kill(self) -> None:
        """Stop the running task (``on_kill``); the run then never reports success."""
        self._killed = True

    def describe(self, spec: ContainerSpec) -> dict[str, Any]:
        """Where this backend runs ``spec``, beyond the spec itself (daemon, cluster), for people: the
        operators' rendered ``resolved_execution``. Never an environment value."""
        return {}

    def manifest(self, spec: ContainerSpec) -> dict[str, Any] | None:
        """What the backend submits for ``spec``, when that is a manifest (a pod), without environment
        values; None otherwise."""
        return None


class WorkerBackend(Backend):
    """The task sees the worker's folders: the worker stages, reads the result file and promotes."""

    def run(self, spec: ContainerSpec, context: Context) -> RunResult:
        with worker_staging(spec):
            failure: ExecutionError | None = None
            try:
                self.execute(spec, context)
            except ExecutionError as exc:
                failure = exc
            if self._killed and failure is None:
                failure = ExecutionError(f"{spec.name} was stopped by on_kill")
            result = read_result(spec.host_result_file)
            usage = None if result and "resources" in result else usage_snapshot(spec)
            outcome = RunResult(result, failure=failure, usage=usage)
            if not outcome.succeeded:
                return outcome
            return RunResult(outcome.result, promote_outputs(spec.outputs))

    @abstractmethod
    def execute(self, spec: ContainerSpec, context: Context) -> None:
        """Run the process; raise ExecutionError when it fails to run or exits non-zero."""


def usage_snapshot(spec: ContainerSpec) -> dict[str, Any] | None:
    """The runner's last resource snapshot in the run directory (the peak seen before a kill); None
    when it wrote none (killed within its first quarter second, or an older runtime)."""
    return read_result(spec.run_dir / USAGE_FILE) if spec.run_dir is not None else None


def execute_composed(operator: Any, context: Context) -> Any:
    """Run a provider operator we composed inside our own ``execute`` (not scheduled by Airflow).

    Airflow's ExecutorSafeguard refuses a nested ``execute()`` unless called with the sentinel the task
    runner passes to ours: we pass it on, so the nesting is declared, not hidden.
    """
    from airflow.sdk.bases.operator import ExecutorSafeguard

    sentinel = {f"{type(operator).__name__}__sentinel": ExecutorSafeguard.sentinel_value}
    return operator.execute(context, **sentinel)
