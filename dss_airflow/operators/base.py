"""DSSTaskOperator: the one operator base; its ``execute`` is the flow every task kind goes through.

A public operator only declares its arguments and template fields and says which task kind they make
(:meth:`DSSTaskOperator.task`). At DAG-parse time the kind checks its names against the (cached) catalog,
so a typo or a forbidden config is an import error naming the fix; resolution, image lookup and all I/O
happen in ``execute``, from the rendered arguments.
"""

from __future__ import annotations

from abc import abstractmethod
from typing import TYPE_CHECKING, Any, ClassVar

from airflow.sdk import BaseOperator

from dss_airflow.config.loader import get_catalog
from dss_airflow.task_secrets import SecretRefs
from dss_airflow.tasks.base import Placement

if TYPE_CHECKING:
    from collections.abc import Sequence

    import jinja2
    from airflow.sdk import Context

    from dss_airflow.backends.base import Backend, RunOptions
    from dss_airflow.tasks.base import TaskKind
    from dss_airflow.tasks.flow import RunKey


#: The rendered field that shows what a try ran (:meth:`dss_airflow.tasks.flow.PreparedRun.description`).
RESOLVED_FIELD = "resolved_execution"
NOT_RESOLVED = "# Shown when this try ends; if this stays, it failed before resolving or was killed (log)"


class DSSTaskOperator(BaseOperator):
    """Runs a task kind in its code env, on the backend its execution config names.

    :param code_env: code env name; defaults to the project's, then the global default (templated)
    :param execution_config: config name, ``inherit`` (project, then global default) or ``local``/``none``
        (templated: ``"{{ params.execution_config }}"`` lets a UI trigger choose; permissions are checked
        again at run time)
    :param project: project name; defaults to ``defaults.project`` or the only project
    :param cluster: for kubernetes configs, the cluster to run on ("where", apart from the config's "how");
        ``inherit`` (default) takes the project's, then the global default, else the config's own (templated)
    :param config_dir: config directory, when not the default (``$DSS_AIRFLOW_CONFIG``)
    :param deferrable: on kubernetes configs, wait for the pod in the triggerer instead of holding a worker
        slot (the provider's KubernetesPodTrigger); ignored by local and docker configs
    :param connections: Airflow connection ids the task reads with ``dss_recipe.connection(name)``, and
    :param variables: Airflow variable keys it reads with ``dss_recipe.variable(name)``: read on the worker
        when the task runs, masked in logs, delivered as a private file (never env, argv, labels, XCom);
        a missing one fails the task before anything starts (names, not templated)

    Rendered Templates also show ``resolved_execution`` (each operator lists it last in its
    ``template_fields``): what the try ran, set in ``execute`` and stored when the try ends.
    """

    template_fields_renderers: ClassVar[dict[str, str]] = {RESOLVED_FIELD: "yaml"}
    #: Airflow stores the rendered fields again when the try ends (as ``@task.bash`` does for its command).
    overwrite_rtif_after_execution = True

    def __init__(
        self,
        *,
        code_env: str | None = None,
        execution_config: str | None = None,
        project: str | None = None,
        cluster: str | None = None,
        config_dir: str | None = None,
        deferrable: bool = False,
        connections: Sequence[str] | None = None,
        variables: Sequence[str] | None = None,
        **kwargs: Any,
    ) -> None:
        self._queue_from_dag = "queue" in kwargs
        super().__init__(**kwargs)
        self.code_env = code_env
        self.execution_config = execution_config
        self.project = project
        self.cluster = cluster
        self.config_dir = config_dir
        self.deferrable = deferrable
        refs = SecretRefs.declared(connections, variables)  # their shape: a DAG import error when wrong
        self.connections, self.variables = list(refs.connections), list(refs.variables)
        #: As written in the DAG (Airflow renders ``execution_config`` in place): how it was set.
        self._execution_config_as_written = execution_config
        self.resolved_execution: str | None = None
        self._backend: Backend | None = None

    @abstractmethod
    def task(self) -> TaskKind:
        """The task kind these arguments make (at parse time as written, at run time as rendered)."""

    def placement(self) -> Placement:
        return Placement(self.project, self.code_env, self.execution_config, self.cluster)

    def secret_refs(self) -> SecretRefs:
        return SecretRefs(tuple(self.connections), tuple(self.variables))

    def check_at_parse_time(self) -> None:
        """Called at the end of each operator's ``__init__``, once its own arguments exist. The resolved
        config's ``queue`` routes the task (unless the DAG set one): a queue is decided when the DAG is
        parsed, so a templated execution config runs on the DAG's queue."""
        catalog, task = get_catalog(self.config_dir), self.task()
        resolved = catalog.checked(task.check_key(), lambda: task.check(catalog))
        if resolved is not None and resolved.execution_config.queue and not self._queue_from_dag:
            self.queue = resolved.execution_config.queue

    def render_template_fields(self, context: Context, jinja_env: jinja2.Environment | None = None) -> None:
        super().render_template_fields(context, jinja_env)
        self.resolved_execution = NOT_RESOLVED

    def execute(self, context: Context) -> dict[str, Any]:
        from dss_airflow.backends.base import RunOptions
        from dss_airflow.tasks.flow import RunKey

        return self._run(context, RunOptions(deferrable=self.deferrable), RunKey.of(context["ti"]))

    def resume_from_pod(
        self, context: Context, event: dict[str, Any], *, run_key: str, unique: str, image: str, python: str
    ) -> dict[str, Any]:
        """A deferred kubernetes run re-enters here once the provider's trigger has seen the pod end.

        The run is planned again with the same key and image (so the same pod, staging and outputs);
        the provider's ``trigger_reentry`` fetches the logs and the result and deletes the pod.
        """
        from dss_airflow.backends.base import RunOptions
        from dss_airflow.spec import ImageRef
        from dss_airflow.tasks.flow import RunKey, task_labels

        key = RunKey(run_key, unique, task_labels(context["ti"]))
        options = RunOptions(self.deferrable, resume_event=event, pinned_image=ImageRef(image, python))
        return self._run(context, options, key)

    def _run(self, context: Context, options: RunOptions, key: RunKey) -> dict[str, Any]:
        """The flow (docs/architecture.md); the run-time layers are imported here, not at parse time."""
        from airflow.sdk.exceptions import TaskDeferred

        from dss_airflow.tasks.flow import finish_run, prepare_run, task_value_origin, warn_unknown_conf_keys

        warn_unknown_conf_keys(context, self.log)
        catalog = get_catalog(self.config_dir)
        origin = task_value_origin(self._execution_config_as_written, context)
        prepared = prepare_run(
            self.task(), catalog, context["ti"], self.log, options, key, origin, self.secret_refs()
        )
        self.resolved_execution = prepared.description()
        self._backend = prepared.backend
        try:
            result = prepared.backend.run(prepared.spec, context)
        except TaskDeferred as deferral:  # the provider deferred its own method: re-target it at ours
            image, spec = prepared.spec.image, prepared.spec
            kwargs = {"run_key": key.key, "unique": key.unique, "image": image, "python": spec.command[0]}
            raise TaskDeferred(
                trigger=deferral.trigger,
                method_name=self.resume_from_pod.__name__,
                kwargs=kwargs,
                timeout=deferral.timeout,
            ) from None
        return finish_run(prepared, result, self.log, getattr(context["ti"], "xcom_push", None))

    def on_kill(self) -> None:
        if self._backend is not None:
            self._backend.kill()
