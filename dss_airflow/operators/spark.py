"""DSSSparkOperator: a PySpark application of a project, run where its spark config says.

* ``type: local`` spark configs run the application as a recipe -- the same machinery as
  :class:`~dss_airflow.operators.recipe.DSSContainerRecipeOperator` on the built-in local backend: the code
  env's virtualenv (which must contain pyspark), inputs, staged outputs promoted atomically on success.
  ``dss_recipe.spark()`` returns the SparkSession built from the config's master and conf.
* ``type: kubernetes`` spark configs submit it to a cluster: a ``SparkApplication`` created through the
  provider's ``SparkKubernetesOperator`` (``mode: operator``), or ``spark-submit --master k8s://...``
  (``mode: spark-submit``). Both are built by the pure functions of :mod:`dss_airflow.spark`.
"""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import tempfile
from collections import deque
from pathlib import Path
from typing import TYPE_CHECKING, Any

from dss_airflow.config.loader import get_catalog
from dss_airflow.config.models import LOCAL
from dss_airflow.config.requirements import requirement_name
from dss_airflow.config.resolve import check_permission, is_templated, resolve_execution, resolve_recipe_path
from dss_airflow.config.spark import (
    KubernetesSparkConfig,
    LocalSparkConfig,
    SparkConfig,
)
from dss_airflow.errors import ConfigError, ExecutionError
from dss_airflow.k8s_names import dns_label, label_value
from dss_airflow.operators.recipe import DSSContainerRecipeOperator, task_labels
from dss_airflow.spark import (
    SparkJob,
    build_pod_template,
    build_spark_application,
    build_spark_submit_command,
    image_reference,
    local_session_settings,
    params_env,
)
from dss_airflow.spec import PROJECT_DIR, ContainerSpec, ImageRef, RecipeRun

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence

    from airflow.sdk import Context

    from dss_airflow.config.catalog import Catalog
    from dss_airflow.config.resolve import ResolvedExecution
    from dss_airflow.staging import FolderRefs

#: Worker variables Spark needs on top of the local backend's pass-through list.
SPARK_PASSED_THROUGH = ("JAVA_HOME", "SPARK_LOCAL_IP")


def _is_uri(application: str) -> bool:
    return "://" in application


