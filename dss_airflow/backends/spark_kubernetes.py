"""Spark on Kubernetes backend: a task run as a Spark application in the code env's image.

The driver runs the dss_airflow runner (``local:///opt/dss-airflow/runtime/runner.py -``) on the same
context as a pod would get — the project and managed folders mounted from their PVCs (on the executors
too, so they read inputs and write output parts), outputs staged in the PVC and promoted by the runner
after a success — and ``dss_recipe.spark()`` returns the cluster session. Two ways to submit, both from the
pure builders of :mod:`dss_airflow.spark`:

* ``mode: operator``: a ``SparkApplication`` through the provider's ``SparkKubernetesOperator`` (composed,
  with our full ``template_spec``), with the provider's XCom sidecar in the driver, so the runner's
  result comes back through the provider's own XCom extraction, as for pods;
* ``mode: spark-submit``: ``spark-submit --master k8s://...`` from the code env's local virtualenv; the
  runner prints its result as its last log line, read from the driver pod, which is then deleted.

An application given by URI (``s3a://...``) runs as is: no runner, no folders, params in
``DSS_RECIPE_PARAMS``.
"""

from __future__ import annotations

import dataclasses
import json
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

from dss_airflow.backends.base import RunResult, execute_composed
from dss_airflow.backends.kubernetes import (
    PodBackend,
    container_security_context,
    isolated_operator_class,
    promoted_in_cluster,
)
from dss_airflow.backends.local import stop_process_group, stream_process, venv_python, worker_env
from dss_airflow.config.spark import KubernetesSparkConfig
from dss_airflow.errors import ExecutionError
from dss_airflow.hooks.kubernetes import make_hook
from dss_airflow.k8s_names import dns_label, k8s_labels
from dss_airflow.runtime.runner import RESULT_LINE_PREFIX
from dss_airflow.spark import (
    SparkJob,
    build_pod_template,
    build_spark_application,
    build_spark_submit_command,
    params_env,
)
from dss_airflow.spec import LABEL_PREFIX, RUN_DIR, RUNTIME_DIR

if TYPE_CHECKING:
    import subprocess
    from collections.abc import Mapping

    from airflow.sdk import Context

    from dss_airflow.spec import ContainerSpec, TaskRun

RUNNER = f"local://{RUNTIME_DIR}/runner.py"
XCOM_DIR = "/airflow/xcom"
#: Worker variables spark-submit needs on top of the usual pass-through list.
SPARK_SUBMIT_PASSED_THROUGH = ("JAVA_HOME", "SPARK_HOME", "KUBECONFIG")


