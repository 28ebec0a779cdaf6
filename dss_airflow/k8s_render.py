"""Render the pod a dss_airflow task (recipe, model, notebook) would submit, as YAML, without a cluster.

``dss-airflow k8s render DAG TASK [--config CFG]`` prints it for review or ``kubectl apply --dry-run=server``.
The manifest is the provider's own (``KubernetesPodOperator.build_pod_request_obj(dry_run=True)``: our
pod plus its XCom sidecar), for a placeholder run (``run_id`` "render", try 1): only the run-specific
labels, the pod name suffix and the staging directory name differ from a real run. A task declaring
connections or variables gets its Secret first (as created just before the pod), with empty values under
the declared names: nothing is read from Airflow.
"""

from __future__ import annotations

import logging
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from dss_airflow.config.models import KubernetesExecutionConfig
from dss_airflow.errors import ConfigError, DSSAirflowError
from dss_airflow.tasks.flow import task_labels

RENDER_RUN_ID = "render"


def _render_value(value: Any, params: dict[str, Any], field: str) -> Any:
    """Render Jinja in strings (recursively) with only the DAG's param defaults available."""
    import jinja2

    from dss_airflow.config.resolve import is_templated

    if isinstance(value, str) and is_templated(value):
        env = jinja2.Environment(undefined=jinja2.StrictUndefined, autoescape=False)
        try:
            return env.from_string(value).render(params=params)
        except jinja2.TemplateError as exc:
            raise ConfigError(
                f"cannot render {value!r} with the DAG's param defaults only ({exc})",
                field=field,
                fix="pass the value explicitly (e.g. --config CFG for execution_config)",
                show_value=False,
            ) from exc
    if isinstance(value, dict):
        return {k: _render_value(v, params, field) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_render_value(v, params, field) for v in value]
    return value


def render_task(
    dag_id: str,
    task_id: str,
    dags_folder: Path | None = None,
    execution_config: str | None = None,
) -> str:
    """The YAML of the pod ``dag_id.task_id`` would run (``execution_config`` overrides the task's)."""
    import yaml
    from kubernetes.client import ApiClient

    from dss_airflow.backends.base import RunOptions
    from dss_airflow.backends.kubernetes import KubernetesBackend, build_secret, submitted_manifest
    from dss_airflow.config.loader import get_catalog
    from dss_airflow.errors import ImageNotBuiltError
    from dss_airflow.images.envbuild import ENV_PYTHON
    from dss_airflow.images.lookup import image_for
    from dss_airflow.operators.base import DSSTaskOperator
    from dss_airflow.spec import ImageRef
    from dss_airflow.task_secrets import TaskSecrets
    from dss_airflow.tasks.flow import RunKey, prepare_run

    task, params = _dag_task(dag_id, task_id, dags_folder)
    if not isinstance(task, DSSTaskOperator):
        raise DSSAirflowError(f"task {dag_id}.{task_id} is a {type(task).__name__}, not a dss_airflow task")
    header = _render_fields(task, params, execution_config)
    catalog = get_catalog(task.config_dir)
    kind = task.task()
    resolved = kind.resolve(catalog)
    config = resolved.execution_config
    if resolved.spark_config is not None or not isinstance(config, KubernetesExecutionConfig):
        where = resolved.spark_config_name or resolved.execution_config_name
        raise DSSAirflowError(
            f"task {dag_id}.{task_id} runs on {where!r} ({config.type}), not on a kubernetes execution "
            "config; pass one explicitly to render its pod"
        )
    ti = SimpleNamespace(dag_id=dag_id, task_id=task_id, run_id=RENDER_RUN_ID, map_index=-1, try_number=1)
    try:
        image = image_for(catalog, resolved)
    except ImageNotBuiltError as exc:  # still worth reviewing: say so, with a placeholder image
        registry = config.registry.url + "/" if config.registry else ""
        image = ImageRef(f"{registry}dss-code-envs:{resolved.code_env_name}-NOT-BUILT", ENV_PYTHON)
        header += f"# {exc}\n"
    options = RunOptions(pinned_image=image)
    key = RunKey(f"{task_id}-render", "render", task_labels(ti))
    prepared = prepare_run(
        kind,
        catalog,
        ti,
        logging.getLogger(__name__),
        options,
        key,
        secret_refs=task.secret_refs(),
        read_secrets=lambda refs, _task_id: TaskSecrets.placeholder(refs) if refs else None,
    )
    assert isinstance(prepared.backend, KubernetesBackend)
    documents = [submitted_manifest(task_id, prepared.backend.pod(prepared.spec), config)]
    secret = build_secret(prepared.spec, config)
    if secret is not None:
        header += "# the Secret's values are read from Airflow when the task runs: shown empty here\n"
        documents.insert(0, ApiClient().sanitize_for_serialization(secret))
    return header + str(yaml.safe_dump_all(documents, sort_keys=False))


def _dag_task(dag_id: str, task_id: str, dags_folder: Path | None) -> tuple[Any, dict[str, Any]]:
    """The task of a DAG in the dags folder, and the defaults of the DAG's params."""
    from airflow.dag_processing.dagbag import DagBag

    if dags_folder is None:
        from airflow.configuration import conf

        dags_folder = Path(conf.get("core", "dags_folder"))
    bag = DagBag(dag_folder=str(dags_folder))
    dag = bag.dags.get(dag_id)
    if dag is None:
        errors = "; ".join(f"{file}: {error}" for file, error in bag.import_errors.items())
        raise DSSAirflowError(
            f"no DAG {dag_id!r} in {dags_folder}" + (f" (import errors: {errors})" if errors else "")
        )
    if task_id not in dag.task_dict:
        raise DSSAirflowError(f"DAG {dag_id!r} has no task {task_id!r}")
    return dag.task_dict[task_id], dict(dag.params.dump()) if dag.params else {}


def _render_fields(task: Any, params: dict[str, Any], execution_config: str | None) -> str:
    """Render Jinja onto the (throwaway) task as Airflow does before execute; returns header comments."""
    header = ""
    for name in task.template_fields:
        value = getattr(task, name)
        if isinstance(value, str) and "xcom_pull" in value:  # an upstream task's value: not known here
            header += (
                f"# {name}: {value} comes from an upstream task at run time; rendered with its default\n"
            )
            value = None
        setattr(task, name, _render_value(value, params, name))
    if execution_config:
        task.execution_config = execution_config
    return header
