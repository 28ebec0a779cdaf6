"""Backends: where a planned task run executes. :func:`backend_for` picks one by the resolved config.

Each backend lives in one module (``local``, ``docker``, ``kubernetes``, ``spark_kubernetes``) and implements
:class:`~dss_airflow.backends.base.Backend`; they are imported here only when a task runs, never when a DAG
is parsed (the Docker and Kubernetes clients are heavy).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from dss_airflow.config.models import DockerExecutionConfig, KubernetesExecutionConfig

if TYPE_CHECKING:
    from dss_airflow.backends.base import Backend, RunOptions, TaskLog
    from dss_airflow.config.catalog import Catalog
    from dss_airflow.config.resolve import ResolvedExecution


def backend_for(
    catalog: Catalog,
    resolved: ResolvedExecution,
    logger: TaskLog | None = None,
    options: RunOptions | None = None,
) -> Backend:
    """The backend of a resolved execution: its spark config's when it has one, else its execution
    config's type. Backends are imported here, when a task runs, never at DAG-parse time."""
    backend_class: type[Backend]
    if resolved.spark_config is not None and resolved.spark_config.is_cluster:
        from dss_airflow.backends.spark_kubernetes import SparkKubernetesBackend

        backend_class = SparkKubernetesBackend
    elif isinstance(resolved.execution_config, KubernetesExecutionConfig):
        from dss_airflow.backends.kubernetes import KubernetesBackend

        backend_class = KubernetesBackend
    elif isinstance(resolved.execution_config, DockerExecutionConfig):
        from dss_airflow.backends.docker import DockerBackend

        backend_class = DockerBackend
    else:
        from dss_airflow.backends.local import LocalBackend

        backend_class = LocalBackend
    return backend_class(catalog, resolved, logger, options)
