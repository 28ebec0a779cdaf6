"""Pure builders for Spark runs: the local session settings, the ``SparkApplication`` and the
``spark-submit`` command of a spark config. No Kubernetes, pyspark or filesystem access here.

Resources reach Spark exactly as the admin wrote them, unlike the cncf-kubernetes provider's
``container_resources`` mapping (which truncates 0.5 CPU to 0 and divides memory by 1.4):

* ``cores: 0.5`` becomes the pod's CPU request ``coreRequest: "0.5"``
  (``spark.kubernetes.{driver,executor}.request.cores``); Spark's own ``cores`` (task slots, an integer
  >= 1 in the CRD) is the value rounded *up*, never 0.
* ``memory: 4Gi`` becomes ``4g``: the same number of bytes in the JVM notation Spark parses (it refuses
  Kubernetes suffixes such as ``Gi``). Decimal quantities are converted exactly (``4G`` -> ``3906250k``).
  The pod requests memory + overhead, as Spark computes it; set ``memory_overhead`` to control it.
* node selector and tolerations go on the driver and on the executors.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from dss_airflow.config.quantities import parse_k8s_quantity

if TYPE_CHECKING:
    from collections.abc import Mapping

    from dss_airflow.config.spark import KubernetesSparkConfig, LocalSparkConfig, SparkDriver
    from dss_airflow.spec import MountSpec

API_VERSION = "sparkoperator.k8s.io/v1beta2"
#: Local-mode defaults: no UI port to collide with other tasks, and no dependency on the host name.
LOCAL_DEFAULTS = {
    "spark.ui.enabled": "false",
    "spark.driver.host": "127.0.0.1",
    "spark.driver.bindAddress": "127.0.0.1",
}
_JVM_UNITS = (("t", 2**40), ("g", 2**30), ("m", 2**20), ("k", 2**10))


@dataclass(frozen=True)
class SparkJob:
    """What to run on a cluster: a name (DNS label), the image, the application and its arguments, and
    what the driver and executors mount (PVC directories: ``MountSpec`` with a claim)."""

    name: str
    image: str
    main_application_file: str
    arguments: tuple[str, ...] = ()
    labels: Mapping[str, str] = field(default_factory=dict)
    env: Mapping[str, str] = field(default_factory=dict)
    #: PVC directories mounted in the driver and every executor (project, input and output folders).
    mounts: tuple[MountSpec, ...] = ()
    #: emptyDir volumes of the driver only: {volume name: mount path} (its run directory, the XCom file).
    driver_scratch: Mapping[str, str] = field(default_factory=dict)
    #: Extra driver containers (the provider's XCom sidecar), as Kubernetes JSON.
    driver_sidecars: tuple[Mapping[str, Any], ...] = ()
    #: The Python that runs the application and its workers (the code env's), when not the image's.
    python: str | None = None


def spark_memory(quantity: str) -> str:
    """A Kubernetes memory quantity in Spark's JVM notation, the same number of bytes: 4Gi -> 4g."""
    amount = parse_k8s_quantity(quantity)
    if amount != amount.to_integral_value() or amount <= 0:
        raise ValueError(f"{quantity!r} is not a whole number of bytes")
    size = int(amount)
    for suffix, unit in _JVM_UNITS:
        if size % unit == 0:
            return f"{size // unit}{suffix}"
    return f"{size}b"


def spark_cores(cores: float) -> int:
    """Spark's task slots for a CPU amount: rounded up, so a fraction never becomes 0."""
    return max(1, math.ceil(cores))


def core_quantity(cores: float) -> str:
    """The CPU amount as written (0.5 -> "0.5", 2.0 -> "2"), for the pod's request."""
    return format(Decimal(str(cores)).normalize(), "f")


# ------------------------------------------------------------------------------------------- local
def local_session_settings(config: LocalSparkConfig, *, app_name: str) -> dict[str, Any]:
    """What ``dss_recipe.spark()`` builds its SparkSession from (passed to the run as JSON)."""
    return {"master": config.master, "app_name": app_name, "conf": {**LOCAL_DEFAULTS, **config.conf}}


# ------------------------------------------------------------------------------------------ shared
def _tolerations(config: KubernetesSparkConfig) -> list[dict[str, Any]]:
    return [t.model_dump(by_alias=True, exclude_none=True) for t in config.tolerations]