class DSSSparkOperator(DSSContainerRecipeOperator):
    """Run the PySpark ``application`` of a project on ``spark_config``.

    :param application: ``.py`` file relative to the project root (same checks as recipes); on a
        kubernetes spark config also a URI the cluster reads (``local:///...``, ``s3a://...``) (templated)
    :param spark_config: name of a ``spark_configs`` entry; may be omitted when only one is defined
        (templated; permissions are checked again at run time)
    :param code_env: code env of the job; on a local config (and for spark-submit) it must contain pyspark
    :param inputs: managed folders to read, as for recipes (local spark configs)
    :param outputs: managed folders to write, promoted atomically on success (local spark configs)
    :param recipe_params: JSON-serialisable parameters, ``dss_recipe.params()`` (templated)
    :param project: project name; defaults to ``defaults.project`` or the only project
    :param config_dir: config directory, when not the default (``$DSS_AIRFLOW_CONFIG``)
    """

    template_fields: Sequence[str] = (
        "application",
        "spark_config",
        "code_env",
        "inputs",
        "outputs",
        "recipe_params",
    )
    ui_color = "#e25a1c"
    task_kind = "Spark application"

    def __init__(
        self,
        *,
        application: str,
        spark_config: str | None = None,
        code_env: str | None = None,
        project: str | None = None,
        inputs: FolderRefs = None,
        outputs: FolderRefs = None,
        recipe_params: Mapping[str, Any] | None = None,
        config_dir: str | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(
            recipe=application,
            code_env=code_env,
            execution_config=LOCAL,
            project=project,
            inputs=inputs,
            outputs=outputs,
            recipe_params=recipe_params,
            config_dir=config_dir,
            **kwargs,
        )
        self.application = application
        self.spark_config = spark_config
        self._spark_settings: dict[str, Any] | None = None
        self._process: subprocess.Popen[str] | None = None
        self._spark_operator: Any = None
        self._validate_spark_at_parse_time()

    # ------------------------------------------------------------------------------ parse time
    def _validate_at_parse_time(self) -> None:
        """Replaced by :meth:`_validate_spark_at_parse_time`, which runs once our attributes exist."""

    def _validate_spark_at_parse_time(self) -> None:
        names = (self.application, self.spark_config, self.code_env, self.project)
        if any(is_templated(value) for value in names):
            return
        catalog = get_catalog(self.config_dir)
        self._resolve(catalog)
        if not (is_templated(self.inputs) or is_templated(self.outputs)):
            from dss_airflow.staging import validate_folder_refs

            validate_folder_refs(catalog, self.inputs, self.outputs)

    def _resolve(self, catalog: Catalog) -> tuple[ResolvedExecution, str, SparkConfig]:
        """Project, code env and spark config, checked: permission, pyspark, application path."""
        resolved = resolve_execution(
            catalog, project=self.project, execution_config=LOCAL, code_env=self.code_env
        )
        name = select_spark_config(catalog, self.spark_config)
        catalog.lookup("spark_configs", name, field="spark_config")
        check_permission(catalog, name, resolved.project_name, section="spark_configs")
        config = catalog.spark_configs[name]
        if isinstance(config, LocalSparkConfig) or config.mode == "spark-submit":
            check_env_has_pyspark(catalog, resolved.code_env_name)
        if isinstance(config, KubernetesSparkConfig):
            if self.inputs or self.outputs:
                raise ConfigError(
                    f"spark config {name!r} runs on Kubernetes, where managed-folder inputs and outputs are "
                    "not supported yet",
                    field="inputs/outputs",
                    fix="read and write cluster storage (s3a://, PVC paths) given in recipe_params, or use a "
                    "local spark config",
                )
            if _is_uri(self.application):
                return resolved, name, config
        resolve_recipe_path(resolved.project_root, self.application)
        return resolved, name, config

    # ------------------------------------------------------------------------------ run time
    def execute(self, context: Context) -> dict[str, Any]:
        catalog = get_catalog(self.config_dir)
        resolved, name, config = self._resolve(catalog)
        self.recipe = self.application
        self.execution_config = LOCAL
        self.log.info(
            "Spark job %s: project %r, code env %r, spark config %r (%s)",
            self.application,
            resolved.project_name,
            resolved.code_env_name,
            name,
            config.type if isinstance(config, LocalSparkConfig) else f"kubernetes, {config.mode}",
        )
        if isinstance(config, LocalSparkConfig):
            app_name = dns_label(context["ti"].dag_id, context["ti"].task_id)
            self._spark_settings = local_session_settings(config, app_name=app_name)
            result = super().execute(context)
            return {**result, "spark_config": name}
        job = self._cluster_job(catalog, resolved, config, context)
        if config.mode == "operator":
            self._run_spark_application(config, job, context)
        else:
            self._run_spark_submit(catalog, resolved, config, job)
        return {
            "status": "success",
            "application": self.application,
            "project": resolved.project_name,
            "code_env": resolved.code_env_name,
            "spark_config": name,
            "image": job.image,
            "name": job.name,
        }

    def _build_spec(
        self, catalog: Catalog, run: RecipeRun, unique: str, *, image: ImageRef | None = None
    ) -> ContainerSpec:
        """The recipe's spec, plus the spark settings ``dss_recipe.spark()`` reads."""
        spec = super()._build_spec(catalog, run, unique, image=image)
        if self._spark_settings is None:
            return spec
        env = {**spec.env, "DSS_SPARK": json.dumps(self._spark_settings, sort_keys=True)}
        env.update({name: os.environ[name] for name in SPARK_PASSED_THROUGH if name in os.environ})
        env.setdefault("SPARK_LOCAL_IP", "127.0.0.1")  # local mode: never depend on the host name
        return dataclasses.replace(spec, env=env)

    # ------------------------------------------------------------------------------ kubernetes
    def _cluster_job(
        self, catalog: Catalog, resolved: ResolvedExecution, config: KubernetesSparkConfig, context: Context
    ) -> SparkJob:
        ti = context["ti"]
        if _is_uri(self.application):
            application = self.application
        else:
            _, relative, _ = resolve_recipe_path(resolved.project_root, self.application)
            application = f"local://{PROJECT_DIR}/{relative}"
        labels = {
            f"dss-airflow/{key.split('.', 1)[1]}": label_value(value)
            for key, value in task_labels(context).items()
        }
        return SparkJob(
            name=dns_label(ti.dag_id, ti.task_id, max_length=40),
            image=image_reference(config, catalog.base_images[config.base_image].image),
            main_application_file=application,
            labels={**labels, "dss-airflow/project": label_value(resolved.project_name)},
            env={
                "DSS_CODE_ENV": resolved.code_env_name,
                "DSS_PROJECT": resolved.project_name,
                **params_env(self.recipe_params),
            },
        )

    def _run_spark_application(self, config: KubernetesSparkConfig, job: SparkJob, context: Context) -> None:
        """Create the SparkApplication through the provider, with our spec passed through untouched.

        ``template_spec`` without ``driver.container_resources`` skips the provider's SparkResources mapping
        (int() of cores, memory / 1.4), and without a ``kubernetes:`` section nothing overwrites
        nodeSelector, tolerations or volumes. The provider still sets metadata.name/namespace, adds task
        labels and the SPARK_APPLICATION_NAME env var.
        """
        from airflow.providers.cncf.kubernetes.operators.spark_kubernetes import SparkKubernetesOperator
        from airflow.sdk.bases.operator import ExecutorSafeguard

        operator = SparkKubernetesOperator(
            task_id=f"{self.task_id}.spark",
            template_spec={"spark": build_spark_application(config, job)},
            namespace=config.namespace,
            name=job.name,
            kubernetes_conn_id=config.kubernetes_conn_id,  # type: ignore[arg-type]
            cluster_context=config.context,
            get_logs=True,
            delete_on_termination=True,
            reattach_on_restart=True,
        )
        self._spark_operator = operator
        sentinel = {f"{type(operator).__name__}__sentinel": ExecutorSafeguard.sentinel_value}
        operator.execute(context, **sentinel)

    def _run_spark_submit(
        self, catalog: Catalog, resolved: ResolvedExecution, config: KubernetesSparkConfig, job: SparkJob
    ) -> None:
        from dss_airflow.backends.local import PASSED_THROUGH, ensure_venv
        from dss_airflow.settings import cache_dir

        python = ensure_venv(
            resolved.code_env_name,
            resolved.code_env.python,
            catalog.requirements(resolved.code_env_name),
            cache_dir(),
        )
        api_server = config.api_server or _api_server_of(config)
        with tempfile.TemporaryDirectory(prefix="dss-spark-submit-") as scratch:
            template = build_pod_template(config)
            template_file = None
            if template is not None:
                template_file = str(Path(scratch) / "pod-template.json")
                Path(template_file).write_text(json.dumps(template), encoding="utf-8")
            argv = build_spark_submit_command(
                config,
                job,
                api_server=api_server,
                spark_submit=str(python.parent / "spark-submit"),
                pod_template_file=template_file,
            )
            passed = (*PASSED_THROUGH, *SPARK_PASSED_THROUGH)
            env = {name: os.environ[name] for name in passed if name in os.environ}
            self.log.info("Running: %s", " ".join(argv))
            tail: deque[str] = deque(maxlen=50)
            self._process = subprocess.Popen(
                argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1
            )
            assert self._process.stdout is not None
            for line in self._process.stdout:
                tail.append(line.rstrip("\n"))
                self.log.info("%s", tail[-1])
            code = self._process.wait()
        if code != 0:
            raise ExecutionError(f"spark-submit exited with code {code}", logs=list(tail), exit_code=code)

    def on_kill(self) -> None:
        if self._spark_operator is not None:
            self._spark_operator.on_kill()
        if self._process is not None and self._process.poll() is None:
            self._process.terminate()
        super().on_kill()


def select_spark_config(catalog: Catalog, name: str | None) -> str:
    """The named spark config, or the only one defined."""
    if name is None:
        if len(catalog.spark_configs) == 1:
            return next(iter(catalog.spark_configs))
        raise ConfigError(
            "no spark config given" if catalog.spark_configs else "no spark config is defined",
            field="spark_config",
            fix="pass spark_config=... to the operator"
            + (
                f" (spark configs: {', '.join(sorted(catalog.spark_configs))})"
                if catalog.spark_configs
                else "; an admin defines them in the 'spark_configs' section"
            ),
        )
    catalog.lookup("spark_configs", name, field="spark_config")
    return name


def check_env_has_pyspark(catalog: Catalog, env_name: str) -> None:
    """A Spark job's code env must install pyspark (unmanaged envs are taken on trust)."""
    env = catalog.code_envs[env_name]
    if not env.managed:
        return
    names = {requirement_name(line) for line in catalog.requirements(env_name)}
    if "pyspark" in names:
        return
    file, line = catalog.where("code_envs", env_name)
    raise ConfigError(
        f"code env {env_name!r} does not contain pyspark, which Spark jobs need",
        file=file,
        line=line,
        field=f"code_envs.{env_name}.packages",
        fix=f"add a pyspark line (e.g. 'pyspark==4.0.1') to the packages of code env {env_name!r}, or pass "
        "code_env=... naming an env that has it",
    )


def _api_server_of(config: KubernetesSparkConfig) -> str:
    """The API server URL of the config's connection (or kubeconfig context), for --master k8s://."""
    from airflow.providers.cncf.kubernetes.hooks.kubernetes import KubernetesHook

    hook = KubernetesHook(conn_id=config.kubernetes_conn_id, cluster_context=config.context)
    return str(hook.api_client.configuration.host)
