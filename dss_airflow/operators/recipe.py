"""DSSContainerRecipeOperator: run a Python or R recipe of a project in its code env, where its
execution config says (built-in local venv, Docker, Kubernetes).

At DAG-parse time the operator only checks names against the (cached) catalog, so a typo or a forbidden
config is an import error naming the fix. Resolution, image lookup and all I/O happen in ``execute``.
"""

from __future__ import annotations

import os
import secrets
import shutil
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from airflow.sdk import BaseOperator

from dss_airflow.config.loader import get_catalog
from dss_airflow.config.models import DockerExecutionConfig, KubernetesExecutionConfig, LocalExecutionConfig
from dss_airflow.config.resolve import ResolvedExecution, is_templated, resolve_execution, resolve_recipe_path
from dss_airflow.errors import DSSAirflowError, ExecutionError
from dss_airflow.spec import (
    LABEL_PREFIX,
    RUN_DIR,
    ContainerSpec,
    Entrypoint,
    ImageRef,
    Layout,
    RecipeRun,
    build_recipe_context,
    build_recipe_spec,
)
from dss_airflow.staging import (
    FolderRefs,
    create_run_dir,
    discard_staging,
    plan_inputs,
    plan_outputs,
    prepare_run,
    promote_outputs,
    read_result,
    validate_folder_refs,
)

if TYPE_CHECKING:
    from airflow.sdk import Context

    from dss_airflow.backends.docker import DockerBackend
    from dss_airflow.backends.kubernetes import KubernetesBackend
    from dss_airflow.backends.local import LocalBackend
    from dss_airflow.config.catalog import Catalog