def _env_list(env: Mapping[str, str]) -> list[dict[str, str]]:
    return [{"name": name, "value": value} for name, value in sorted(env.items())]


# ---------------------------------------------------------------------------- SparkApplication
def _component(config: KubernetesSparkConfig, resources: SparkDriver, job: SparkJob) -> dict[str, Any]:
    component: dict[str, Any] = {
        "cores": spark_cores(resources.cores),
        "coreRequest": core_quantity(resources.cores),
        "memory": spark_memory(resources.memory),
        "labels": dict(job.labels),
    }
    if resources.core_limit is not None:
        component["coreLimit"] = resources.core_limit
    if resources.memory_overhead is not None:
        component["memoryOverhead"] = spark_memory(resources.memory_overhead)
    if config.node_selector:
        component["nodeSelector"] = dict(config.node_selector)
    if config.tolerations:
        component["tolerations"] = _tolerations(config)
    if config.service_account:
        component["serviceAccount"] = config.service_account
    if job.env:
        component["env"] = _env_list(job.env)
    if job.mounts:
        component["volumeMounts"] = [_volume_mount(index, mount) for index, mount in enumerate(job.mounts)]
    return component


def _volume_name(index: int) -> str:
    return f"dss-{index}"


def _volume_mount(index: int, mount: MountSpec) -> dict[str, Any]:
    volume_mount: dict[str, Any] = {"name": _volume_name(index), "mountPath": mount.target}
    if mount.source:
        volume_mount["subPath"] = mount.source
    volume_mount["readOnly"] = mount.read_only
    return volume_mount


def _volumes(job: SparkJob) -> list[dict[str, Any]]:
    """One volume per mount (Spark's own conf names a volume per mount), then the driver's emptyDirs."""
    volumes: list[dict[str, Any]] = [
        {
            "name": _volume_name(index),
            "persistentVolumeClaim": {"claimName": mount.claim, "readOnly": mount.read_only},
        }
        for index, mount in enumerate(job.mounts)
    ]
    return volumes + [{"name": name, "emptyDir": {}} for name in job.driver_scratch]


def _python_conf(job: SparkJob) -> dict[str, str]:
    if job.python is None:
        return {}
    return {"spark.pyspark.python": job.python, "spark.pyspark.driver.python": job.python}


def build_spark_application(config: KubernetesSparkConfig, job: SparkJob) -> dict[str, Any]:
    """The ``SparkApplication`` (spark-operator CRD v1beta2) of one run, with every field set explicitly."""
    spec: dict[str, Any] = {
        "type": "Python",
        "pythonVersion": "3",
        "mode": "cluster",
        "image": job.image,
        "imagePullPolicy": "IfNotPresent",
        "mainApplicationFile": job.main_application_file,
        "arguments": list(job.arguments),
        "sparkVersion": config.spark_version,
        "sparkConf": {**config.conf, **_python_conf(job)},
        "restartPolicy": {"type": "Never"},
        "driver": _component(config, config.driver, job),
        "executor": {
            **_component(config, config.executor, job),
            "instances": config.executor.instances,
        },
    }
    driver = spec["driver"]
    if job.driver_scratch:
        scratch = [{"name": name, "mountPath": path} for name, path in job.driver_scratch.items()]
        driver["volumeMounts"] = [*driver.get("volumeMounts", []), *scratch]
    if job.driver_sidecars:
        driver["sidecars"] = [dict(sidecar) for sidecar in job.driver_sidecars]
    if job.mounts or job.driver_scratch:
        spec["volumes"] = _volumes(job)
    if config.image_pull_secrets:
        spec["imagePullSecrets"] = list(config.image_pull_secrets)
    return {
        "apiVersion": API_VERSION,
        "kind": "SparkApplication",
        "metadata": {"name": job.name, "namespace": config.namespace, "labels": dict(job.labels)},
        "spec": spec,
    }


