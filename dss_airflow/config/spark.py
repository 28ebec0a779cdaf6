"""Spark configurations (``spark_configs``): where a :class:`~dss_airflow.operators.spark.DSSSparkOperator`
job runs, as DSS's "Spark configurations" do.

* ``type: local`` runs the PySpark application in the code env's local virtualenv, through the same
  recipe machinery as any recipe (inputs, atomic outputs), with ``master`` (default ``local[2]``).
* ``type: kubernetes`` submits it to a cluster, as a ``SparkApplication`` of the spark-operator
  (``mode: operator``) or with ``spark-submit --master k8s://...`` (``mode: spark-submit``).

Resources are Kubernetes quantities, checked at load time; they are handed to Spark without the lossy
conversions of the cncf-kubernetes provider (see :mod:`dss_airflow.spark`).
"""

from __future__ import annotations

import re
from decimal import Decimal
from typing import Annotated, Any, ClassVar, Literal

from pydantic import AfterValidator, BeforeValidator, Field, PositiveFloat, model_validator

from dss_airflow.config.models import (
    DnsLabel,
    GroupRestricted,
    KubernetesQuantity,
    RegistryConfig,
    StrictModel,
    Toleration,
)
from dss_airflow.config.quantities import parse_k8s_quantity

_SPARK_KEY = re.compile(r"^spark\.[A-Za-z0-9_.\-]+$")
#: Conf keys that would carry a credential: those belong in an Airflow connection or a Kubernetes secret.
_SECRET_KEY = re.compile(r"(password|secret|token|credential|keytab|oauth|access\.?key)", re.IGNORECASE)
_LOCAL_MASTER = re.compile(r"^local(\[(\*|\d+)(,\s*\d+)?\])?$")
#: Spark properties a kubernetes spark config sets from its own fields (conf may not override them).
MODELLED_PROPERTIES = {
    "spark.kubernetes.container.image": "base_image",
    "spark.kubernetes.namespace": "namespace",
    "spark.kubernetes.context": "context",
    "spark.kubernetes.authenticate.driver.serviceAccountName": "service_account",
    "spark.kubernetes.container.image.pullSecrets": "image_pull_secrets",
    "spark.executor.instances": "executor.instances",
    **{
        key.format(role=role): f"{role}.{field}"
        for role in ("driver", "executor")
        for key, field in (
            ("spark.{role}.cores", "cores"),
            ("spark.kubernetes.{role}.request.cores", "cores"),
            ("spark.kubernetes.{role}.limit.cores", "core_limit"),
            ("spark.{role}.memory", "memory"),
            ("spark.{role}.memoryOverhead", "memory_overhead"),
        )
    },
}
#: Smallest memory Spark accepts for a driver or an executor (it refuses less than 450 MiB of heap).
MIN_MEMORY_BYTES = 450 * 2**20


def _conf_values(value: Any) -> Any:
    """YAML writes ``spark.sql.shuffle.partitions: 4``; Spark wants strings (booleans lower-case)."""
    if not isinstance(value, dict):
        return value
    converted: dict[Any, Any] = {}
    for key, item in value.items():
        if isinstance(item, bool):
            item = str(item).lower()
        elif isinstance(item, int | float):
            item = str(item)
        converted[key] = item
    return converted


def _conf_keys(value: dict[str, str]) -> dict[str, str]:
    for key in value:
        if not _SPARK_KEY.match(key):
            raise ValueError(f"{key!r} is not a Spark property (they start with 'spark.')")
        if _SECRET_KEY.search(key):
            raise ValueError(
                f"{key!r} looks like a credential; no credentials go in YAML: use an Airflow connection "
                "or a Kubernetes secret"
            )
    return value


def _memory(value: str) -> str:
    """A Kubernetes quantity of whole bytes, large enough for a JVM (catches Spark's '512m' = 0.5 bytes)."""
    amount = parse_k8s_quantity(value)
    if amount != amount.to_integral_value() or amount < MIN_MEMORY_BYTES:
        hint = ""
        if re.fullmatch(r"\d+m", value):
            hint = (
                f"; in Kubernetes notation 'm' is milli, so {value!r} is {amount} bytes: "
                f"write '{value[:-1]}Mi'"
            )
        raise ValueError(f"{value!r} is not a usable amount of memory (at least 450Mi){hint}")
    return value


