"""What every task kind is: a small object that checks its names, resolves where it runs and plans a run.

A kind (recipe, model, notebook, Spark application) is built by its operator from the operator's
arguments — at DAG-parse time with what the author wrote, at run time with what Airflow rendered — and
never changes the operator. Its methods are pure apart from reading the catalog (and, for recipes and
notebooks, checking that the project file exists):

* ``check(catalog)``: the parse-time checks, skipped for what is templated (checked at run time), giving
  the resolution when it could be made;
* ``resolve(catalog)``: project, execution config (permissions), code env — at parse and at run time;
* ``plan(catalog, resolved, ti)``: a :class:`TaskPlan` — what to run, with which folders and params;
* ``outcome(plan, run, log)``: the task's XCom from what ran.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field, fields
from typing import TYPE_CHECKING, Any, ClassVar, cast

from dss_airflow.config.resolve import is_templated, resolve_execution
from dss_airflow.errors import ConfigError

if TYPE_CHECKING:
    from collections.abc import Hashable, Mapping

    from dss_airflow.backends.base import RunResult, TaskLog
    from dss_airflow.config.catalog import Catalog
    from dss_airflow.config.resolve import ResolvedExecution
    from dss_airflow.spec import ContainerSpec, Entrypoint
    from dss_airflow.staging import FolderRefs


@dataclass(frozen=True)
class Placement:
    """Where the author asked a task to run: names, ``None``/``inherit`` meaning the next level decides."""

    project: str | None = None
    code_env: str | None = None
    execution_config: str | None = None
    cluster: str | None = None

    @property
    def templated(self) -> bool:
        names = (self.project, self.code_env, self.execution_config, self.cluster)
        return any(is_templated(value) for value in names)

    def resolve(self, catalog: Catalog, *, default_code_env: str | None = None) -> ResolvedExecution:
        """Project, execution config (on its cluster) and code env, permissions checked: a pure function
        of the catalog and the names, so made once per catalog (a DAG of 1,000 tasks resolves once)."""
        return catalog.checked(
            (Placement, self, default_code_env),
            lambda: resolve_execution(
                catalog,
                project=self.project,
                execution_config=self.execution_config,
                code_env=self.code_env or default_code_env,
                cluster=self.cluster,
            ),
        )


@dataclass(frozen=True)
class TaskPlan:
    """One run of a task kind, before any path is decided: what runs, reading and writing which folders.

    ``outputs`` are promoted in their order (model versions before the pointer naming them).
    """

    label: str
    entrypoint: Entrypoint
    inputs: FolderRefs = None
    outputs: FolderRefs = None
    params: Mapping[str, Any] = field(default_factory=dict)
    #: Extra environment of the process (the Spark settings, worker variables Spark needs).
    env: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Ran:
    """What a finished run gives a kind to make its XCom from."""

    plan: TaskPlan
    resolved: ResolvedExecution
    spec: ContainerSpec
    run: RunResult

    @property
    def result(self) -> Mapping[str, Any]:
        return self.run.result or {}

    def xcom(self) -> dict[str, Any]:
        """The fields every kind reports: what ran where, promoted files, the task's own result."""
        return {
            "status": "success",
            "project": self.resolved.project_name,
            "code_env": self.resolved.code_env_name,
            "execution_config": self.resolved.execution_config_name,
            "image": self.spec.image,
            "outputs": dict(self.run.promoted),
            "result": self.result.get("result"),
            "warnings": list(self.result.get("warnings", [])),
            "duration_s": self.result.get("duration_s"),
        }


class TaskKind(ABC):
    """A task kind: see the module docstring."""

    #: How failures and logs name the kind ("recipe", "model", "notebook", "Spark application").
    kind: ClassVar[str]
    #: Fields :meth:`check` does not read: tasks differing only in them share one parse-time check.
    unchecked_fields: ClassVar[frozenset[str]] = frozenset({"params"})

    def check_key(self) -> Hashable:
        """What :meth:`check` depends on, the key of :meth:`Catalog.checked`; values compared by
        ``repr``, as arguments may be unhashable mappings."""
        names = (f.name for f in fields(cast("Any", self)) if f.repr and f.name not in self.unchecked_fields)
        return (type(self), *(repr(getattr(self, name)) for name in names))

    @abstractmethod
    def check(self, catalog: Catalog) -> ResolvedExecution | None:
        """Parse-time checks of what is not templated (names, paths, arguments); the resolution they
        made, or None when the placement is templated (decided at run time)."""

    @abstractmethod
    def resolve(self, catalog: Catalog) -> ResolvedExecution:
        """Project, execution config and code env, permissions checked (parse and run time)."""

    @abstractmethod
    def plan(self, catalog: Catalog, resolved: ResolvedExecution, ti: Any) -> TaskPlan:
        """The run: entrypoint, folders, params (rendered values are checked here)."""

    def outcome(self, ran: Ran, log: TaskLog) -> dict[str, Any]:
        """The task's XCom."""
        return ran.xcom()


def as_bool(value: bool | str, field: str) -> bool:
    """Booleans from templates arrive as text ("True", "false") unless rendered as native objects."""
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ("true", "1", "yes", "on"):
        return True
    if text in ("false", "0", "no", "off", "", "none"):
        return False
    raise ConfigError("not a boolean", field=field, value=value, fix="use true or false")
