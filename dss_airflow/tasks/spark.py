"""Spark applications: a PySpark file of the project, run where its spark config says.

A ``type: local`` spark config runs it as a recipe on the local backend (the code env's virtualenv, which
must contain pyspark); a ``type: kubernetes`` one on the Spark-on-Kubernetes backend, in the code env's
image built for that spark config. Either way ``dss_recipe.spark()`` gives the session, inputs are read
from managed folders and outputs staged, then promoted after a success. On a kubernetes config the
application may also be a URI the cluster reads (``s3a://...``, ``local:///...``), run as is (no folders).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field, replace
from pathlib import PurePosixPath
from typing import TYPE_CHECKING, Any

from dss_airflow.config.models import LOCAL
from dss_airflow.config.requirements import requirement_name
from dss_airflow.config.resolve import check_permission, is_templated, resolve_recipe_path
from dss_airflow.config.spark import KubernetesSparkConfig, LocalSparkConfig
from dss_airflow.errors import ConfigError
from dss_airflow.k8s_names import dns_label
from dss_airflow.spark import local_session_settings
from dss_airflow.spec import Entrypoint
from dss_airflow.staging import validate_folder_refs
from dss_airflow.tasks.base import Placement, TaskKind, TaskPlan

if TYPE_CHECKING:
    from collections.abc import Mapping

    from dss_airflow.backends.base import TaskLog
    from dss_airflow.config.catalog import Catalog
    from dss_airflow.config.resolve import ResolvedExecution
    from dss_airflow.staging import FolderRefs
    from dss_airflow.tasks.base import Ran

#: Worker variables local Spark needs (the JVM, and a bind address independent of the host name).
SPARK_PASSED_THROUGH = ("JAVA_HOME", "SPARK_LOCAL_IP")


def is_uri(application: str) -> bool:
    return "://" in application


@dataclass(frozen=True)
class SparkTask(TaskKind):
    """``application`` on ``spark_config`` (or the only spark config defined)."""

    kind = "Spark application"

    placement: Placement
    application: str
    spark_config: str | None = None
    inputs: FolderRefs = None
    outputs: FolderRefs = None
    params: Mapping[str, Any] = field(default_factory=dict)

    def check(self, catalog: Catalog) -> ResolvedExecution | None:
        names = (self.application, self.spark_config, self.placement.code_env, self.placement.project)
        if any(is_templated(value) for value in names):
            return None
        resolved = self.resolve(catalog)
        if not (is_templated(self.inputs) or is_templated(self.outputs)):
            validate_folder_refs(catalog, self.inputs, self.outputs)
        return resolved

    def resolve(self, catalog: Catalog) -> ResolvedExecution:
        """Project, code env and spark config, checked: permission, pyspark, the application."""
        resolved = replace(self.placement, execution_config=LOCAL, cluster=None).resolve(catalog)
        name = select_spark_config(catalog, self.spark_config)
        check_permission(catalog, name, resolved.project_name, section="spark_configs")
        config = catalog.spark_configs[name]
        check_env_has_pyspark(catalog, resolved.code_env_name)
        if is_uri(self.application):
            if not isinstance(config, KubernetesSparkConfig):
                raise ConfigError(
                    f"spark config {name!r} runs locally, where the application is a project file",
                    field="application",
                    value=self.application,
                    fix="give a .py file relative to the project root, or use a kubernetes spark config",
                )
            if self.inputs or self.outputs:
                raise ConfigError(
                    "an application given by URI runs as is, without managed-folder inputs and outputs",
                    field="inputs/outputs",
                    fix="put the application in the project (a .py file) to use managed folders, or read "
                    "and write cluster storage given in recipe_params",
                )
        else:
            resolve_recipe_path(resolved.project_root, self.application)
        return replace(resolved, spark_config_name=name, spark_config=config)

    def plan(self, catalog: Catalog, resolved: ResolvedExecution, ti: Any) -> TaskPlan:
        config = resolved.spark_config
        label = f"{self.kind} {self.application}"
        if is_uri(self.application):
            entrypoint = Entrypoint(PurePosixPath(self.application), uri=self.application)
        else:
            _, relative, language = resolve_recipe_path(resolved.project_root, self.application)
            entrypoint = Entrypoint(relative, language)
        env: dict[str, str] = {}
        if isinstance(config, LocalSparkConfig):
            settings = local_session_settings(config, app_name=dns_label(ti.dag_id, ti.task_id))
            env = {name: os.environ[name] for name in SPARK_PASSED_THROUGH if name in os.environ}
            env.setdefault("SPARK_LOCAL_IP", "127.0.0.1")  # local mode: never depend on the host name
            env["DSS_SPARK"] = json.dumps(settings, sort_keys=True)
        else:  # cluster mode: spark-submit / the spark-operator set the master; the session only its name
            env["DSS_SPARK"] = json.dumps({"master": None, "app_name": dns_label(ti.dag_id, ti.task_id)})
        return TaskPlan(label, entrypoint, self.inputs, self.outputs, dict(self.params), env)

    def outcome(self, ran: Ran, log: TaskLog) -> dict[str, Any]:
        return {"application": self.application, **ran.xcom(), "spark_config": ran.resolved.spark_config_name}


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