class SparkKubernetesBackend(PodBackend):
    """Runs a task run as a Spark application of a kubernetes spark config."""

    #: Not yet: the driver and executors would each need the Secret volume (driver.secrets, executor...).
    delivers_secrets = False

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        config = self.resolved.spark_config
        assert isinstance(config, KubernetesSparkConfig)
        self.config = config
        self._operator: Any = None
        self._process: subprocess.Popen[str] | None = None
        self._driver: str | None = None

    def prepare(self, run: TaskRun) -> ContainerSpec:
        spec = super().prepare(run)
        if self.config.mode == "spark-submit":  # no XCom sidecar: the result travels in the driver's log
            context = {**spec.context, "result_file": f"{RUN_DIR}/result.json", "print_result": True}
            spec = dataclasses.replace(spec, context=context)
        return spec

    def job(self, spec: ContainerSpec) -> SparkJob:
        """The Spark application of a spec (pure, apart from reading the provider's sidecar default)."""
        assert spec.image is not None
        labels = k8s_labels(spec.labels, f"{LABEL_PREFIX}.")
        name = dns_label(
            spec.labels.get(f"{LABEL_PREFIX}.dag_id", "dss"), spec.labels.get(f"{LABEL_PREFIX}.task_id", ""),
            max_length=40,
        )  # fmt: skip
        uri = spec.context.get("recipe") if "://" in str(spec.context.get("recipe")) else None
        if uri is not None:  # an application the cluster reads: as is
            env = {**spec.env, **params_env(spec.context.get("params", {}))}
            return SparkJob(name, spec.image, main_application_file=str(uri), labels=labels, env=env)
        scratch = {"dss-run": RUN_DIR}
        sidecars: tuple[Mapping[str, Any], ...] = ()
        if self.config.mode == "operator":
            scratch["xcom"] = XCOM_DIR
            sidecars = (xcom_sidecar(),)
        return SparkJob(
            name=name,
            image=spec.image,
            main_application_file=RUNNER,
            arguments=("-",),
            labels=labels,
            env={**spec.env, "DSS_CONTEXT_JSON": json.dumps(spec.context, sort_keys=True)},
            mounts=spec.mounts,
            driver_scratch=scratch,
            driver_sidecars=sidecars,
            python=spec.command[0],
        )

    def run(self, spec: ContainerSpec, context: Context) -> RunResult:
        job = self.job(spec)
        try:
            if self.config.mode == "operator":
                result = self._run_spark_application(job, context)
            else:
                result = self._run_spark_submit(job, spec)
        except ExecutionError as exc:
            return RunResult(None, failure=exc)
        if self._killed:
            return RunResult(None, failure=ExecutionError(f"Spark application {job.name} was killed"))
        if job.main_application_file != RUNNER:
            result = {"status": "success", "outputs": {}}
        return RunResult(result, promoted_in_cluster(spec, result))

    def _run_spark_application(self, job: SparkJob, context: Context) -> dict[str, Any] | None:
        """The SparkApplication through the provider, our spec passed through untouched.

        ``template_spec`` without ``driver.container_resources`` skips the provider's SparkResources
        mapping (int() of cores, memory / 1.4), and without a ``kubernetes:`` section nothing overwrites
        node selectors, tolerations or volumes. The provider still sets metadata.name/namespace, adds task
        labels and the SPARK_APPLICATION_NAME env var.
        """
        from airflow.providers.cncf.kubernetes.operators.spark_kubernetes import SparkKubernetesOperator

        operator: Any = isolated_operator_class(SparkKubernetesOperator)(
            task_id=f"{context['ti'].task_id}.spark",
            template_spec={"spark": build_spark_application(self.config, job)},
            namespace=self.config.namespace,
            name=job.name,
            kubernetes_conn_id=self.config.kubernetes_conn_id,
            cluster_context=self.config.context,
            get_logs=True,
            do_xcom_push=job.main_application_file == RUNNER,
            delete_on_termination=True,
            reattach_on_restart=True,
        )
        self._operator = operator
        self.log.info("Running Spark application %s/%s: image %s", self.config.namespace, job.name, job.image)
        try:
            returned = execute_composed(operator, context)
        except Exception as exc:  # the provider raises AirflowException / ApiException / its own types
            if isinstance(operator.runner_result, dict) and operator.runner_result.get("status") == "failed":
                return dict(operator.runner_result)  # the application's own failure, reported by the runner
            raise ExecutionError(f"Spark application {job.name} failed: {exc}") from exc
        raw = operator.runner_result if operator.runner_result is not None else returned
        return raw if isinstance(raw, dict) else None

    def _run_spark_submit(self, job: SparkJob, spec: ContainerSpec) -> dict[str, Any] | None:
        driver = f"{dns_label(spec.name, max_length=55)}-driver"  # unique per try, as container names
        self._driver = driver
        python = venv_python(self.catalog, self.resolved)  # spark-submit itself comes with pyspark
        api_server = self.config.api_server or _api_server_of(self.config)
        with tempfile.TemporaryDirectory(prefix="dss-spark-submit-") as scratch:
            template = build_pod_template(self.config)
            template_file = None
            if template is not None:
                template_file = str(Path(scratch) / "pod-template.json")
                Path(template_file).write_text(json.dumps(template), encoding="utf-8")
            argv = build_spark_submit_command(
                self.config,
                job,
                api_server=api_server,
                spark_submit=str(python.parent / "spark-submit"),
                pod_template_file=template_file,
                driver_pod_name=driver,
            )
            self.log.info("Running: %s", " ".join(argv[:8]) + " ...")
            code, tail = stream_process(
                argv, env=worker_env(SPARK_SUBMIT_PASSED_THROUGH), logger=self.log, started=self._started
            )
        result = self._driver_result(driver) if job.main_application_file == RUNNER else None
        if code != 0 and not (result is not None and result.get("status") == "failed"):
            raise ExecutionError(f"spark-submit exited with code {code}", logs=tail, exit_code=code)
        return result

    def _driver_result(self, driver: str) -> dict[str, Any] | None:
        """The runner's result from the driver pod's log; the pod is deleted afterwards."""
        hook = make_hook(self.config.kubernetes_conn_id, self.config.context)
        core = hook.core_v1_client
        namespace = self.config.namespace
        try:
            return result_from_log(str(core.read_namespaced_pod_log(name=driver, namespace=namespace)))
        except Exception as exc:  # no pod (never scheduled), no permission: the exit code tells the rest
            self.log.warning("Could not read the log of driver pod %s/%s: %s", namespace, driver, exc)
            return None
        finally:
            self._delete_driver(driver)

    def _started(self, process: subprocess.Popen[str]) -> None:
        self._process = process

    def kill(self) -> None:
        super().kill()
        if self._operator is not None:
            self._operator.on_kill()
        stop_process_group(self._process, self.log)
        if self._driver is not None:  # cluster mode: the driver runs on without its local spark-submit
            self._delete_driver(self._driver)

    def _delete_driver(self, driver: str) -> None:
        hook = make_hook(self.config.kubernetes_conn_id, self.config.context)
        try:
            hook.core_v1_client.delete_namespaced_pod(name=driver, namespace=self.config.namespace)
            self.log.info("Deleted driver pod %s/%s", self.config.namespace, driver)
        except Exception as exc:  # never started, or already gone
            self.log.info("Driver pod %s/%s not deleted: %s", self.config.namespace, driver, exc)


def result_from_log(log_text: str) -> dict[str, Any] | None:
    """The runner's result: its last ``[dss-airflow] result-json:`` line."""
    for line in reversed(log_text.splitlines()):
        if line.startswith(RESULT_LINE_PREFIX):
            data = json.loads(line[len(RESULT_LINE_PREFIX) :])
            return data if isinstance(data, dict) else None
    return None


def xcom_sidecar() -> dict[str, Any]:
    """The provider's XCom sidecar container (its pinned image and command), as Kubernetes JSON, with the
    restricted security context our pods give it."""
    from airflow.providers.cncf.kubernetes.utils.xcom_sidecar import PodDefaults
    from kubernetes.client import ApiClient

    sidecar = ApiClient().sanitize_for_serialization(PodDefaults.SIDECAR_CONTAINER)
    sidecar["securityContext"] = ApiClient().sanitize_for_serialization(container_security_context())
    return dict(sidecar)


def _api_server_of(config: KubernetesSparkConfig) -> str:
    """The API server URL of the config's connection (or kubeconfig context), for --master k8s://."""
    hook = make_hook(config.kubernetes_conn_id, config.context)
    return str(hook.api_client.configuration.host)