# ---------------------------------------------------------------------------------- spark-submit
def spark_submit_conf(config: KubernetesSparkConfig, job: SparkJob) -> dict[str, str]:
    """Every setting of a cluster-mode spark-submit as Spark properties (user conf first, ours win)."""
    conf: dict[str, str] = dict(config.conf)
    conf.update(
        {
            "spark.kubernetes.container.image": job.image,
            "spark.kubernetes.namespace": config.namespace,
            "spark.kubernetes.submission.waitAppCompletion": "true",
        }
    )
    if config.context:
        conf["spark.kubernetes.context"] = config.context
    if config.service_account:
        conf["spark.kubernetes.authenticate.driver.serviceAccountName"] = config.service_account
    if config.image_pull_secrets:
        conf["spark.kubernetes.container.image.pullSecrets"] = ",".join(config.image_pull_secrets)
    for role, resources in (("driver", config.driver), ("executor", config.executor)):
        conf[f"spark.{role}.cores"] = str(spark_cores(resources.cores))
        conf[f"spark.kubernetes.{role}.request.cores"] = core_quantity(resources.cores)
        if resources.core_limit is not None:
            conf[f"spark.kubernetes.{role}.limit.cores"] = resources.core_limit
        conf[f"spark.{role}.memory"] = spark_memory(resources.memory)
        if resources.memory_overhead is not None:
            conf[f"spark.{role}.memoryOverhead"] = spark_memory(resources.memory_overhead)
        for key, value in job.labels.items():
            conf[f"spark.kubernetes.{role}.label.{key}"] = value
    conf["spark.executor.instances"] = str(config.executor.instances)
    for key, value in config.node_selector.items():
        conf[f"spark.kubernetes.node.selector.{key}"] = value
    for key, value in job.env.items():
        conf[f"spark.kubernetes.driverEnv.{key}"] = value
        conf[f"spark.executorEnv.{key}"] = value
    return {**conf, **_python_conf(job), **_volume_conf(job)}


def _volume_conf(job: SparkJob) -> dict[str, str]:
    """The job's PVC mounts (driver and executors) and driver emptyDirs as spark-submit properties."""
    conf: dict[str, str] = {}
    for role in ("driver", "executor"):
        for index, mount in enumerate(job.mounts):
            prefix = f"spark.kubernetes.{role}.volumes.persistentVolumeClaim.{_volume_name(index)}"
            conf[f"{prefix}.options.claimName"] = str(mount.claim)
            conf[f"{prefix}.mount.path"] = mount.target
            if mount.source:
                conf[f"{prefix}.mount.subPath"] = mount.source
            conf[f"{prefix}.mount.readOnly"] = str(mount.read_only).lower()
    for name, path in job.driver_scratch.items():
        conf[f"spark.kubernetes.driver.volumes.emptyDir.{name}.mount.path"] = path
    return conf


def build_pod_template(config: KubernetesSparkConfig) -> dict[str, Any] | None:
    """Tolerations have no Spark property: spark-submit takes them from a pod template file."""
    if not config.tolerations:
        return None
    return {"apiVersion": "v1", "kind": "Pod", "spec": {"tolerations": _tolerations(config)}}


def build_spark_submit_command(
    config: KubernetesSparkConfig,
    job: SparkJob,
    *,
    api_server: str,
    spark_submit: str = "spark-submit",
    pod_template_file: str | None = None,
    driver_pod_name: str | None = None,
) -> list[str]:
    """``spark-submit --master k8s://<api server> --deploy-mode cluster --conf k=v ... app args``."""
    conf = spark_submit_conf(config, job)
    if driver_pod_name is not None:
        conf["spark.kubernetes.driver.pod.name"] = driver_pod_name
    if pod_template_file is not None:
        conf["spark.kubernetes.driver.podTemplateFile"] = pod_template_file
        conf["spark.kubernetes.executor.podTemplateFile"] = pod_template_file
    argv = [spark_submit, "--master", f"k8s://{api_server}", "--deploy-mode", "cluster", "--name", job.name]
    for key, value in conf.items():
        argv += ["--conf", f"{key}={value}"]
    return [*argv, job.main_application_file, *job.arguments]


def params_env(params: Mapping[str, Any]) -> dict[str, str]:
    """Recipe parameters for a cluster run, where no context file exists: JSON in DSS_RECIPE_PARAMS."""
    return {"DSS_RECIPE_PARAMS": json.dumps(dict(params), sort_keys=True)} if params else {}