SparkConf = Annotated[dict[str, str], BeforeValidator(_conf_values), AfterValidator(_conf_keys)]
SparkMemory = Annotated[KubernetesQuantity, AfterValidator(_memory)]


class SparkDriver(StrictModel):
    """The driver pod: ``cores`` may be fractional (0.5 requests half a CPU), memory is the JVM heap."""

    cores: PositiveFloat = 1.0
    core_limit: KubernetesQuantity | None = Field(default=None, description="Hard CPU limit of the pod")
    memory: SparkMemory = "1Gi"
    memory_overhead: SparkMemory | None = Field(
        default=None, description="Off-heap memory added to the pod's request (Spark's default otherwise)"
    )

    @model_validator(mode="after")
    def _limit_covers_request(self) -> SparkDriver:
        if self.core_limit is not None and parse_k8s_quantity(self.core_limit) < Decimal(str(self.cores)):
            raise ValueError(f"core_limit ({self.core_limit}) is smaller than cores ({self.cores})")
        return self


class SparkExecutor(SparkDriver):
    """Executor pods: as the driver, plus how many."""

    instances: int = Field(default=1, ge=1)


class _SparkConfigBase(GroupRestricted):
    conf: SparkConf = Field(default_factory=dict, description="Spark properties (spark.*), no credentials")


class LocalSparkConfig(_SparkConfigBase):
    """Spark in local mode, inside the code env's virtualenv on the worker (needs Java on the worker)."""

    type: Literal["local"]
    is_cluster: ClassVar[bool] = False
    master: str = "local[2]"

    @model_validator(mode="after")
    def _local_master(self) -> LocalSparkConfig:
        if not _LOCAL_MASTER.match(self.master):
            raise ValueError(
                f"master {self.master!r} is not a local master: write local, local[N], local[*] or "
                "local[N,retries] (use type: kubernetes for a cluster)"
            )
        return self


class KubernetesSparkConfig(_SparkConfigBase):
    """Spark on Kubernetes: a SparkApplication (spark-operator) or spark-submit in cluster mode."""

    type: Literal["kubernetes"]
    is_cluster: ClassVar[bool] = True
    mode: Literal["operator", "spark-submit"] = "operator"
    base_image: str = Field(description="Name of an entry of base_images: an image with Spark and Python")
    kubernetes_conn_id: str | None = Field(default=None, description="Airflow connection of the cluster")
    context: str | None = Field(default=None, description="kubeconfig context")
    api_server: str | None = Field(
        default=None,
        description="https URL of the API server for spark-submit (default: the connection's host)",
    )
    namespace: DnsLabel = "default"
    registry: RegistryConfig | None = None
    image_pull_secrets: list[DnsLabel] = Field(default_factory=list)
    service_account: DnsLabel | None = None
    node_selector: dict[str, str] = Field(default_factory=dict)
    tolerations: list[Toleration] = Field(default_factory=list)
    driver: SparkDriver = Field(default_factory=SparkDriver)
    executor: SparkExecutor = Field(default_factory=SparkExecutor)
    spark_version: str = Field(default="4.0.0", pattern=r"^\d+\.\d+\.\d+$")

    @model_validator(mode="after")
    def _conf_does_not_shadow_fields(self) -> KubernetesSparkConfig:
        for key in self.conf:
            field = MODELLED_PROPERTIES.get(key) or (
                "node_selector" if key.startswith("spark.kubernetes.node.selector.") else None
            )
            if field is not None:
                raise ValueError(f"conf {key!r} is set from this config's {field!r}: set that instead")
        return self

    @model_validator(mode="after")
    def _api_server_url(self) -> KubernetesSparkConfig:
        if self.api_server is not None and (
            not self.api_server.startswith("https://") or "@" in self.api_server
        ):
            raise ValueError("api_server is an https:// URL without credentials, e.g. https://10.0.0.1:6443")
        return self


SparkConfig = LocalSparkConfig | KubernetesSparkConfig
SPARK_CONFIG_TYPES: dict[str, type[LocalSparkConfig | KubernetesSparkConfig]] = {
    "local": LocalSparkConfig,
    "kubernetes": KubernetesSparkConfig,
}
