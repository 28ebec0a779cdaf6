"""Typed models of the admin's YAML: execution configs, code envs, base images, managed folders, projects.

Every model forbids unknown keys (with a "did you mean" hint) and checks its own values; checks that span
several objects (a name that must exist elsewhere) live in :mod:`dss_airflow.config.loader`.
"""

from __future__ import annotations

import functools
import re
from typing import Annotated, Any, ClassVar, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PositiveFloat,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError

from dss_airflow.config.quantities import parse_docker_size, parse_k8s_quantity
from dss_airflow.config.requirements import check_requirement
from dss_airflow.errors import closest_name

#: Names of configs, envs, folders and projects end up in image tags, labels and paths.
NAME_PATTERN = re.compile(r"^[a-z0-9][a-z0-9_.-]{0,62}$")
_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_USER = re.compile(r"^(?P<uid>\d+)(?::(?P<gid>\d+))?$")

#: Values of a selection field that are not config names.
INHERIT = "inherit"
LOCAL = "local"
NONE_ALIASES = frozenset({"none", "local"})


class StrictModel(BaseModel):
    """Base of every config model: frozen, unknown keys refused with the closest valid key."""

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True, defer_build=True)

    @model_validator(mode="before")
    @classmethod
    def _refuse_unknown_keys(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            return data
        allowed = _allowed_keys(cls)
        for key in data:
            if key not in allowed:
                suggestion = closest_name(str(key), allowed)
                hint = f"; did you mean {suggestion!r}?" if suggestion else ""
                raise PydanticCustomError(
                    "unknown_key",
                    "unknown key {key!r}" + hint,
                    {"key": str(key), "suggestion": suggestion, "allowed": sorted(allowed)},
                )
        return data


@functools.cache
def _allowed_keys(model: type[BaseModel]) -> frozenset[str]:
    """Field names and aliases of a model (computed once per model: 46k folders validate it 46k times)."""
    fields = model.model_fields
    return frozenset({f.alias or name for name, f in fields.items()} | set(fields))


def _k8s_quantity(value: Any) -> str:
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        raise ValueError(f"{value!r} is not a Kubernetes quantity")
    text = str(value)
    parse_k8s_quantity(text)
    return text


def _docker_size(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, str | int):
        raise ValueError(f"{value!r} is not a Docker size such as '512m' or '2g'")
    return parse_docker_size(value)


def _env_names(value: dict[str, str]) -> dict[str, str]:
    for name in value:
        if not _ENV_NAME.match(name):
            raise ValueError(f"{name!r} is not a valid environment variable name (letters, digits, _)")
    return value


def _non_root_user(value: str) -> str:
    match = _USER.match(value)
    if not match:
        raise ValueError(f"{value!r} must be a numeric 'uid' or 'uid:gid' such as '1000:1000'")
    if int(match["uid"]) == 0:
        raise ValueError("containers never run as root (uid 0); use a uid such as 1000")
    return value


KubernetesQuantity = Annotated[str, BeforeValidator(_k8s_quantity)]
DockerSize = Annotated[int, BeforeValidator(_docker_size)]
EnvVars = Annotated[dict[str, str], AfterValidator(_env_names)]


def _quoted_user(value: Any) -> Any:
    """YAML reads ``user: 1000`` as a number: say what to write instead of "not a valid string"."""
    if isinstance(value, int) and not isinstance(value, bool):
        if value == 0:
            raise ValueError('containers never run as root (uid 0); use a uid such as "1000:1000"')
        raise ValueError(f'quote it or write uid:gid, e.g. user: "{value}:{value}"')
    return value


ContainerUser = Annotated[str, BeforeValidator(_quoted_user), AfterValidator(_non_root_user)]
Requirement = Annotated[str, AfterValidator(check_requirement)]


class RegistryConfig(StrictModel):
    """Where code-env images are pushed and pulled from; credentials live in an Airflow connection."""

    url: str = Field(description="host[:port][/path] of the registry, no scheme and no credentials")
    connection_id: str | None = Field(
        default=None, description="Airflow connection (type docker) holding the registry login"
    )

    @model_validator(mode="after")
    def _no_credentials(self) -> RegistryConfig:
        if "@" in self.url or "://" in self.url:
            raise ValueError(
                "url must be host[:port][/path] without scheme or credentials; "
                "put the login in an Airflow connection and name it in connection_id"
            )
        return self


class DockerResources(StrictModel):
    """Resource limits of a container. ``cpus`` is a hard limit (NanoCpus), not relative shares."""

    memory: DockerSize | None = None
    cpus: PositiveFloat | None = None
    shm_size: DockerSize | None = None


Capability = Annotated[str, Field(pattern=r"^[A-Z][A-Z0-9_]*$", description="e.g. NET_BIND_SERVICE")]


class DockerSecurity(StrictModel):
    """Hardening of recipe containers: every capability dropped, no privilege gain, bounded processes.

    The safe defaults suit any recipe running as its non-root user; loosen them per config only when a
    workload needs it (``cap_add: [NET_BIND_SERVICE]``, a larger ``pids_limit`` for many workers)."""

    cap_add: list[Capability] = Field(
        default_factory=list, description="Capabilities given back after dropping ALL (no CAP_ prefix)"
    )
    no_new_privileges: bool = Field(default=True, description="setuid binaries cannot raise privileges")
    pids_limit: int = Field(default=1024, gt=0, description="Most processes and threads in the container")


class GpuRequest(StrictModel):
    """A Docker device request for GPUs (``docker run --gpus``)."""

    count: int | Literal["all"] = "all"
    device_ids: list[str] = Field(default_factory=list)
    capabilities: list[str] = Field(default_factory=lambda: ["gpu"])
    driver: str | None = None

    @model_validator(mode="after")
    def _count_or_ids(self) -> GpuRequest:
        if self.device_ids and self.count != "all":
            raise ValueError("give either count or device_ids, not both")
        if isinstance(self.count, int) and self.count < 1:
            raise ValueError("count must be a positive number of GPUs, or 'all'")
        return self


class GroupRestricted(StrictModel):
    """A config some projects may not use (DSS's "usable by": everyone, or selected groups)."""

    description: str = ""
    allowed_groups: list[str] = Field(
        default_factory=list, description="Groups allowed to use this config; empty means everyone"
    )


class _ExecutionConfigBase(GroupRestricted):
    env: EnvVars = Field(default_factory=dict, description="Extra environment variables (no secrets)")
    queue: str | None = Field(
        default=None,
        pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$",
        description="Airflow queue (CeleryExecutor: the workers that serve it) of this config's tasks, "
        "e.g. the workers next to its Docker host; a DAG's own queue= wins",
    )


class LocalExecutionConfig(_ExecutionConfigBase):
    """Runs on the worker itself, in a virtualenv built from the code env: the embedded default."""

    type: Literal["local"]
    is_container: ClassVar[bool] = False


class DockerExecutionConfig(_ExecutionConfigBase):
    """Runs in a container on one Docker daemon."""

    type: Literal["docker"]
    is_container: ClassVar[bool] = True
    base_image: str = Field(description="Name of an entry of base_images")
    docker_host: str = "unix:///var/run/docker.sock"
    tls_cert_dir: str | None = Field(
        default=None, description="Directory with ca.pem, cert.pem, key.pem (tcp:// hosts)"
    )
    shares_worker_filesystem: bool | None = Field(
        default=None,
        description="Whether the daemon sees the worker's paths (runs bind-mount the project, run "
        "directory and folders). Left out: true for unix:// hosts, false for tcp:// and ssh:// ones, "
        "whose runs get their files copied into and out of the container and whose images are built on "
        "the build daemon, then pushed to the registry or copied onto the host",
    )
    registry: RegistryConfig | None = None
    resources: DockerResources = Field(default_factory=DockerResources)
    runtime: str | None = Field(default=None, description="Docker runtime, e.g. 'nvidia'")
    gpus: GpuRequest | None = None
    network_mode: str | None = None
    user: ContainerUser = "1000:1000"
    security: DockerSecurity = Field(default_factory=DockerSecurity)

    @model_validator(mode="after")
    def _docker_host_scheme(self) -> DockerExecutionConfig:
        if not self.docker_host.startswith(
            ("unix://", "tcp://", "ssh://", "npipe://", "http://", "https://")
        ):
            raise ValueError(
                f"docker_host {self.docker_host!r} needs a scheme: unix:///var/run/docker.sock, "
                "tcp://host:2376 or ssh://user@host"
            )
        return self

    @field_validator("shares_worker_filesystem", mode="before")
    @classmethod
    def _true_or_false(cls, value: Any) -> Any:
        # pydantic would take "no" or 0; YAML has real booleans, and a guess here mounts the wrong paths.
        if value is not None and not isinstance(value, bool):
            raise ValueError(
                "shares_worker_filesystem must be true or false, or left out (then true for unix:// "
                "hosts, false for tcp:// and ssh:// ones)"
            )
        return value

    @field_validator("tls_cert_dir")
    @classmethod
    def _tls_needs_tcp(cls, value: str | None, info: ValidationInfo) -> str | None:
        host = str(info.data.get("docker_host", ""))
        if value is not None and not host.startswith(("tcp://", "https://")):
            raise ValueError(
                f"TLS only applies to tcp:// hosts, not {host}: use docker_host: tcp://host:2376 with "
                "tls_cert_dir, or remove tls_cert_dir"
            )
        return value

    @property
    def shares_filesystem(self) -> bool:
        """The flag, or its default: only a local socket implies the daemon sees the worker's paths."""
        if self.shares_worker_filesystem is not None:
            return self.shares_worker_filesystem
        return self.docker_host.startswith("unix://")


class KubernetesResources(StrictModel):
    """Pod requests and limits, as Kubernetes quantities; custom keys such as nvidia.com/gpu allowed."""

    requests: dict[str, KubernetesQuantity] = Field(default_factory=dict)
    limits: dict[str, KubernetesQuantity] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _requests_within_limits(self) -> KubernetesResources:
        for key, request in self.requests.items():
            limit = self.limits.get(key)
            if limit is not None and parse_k8s_quantity(request) > parse_k8s_quantity(limit):
                raise ValueError(f"requests.{key} ({request}) is larger than limits.{key} ({limit})")
        return self


class Toleration(StrictModel):
    """A pod toleration, with the Kubernetes field names."""

    key: str | None = None
    operator: Literal["Exists", "Equal"] = "Equal"
    value: str | None = None
    effect: Literal["NoSchedule", "PreferNoSchedule", "NoExecute"] | None = None
    toleration_seconds: int | None = Field(default=None, alias="tolerationSeconds")

    @model_validator(mode="after")
    def _exists_has_no_value(self) -> Toleration:
        if self.operator == "Exists" and self.value is not None:
            raise ValueError("a toleration with operator Exists takes no value")
        if self.toleration_seconds is not None and self.effect != "NoExecute":
            raise ValueError("tolerationSeconds only applies to effect NoExecute")
        return self


def _dns_label(value: str) -> str:
    if not _DNS_LABEL.match(value):
        raise ValueError(f"{value!r} is not a valid Kubernetes name (lower-case letters, digits, '-')")
    return value


DnsLabel = Annotated[str, AfterValidator(_dns_label)]


class KubernetesExecutionConfig(_ExecutionConfigBase):
    """Runs as a pod through the cncf-kubernetes provider."""

    type: Literal["kubernetes"]
    is_container: ClassVar[bool] = True
    base_image: str = Field(description="Name of an entry of base_images")
    kubernetes_conn_id: str | None = Field(default=None, description="Airflow connection of the cluster")
    context: str | None = Field(default=None, description="kubeconfig context")
    namespace: DnsLabel = "default"
    resources: KubernetesResources = Field(default_factory=KubernetesResources)
    registry: RegistryConfig | None = None
    image_pull_secrets: list[DnsLabel] = Field(default_factory=list)
    node_selector: dict[str, str] = Field(default_factory=dict)
    tolerations: list[Toleration] = Field(default_factory=list)
    service_account: DnsLabel | None = None
    run_as_user: int = Field(default=1000, gt=0, description="Non-root uid of the container")
    startup_timeout: int = Field(
        default=120, gt=0, description="Seconds a pod may take to be scheduled and pull its image"
    )
    logging_interval: int | None = Field(
        default=None, gt=0, description="Deferrable runs: seconds between log fetches by the triggerer"
    )
    on_finish_action: Literal["delete_pod", "delete_succeeded_pod", "keep_pod"] = Field(
        default="delete_pod", description="keep_pod or delete_succeeded_pod keep pods for debugging"
    )


ExecutionConfig = LocalExecutionConfig | DockerExecutionConfig | KubernetesExecutionConfig
EXECUTION_CONFIG_TYPES: dict[
    str, type[LocalExecutionConfig | DockerExecutionConfig | KubernetesExecutionConfig]
] = {
    "local": LocalExecutionConfig,
    "docker": DockerExecutionConfig,
    "kubernetes": KubernetesExecutionConfig,
}


class CodeEnvResources(StrictModel):
    """DSS's resources directory modes: copy a directory into the image, or run an init script at build."""

    mode: Literal["none", "copy", "init_script"] = "none"
    path: str | None = Field(
        default=None, description="Directory (copy) or script (init_script), config-relative"
    )

    @model_validator(mode="after")
    def _path_for_mode(self) -> CodeEnvResources:
        if self.mode != "none" and not self.path:
            raise ValueError(f"resources mode {self.mode!r} needs a 'path'")
        return self


class CodeEnv(StrictModel):
    """A managed Python (and optionally R) environment: a package list turned into a venv or an image."""

    python: str = Field(default="3.11", pattern=r"^3\.\d{1,2}$")
    packages: list[Requirement] = Field(default_factory=list)
    requirements_file: str | None = Field(
        default=None, description="requirements.txt path, relative to the config directory"
    )
    r_packages: list[str] = Field(default_factory=list)
    build_for: Literal["all"] | list[str] = Field(
        default="all",
        description="Configs to build images for: 'all' container execution configs, or a list of execution "
        "configs and kubernetes spark configs",
    )
    managed: bool = Field(default=True, description="False for an external env (conda path, system python)")
    external_path: str | None = None
    pythonpath: list[str] = Field(default_factory=list, description="Extra PYTHONPATH entries (local only)")
    resources: CodeEnvResources = Field(default_factory=CodeEnvResources)
    notebook: bool = Field(
        default=False,
        description="Notebook support: adds papermill, ipykernel, nbconvert and jupyterlab (notebook tasks, "
        "`dss-airflow notebook serve`)",
    )
    description: str = ""

    @property
    def r_packages_to_install(self) -> list[str]:
        """``r_packages``, with IRkernel when the env has notebook support (R notebooks run on it)."""
        extra = (
            ["IRkernel"] if self.notebook and self.r_packages and "IRkernel" not in self.r_packages else []
        )
        return [*self.r_packages, *extra]

    @model_validator(mode="after")
    def _external_has_path(self) -> CodeEnv:
        if not self.managed and not self.external_path:
            raise ValueError("an unmanaged env (managed: false) needs external_path, the env's prefix")
        if self.managed and self.external_path:
            raise ValueError("external_path only applies to unmanaged envs; set managed: false or remove it")
        return self

    def builds_for(self, execution_config: str) -> bool:
        return self.build_for == "all" or execution_config in self.build_for

    def builds_for_spark(self, spark_config: str) -> bool:
        """Only when named: ``all`` means every execution config, and a spark config's base image must be
        a Spark image, which an arbitrary env is not built for."""
        return self.build_for != "all" and spark_config in self.build_for


class BootstrapSpec(StrictModel):
    """Air-gapped base image: a Debian rootfs from the host's apt mirror (debootstrap + docker import)."""

    suite: str = "bookworm"
    packages: list[str] = Field(default_factory=lambda: ["python3", "python3-venv", "ca-certificates"])


#: R from the distribution (Debian's r-base-core, CRAN packages as r-cran-*): what ``r: true`` installs.
R_DISTRIBUTION_PACKAGES = ("r-base-core", "r-cran-jsonlite")


class BaseImage(StrictModel):
    """A base image that code-env images are built on, and how to build it (DSS's build-base-image)."""

    image: str = Field(description="Image reference (repository:tag) the base image is built under")
    description: str = ""
    bootstrap: BootstrapSpec | None = Field(default=None, description="Build air-gapped from Debian packages")
    from_image: str | None = Field(
        default=None, alias="from", description="Build from an upstream image, e.g. python:3.11-slim"
    )
    system_packages: list[str] = Field(default_factory=list, description="Extra Debian packages (apt)")
    r: bool = Field(
        default=False,
        description="Install R from the distribution (r-base-core, and r-cran-jsonlite for dss_recipe.R)",
    )
    dockerfile_prepend: str | None = Field(default=None, description="Fragment file placed right after FROM")
    dockerfile_append: str | None = Field(default=None, description="Fragment file placed at the end")
    ca_bundle: str | None = Field(
        default="/etc/ssl/certs/ca-certificates.crt",
        description="CA bundle copied in and trusted (corporate TLS proxy); null to keep the image's own",
    )
    pip_index_url: str | None = Field(
        default=None, description="Package index for code envs (no credentials)"
    )
    python: str = Field(default="/usr/bin/python3", description="Interpreter code envs are created from")
    cuda: Literal["11", "12", "13"] | None = Field(
        default=None,
        description="CUDA major version: NVIDIA's runtime wheels (nvidia-cuda-runtime-cuNN) in "
        "/opt/dss/cuda, registered with the dynamic loader",
    )
    cuda_libraries: list[str] = Field(
        default_factory=list,
        description="More NVIDIA wheels with cuda, e.g. [cublas, cudnn] (nvidia-<name>-cuNN)",
    )
    cran_url: str | None = Field(
        default=None,
        description="CRAN or Posit mirror for code envs' r_packages (no credentials); unset: the "
        "distribution's r-cran-* packages",
    )

    @property
    def distribution_packages(self) -> list[str]:
        """What the build installs with apt (or debootstrap): system_packages, and R with ``r: true``."""
        return [*self.system_packages, *(R_DISTRIBUTION_PACKAGES if self.r else ())]

    @model_validator(mode="after")
    def _one_source(self) -> BaseImage:
        if self.bootstrap is not None and self.from_image is not None:
            raise ValueError("give either 'bootstrap' (air-gapped) or 'from' (an upstream image), not both")
        if self.cuda is not None and self.from_image is None:
            raise ValueError(
                "cuda is layered on an image: give 'from' (e.g. the bootstrapped base image's tag), so one "
                "plain and one CUDA base image can feed different execution configs"
            )
        if self.cuda_libraries and self.cuda is None:
            raise ValueError('cuda_libraries needs cuda (the major version, e.g. cuda: "12")')
        for name in self.cuda_libraries:
            if not re.match(r"^[a-z][a-z0-9-]*$", name):
                raise ValueError(f"cuda_libraries: {name!r} is not a library name like cublas or cudnn")
        if self.cran_url and not re.match(r"^https?://[^\s\"'\\@]+$", self.cran_url):
            raise ValueError("cran_url must be an http(s) URL without credentials or quotes")
        if self.pip_index_url and "@" in self.pip_index_url:
            raise ValueError(
                "pip_index_url must not contain credentials; use a netrc or an Airflow connection"
            )
        for package in self.system_packages:
            if not re.match(r"^[a-z0-9][a-z0-9+.-]*$", package):
                raise ValueError(f"{package!r} is not a Debian package name")
        return self

    @property
    def buildable(self) -> bool:
        """False for an image that is only referenced (built elsewhere, e.g. by a corporate pipeline)."""
        return self.bootstrap is not None or self.from_image is not None


class ManagedFolder(StrictModel):
    """Named storage: a host directory for local/docker, a PVC for kubernetes."""

    path: str | None = Field(default=None, description="Host directory; relative paths start at data_dir")
    pvc: DnsLabel | None = Field(default=None, description="PersistentVolumeClaim for kubernetes")
    sub_path: str | None = None
    description: str = ""

    @model_validator(mode="after")
    def _has_storage(self) -> ManagedFolder:
        if self.path is None and self.pvc is None:
            raise ValueError("a managed folder needs a host 'path' (local, docker) or a 'pvc' (kubernetes)")
        return self


class Cluster(GroupRestricted):
    """*Where* Kubernetes work runs, chosen apart from the execution config (*how*), as DSS separates them.

    A selected cluster replaces the kubernetes execution config's connection and context; the config's
    namespace, resources and pod settings stay."""

    kubernetes_conn_id: str | None = Field(default=None, description="Airflow connection of the cluster")
    context: str | None = Field(default=None, description="kubeconfig context")
    namespace: DnsLabel | None = Field(default=None, description="Overrides the config's namespace")

    @model_validator(mode="after")
    def _has_target(self) -> Cluster:
        if self.kubernetes_conn_id is None and self.context is None:
            raise ValueError(
                "a cluster needs a kubernetes_conn_id (Airflow connection) or a kubeconfig context"
            )
        return self


class Project(StrictModel):
    """A project: where its recipes live, its default execution config, and its groups."""

    root: str = Field(description="Directory holding recipes/ and lib/, relative to the config directory")
    default_execution_config: str = INHERIT
    default_code_env: str | None = None
    default_cluster: str = INHERIT
    groups: list[str] = Field(default_factory=list)
    pvc: DnsLabel | None = Field(
        default=None, description="PersistentVolumeClaim holding the project directory (kubernetes)"
    )
    sub_path: str | None = Field(default=None, description="Directory of the project inside its pvc")


class Defaults(StrictModel):
    """Global defaults, the last step of the task > project > global selection."""

    execution_config: str = LOCAL
    code_env: str | None = None
    project: str | None = None
    cluster: str | None = Field(default=None, description="Default cluster of kubernetes configs")
    data_dir: str = Field(default="data", description="Root of relative managed-folder paths")
    allowed_roots: list[str] = Field(
        default_factory=list,
        description="Directories, besides data_dir (managed folders) and the config directory (requirements "
        "files, resources, Dockerfile fragments, project roots), that such paths may point into; relative "
        "ones start at the config directory",
    )