class DSSContainerRecipeOperator(BaseOperator):
    """Run ``recipe`` (a path inside the project) in ``code_env`` on ``execution_config``.

    :param recipe: path of a ``.py`` or ``.R`` file, relative to the project root (templated)
    :param code_env: code env name; defaults to the project's, then the global default (templated)
    :param execution_config: config name, ``inherit`` (project, then global default) or ``local``/``none``
        (templated: ``"{{ params.execution_config }}"`` lets a UI trigger choose; permissions are checked
        again at run time)
    :param project: project name; defaults to ``defaults.project`` or the only project
    :param cluster: for kubernetes configs, the cluster to run on ("where", apart from the config's "how");
        ``inherit`` (default) takes the project's, then the global default, else the config's own (templated)
    :param inputs: managed folders (or files/directories inside them) to read: ``["raw"]`` or
        ``{"orders": "raw/orders.csv"}``; the recipe reads ``dss_recipe.input_path(name)`` (templated)
    :param outputs: managed folders to write: ``["curated"]`` or ``{"clean": "curated/orders"}``; the
        recipe writes into ``dss_recipe.output_dir(name)``, promoted atomically on success (templated)
    :param recipe_params: JSON-serialisable parameters, ``dss_recipe.params()`` (templated)
    :param config_dir: config directory, when not the default (``$DSS_AIRFLOW_CONFIG``)
    :param deferrable: on kubernetes configs, wait for the pod in the triggerer instead of holding a worker
        slot (the provider's KubernetesPodTrigger); ignored by local and docker configs
    :return: (XCom) ``{"status", "outputs": {name: [files]}, "result", "warnings", "execution_config", ...}``
    """

    template_fields: Sequence[str] = (
        "recipe",
        "code_env",
        "execution_config",
        "cluster",
        "inputs",
        "outputs",
        "recipe_params",
    )
    template_fields_renderers = {"recipe_params": "json"}
    ui_color = "#2ab1ac"
    #: How failures and logs name what ran ("recipe recipes/x.py failed on ...").
    task_kind: ClassVar[str] = "recipe"

    def __init__(
        self,
        *,
        recipe: str,
        code_env: str | None = None,
        execution_config: str | None = None,
        project: str | None = None,
        cluster: str | None = None,
        inputs: FolderRefs = None,
        outputs: FolderRefs = None,
        recipe_params: Mapping[str, Any] | None = None,
        config_dir: str | None = None,
        deferrable: bool = False,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.deferrable = deferrable
        self.recipe = recipe
        self.code_env = code_env
        self.execution_config = execution_config
        self.project = project
        self.cluster = cluster
        self.inputs = _freeze_refs(inputs)
        self.outputs = _freeze_refs(outputs)
        self.recipe_params = dict(recipe_params or {})
        self.config_dir = config_dir
        self._backend: LocalBackend | DockerBackend | KubernetesBackend | None = None
        self._validate_at_parse_time()

    # ------------------------------------------------------------------------------ parse time
    def _validate_at_parse_time(self) -> None:
        """Cheap name checks so a DAG with a typo fails to import with a clear message."""
        catalog = get_catalog(self.config_dir)
        names = (self.code_env, self.execution_config, self.project, self.recipe, self.cluster)
        if any(is_templated(value) for value in names):
            return
        resolved = self._resolution(catalog)
        self._entrypoint(resolved)
        if not (is_templated(self.inputs) or is_templated(self.outputs)):
            validate_folder_refs(catalog, self.inputs, self.outputs)

    def _resolution(self, catalog: Catalog) -> ResolvedExecution:
        """Project, execution config (on its cluster), code env: the same checks at parse and run time."""
        return resolve_execution(
            catalog,
            project=self.project,
            execution_config=self.execution_config,
            code_env=self.code_env,
            cluster=self.cluster,
        )

    def _entrypoint(self, resolved: ResolvedExecution) -> Entrypoint:
        """(path, language, builtin): the project's recipe file, checked against path traversal."""
        _, relative, language = resolve_recipe_path(resolved.project_root, self.recipe)
        return relative, language, False

    def _prepare_run(self, catalog: Catalog, resolved: ResolvedExecution, ti: Any) -> None:
        """Last run-time step before planning: task kinds set their inputs, outputs and params here."""

    # ------------------------------------------------------------------------------ run time
    def execute(self, context: Context) -> dict[str, Any]:
        catalog, resolved, entry = self._start(context)
        unique = secrets.token_hex(4)
        run_key = f"{_task_key(context)}-{unique}"
        if isinstance(resolved.execution_config, KubernetesExecutionConfig):
            run, spec, result, promoted = self._execute_in_pod(
                catalog, resolved, entry, run_key, unique, context
            )
        else:
            run, spec, result, promoted = self._execute_on_worker(
                catalog, resolved, entry, run_key, unique, context
            )
        return self._outcome(resolved, run, spec, result, promoted)

    def resume_from_pod(
        self,
        context: Context,
        event: dict[str, Any],
        *,
        run_key: str,
        unique: str,
        image: str,
        python: str,
    ) -> dict[str, Any]:
        """Deferrable kubernetes runs re-enter here once the provider's trigger has seen the pod end.

        The run is planned again from the same run key and image (so the same pod, staging and outputs),
        the provider's ``trigger_reentry`` fetches the logs and the result and deletes the pod, and the
        result is handled exactly as in a run that waited in the worker.
        """
        catalog, resolved, entry = self._start(context)
        run, spec, result, promoted = self._execute_in_pod(
            catalog, resolved, entry, run_key, unique, context, resume=(event, ImageRef(image, python))
        )
        return self._outcome(resolved, run, spec, result, promoted)

    def _start(self, context: Context) -> tuple[Catalog, ResolvedExecution, Entrypoint]:
        """Resolution (permissions checked again at run time), the task kind's preparation, the log line."""
        catalog = get_catalog(self.config_dir)
        resolved = self._resolution(catalog)
        self._prepare_run(catalog, resolved, context["ti"])
        self.log.info(
            "%s %s: project %r, code env %r, execution config %r (%s, chosen by the %s)",
            self.task_kind.capitalize(),
            self.recipe,
            resolved.project_name,
            resolved.code_env_name,
            resolved.execution_config_name,
            resolved.execution_config.type,
            resolved.selected_by,
        )
        if resolved.cluster_name:
            self.log.info("Kubernetes cluster %r", resolved.cluster_name)
        return catalog, resolved, self._entrypoint(resolved)

    def _outcome(
        self,
        resolved: ResolvedExecution,
        run: RecipeRun,
        spec: ContainerSpec,
        result: dict[str, Any],
        promoted: dict[str, list[str]],
    ) -> dict[str, Any]:
        """The task's XCom: what ran where, the promoted files and the recipe's own result."""
        for warning in result.get("warnings", []):
            self.log.warning("%s", warning)
        for name, files in promoted.items():
            self.log.info("Output %r: %d file(s) in %s", name, len(files), _destination(run, name))
        return {
            "status": "success",
            "recipe": self.recipe,
            "project": resolved.project_name,
            "code_env": resolved.code_env_name,
            "execution_config": resolved.execution_config_name,
            "image": spec.image,
            "outputs": promoted,
            "result": result.get("result"),
            "warnings": result.get("warnings", []),
            "duration_s": result.get("duration_s"),
        }

    def _execute_on_worker(
        self,
        catalog: Catalog,
        resolved: ResolvedExecution,
        entry: Entrypoint,
        run_key: str,
        unique: str,
        context: Context,
    ) -> tuple[RecipeRun, ContainerSpec, dict[str, Any], dict[str, list[str]]]:
        """Local and docker: the worker stages, reads the result file and promotes the outputs."""
        relative, language, builtin = entry
        run = RecipeRun(
            resolved=resolved,
            recipe=relative,
            language=language,
            builtin=builtin,
            inputs=plan_inputs(catalog, self.inputs),
            outputs=plan_outputs(catalog, self.outputs, run_key=run_key),
            params=self.recipe_params,
            run_dir=create_run_dir(),
            task_labels=task_labels(context),
        )
        try:
            spec = self._build_spec(catalog, run, unique)
            layout: Layout = "host" if spec.image is None else "container"
            prepare_run(run.run_dir, build_recipe_context(run, layout), run.outputs, owner=_owner(spec))
            backend_failure: ExecutionError | None = None
            try:
                self._run_backend(resolved, spec, context)
            except ExecutionError as exc:
                backend_failure = exc
            result = read_result(spec.host_result_file)
            if backend_failure is not None or result is None or result.get("status") != "success":
                raise _recipe_failure(f"{self.task_kind} {self.recipe}", resolved, result, backend_failure)
            promoted = promote_outputs(run.outputs)
        finally:
            discard_staging(run.outputs)
            shutil.rmtree(run.run_dir, ignore_errors=True)
        return run, spec, result, promoted

    def _execute_in_pod(
        self,
        catalog: Catalog,
        resolved: ResolvedExecution,
        entry: Entrypoint,
        run_key: str,
        unique: str,
        context: Context,
        resume: tuple[dict[str, Any], ImageRef] | None = None,
    ) -> tuple[RecipeRun, ContainerSpec, dict[str, Any], dict[str, list[str]]]:
        """Kubernetes: paths are in-pod, the runner promotes in the pod, the result comes by XCom.

        ``resume`` (trigger event, image) finishes a deferred run instead of starting one.
        """
        from airflow.sdk.exceptions import TaskDeferred

        run = self.plan_pod_run(catalog, resolved, entry, run_key, task_labels(context))
        event, image = resume if resume is not None else (None, None)
        spec = self._build_spec(catalog, run, unique, image=image)
        backend_failure: ExecutionError | None = None
        result: dict[str, Any] | None = None
        try:
            result = self._run_backend(resolved, spec, context, catalog=catalog, run=run, event=event)
        except ExecutionError as exc:
            backend_failure = exc
        except TaskDeferred as deferral:  # the provider deferred its own method: re-target it at ours
            kwargs = {"run_key": run_key, "unique": unique, "image": spec.image, "python": spec.command[0]}
            raise TaskDeferred(
                trigger=deferral.trigger,
                method_name=self.resume_from_pod.__name__,
                kwargs=kwargs,
                timeout=deferral.timeout,
            ) from None
        if backend_failure is not None or result is None or result.get("status") != "success":
            raise _recipe_failure(f"{self.task_kind} {self.recipe}", resolved, result, backend_failure)
        listed = result.get("outputs") or {}
        promoted = {
            ref.name: [str(ref.host_destination / name) for name in listed.get(ref.name, [])]
            for ref in run.outputs
        }
        return run, spec, result, promoted

    def plan_pod_run(
        self,
        catalog: Catalog,
        resolved: ResolvedExecution,
        entry: Entrypoint,
        run_key: str,
        labels: Mapping[str, str],
    ) -> RecipeRun:
        """The run as a pod sees it (in-pod paths); also what ``dss-airflow k8s render`` shows."""
        from dss_airflow.backends.kubernetes import plan_pod_io

        inputs, outputs = plan_pod_io(catalog, self.inputs, self.outputs, run_key)
        relative, language, builtin = entry
        return RecipeRun(
            resolved=resolved,
            recipe=relative,
            language=language,
            builtin=builtin,
            inputs=inputs,
            outputs=outputs,
            params=self.recipe_params,
            run_dir=Path(RUN_DIR),
            task_labels=labels,
        )

    def _build_spec(
        self, catalog: Catalog, run: RecipeRun, unique: str, *, image: ImageRef | None = None
    ) -> ContainerSpec:
        """The run's spec; ``image`` pins the image (a resumed pod keeps the one it started with)."""
        resolved = run.resolved
        config = resolved.execution_config
        uid, gid = os.getuid(), os.getgid()
        if isinstance(config, LocalExecutionConfig):
            from dss_airflow.backends.local import ensure_venv
            from dss_airflow.settings import cache_dir

            python = ensure_venv(
                resolved.code_env_name,
                resolved.code_env.python,
                catalog.requirements(resolved.code_env_name),
                cache_dir(),
            )
            return build_recipe_spec(run, layout="host", image=None, local_python=str(python), unique=unique)
        from dss_airflow.images.lookup import image_for

        return build_recipe_spec(
            run,
            layout="pod" if isinstance(config, KubernetesExecutionConfig) else "container",
            image=image or image_for(catalog, resolved),
            worker_uid=uid,
            worker_gid=gid,
            unique=unique,
        )

    def _run_backend(
        self,
        resolved: ResolvedExecution,
        spec: ContainerSpec,
        context: Context,
        *,
        catalog: Catalog | None = None,
        run: RecipeRun | None = None,
        event: dict[str, Any] | None = None,
    ) -> dict[str, Any] | None:
        """Run the spec; kubernetes returns the runner's result (XCom), the others leave a result file."""
        config = resolved.execution_config
        if isinstance(config, LocalExecutionConfig):
            from dss_airflow.backends.local import LocalBackend

            local = LocalBackend(self.log)  # type: ignore[arg-type]
            self._backend = local
            local.run(spec)
        elif isinstance(config, DockerExecutionConfig):
            from dss_airflow.backends.docker import DockerBackend

            docker = DockerBackend(config, self.log)  # type: ignore[arg-type]
            self._backend = docker
            docker.run(spec, context, task_id=self.task_id)
        elif isinstance(config, KubernetesExecutionConfig):
            from dss_airflow.backends.kubernetes import KubernetesBackend, pod_for_run

            if catalog is None or run is None:
                raise DSSAirflowError("a kubernetes run needs its catalog and its planned run")
            pod = pod_for_run(catalog, run, spec)  # pure; refuses oversized contexts before any API call
            kubernetes = KubernetesBackend(config, self.log, deferrable=self.deferrable)  # type: ignore[arg-type]
            self._backend = kubernetes
            return kubernetes.run(pod, context, task_id=self.task_id, event=event)
        return None

    def on_kill(self) -> None:
        if self._backend is not None:
            self._backend.kill()


def _recipe_failure(
    what: str, resolved: ResolvedExecution, result: dict[str, Any] | None, backend: ExecutionError | None
) -> ExecutionError:
    """One message with the recipe's own error (from its result) and the process/container failure."""
    reason = (result or {}).get("error") or (str(backend) if backend else "the runner wrote no result")
    where = f"{resolved.execution_config_name} ({resolved.execution_config.type})"
    return ExecutionError(
        f"{what} failed on {where}: {reason}; its managed-folder outputs were left untouched",
        logs=backend.logs if backend else [],
        exit_code=backend.exit_code if backend else None,
    )


def _freeze_refs(refs: FolderRefs) -> Any:
    if refs is None or isinstance(refs, str | Mapping):
        return dict(refs) if isinstance(refs, Mapping) else refs
    return list(refs)


def _owner(spec: ContainerSpec) -> tuple[int, int] | None:
    """As root, hand the writable run directories to the container's non-root user."""
    if os.getuid() != 0 or spec.user is None:
        return None
    uid, _, gid = spec.user.partition(":")
    return int(uid), int(gid or uid)


def task_labels(context: Context) -> dict[str, str]:
    """Labels identifying the task instance: for audit and to find leftovers of earlier tries."""
    ti = context["ti"]
    labels = {
        "dag_id": ti.dag_id,
        "task_id": ti.task_id,
        "run_id": ti.run_id,
        "map_index": str(getattr(ti, "map_index", -1)),
        "try_number": str(getattr(ti, "try_number", 1)),
    }
    return {f"{LABEL_PREFIX}.{key}": str(value) for key, value in labels.items()}


def _task_key(context: Context) -> str:
    ti = context["ti"]
    return f"{ti.task_id}-{getattr(ti, 'try_number', 1)}".replace("/", "_")


def _destination(run: RecipeRun, name: str) -> Path:
    return next(ref.host_destination for ref in run.outputs if ref.name == name)
