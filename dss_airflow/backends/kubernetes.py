"""Kubernetes backend: a recipe run as a pod through the cncf-kubernetes provider's KubernetesPodOperator.

The pod is built by a pure function (:func:`build_pod`) from the backend-neutral :class:`ContainerSpec`
and the PVC mounts of the project and managed folders (:func:`pod_mounts`), so every manifest is checked
in unit tests against the Kubernetes OpenAPI schemas. The provider's operator is composed inside
:meth:`KubernetesBackend.run` (as DockerBackend does with DockerOperator): pod creation, log following,
the XCom sidecar, clean-up and credential refresh come with each provider release.

The worker cannot see PVCs, so the pod does everything the worker does for docker: the runner reads its
context from ``DSS_CONTEXT_JSON``, stages outputs inside the output folder's PVC and promotes them itself
after a success; its result reaches us through the operator's XCom file (``/airflow/xcom/return.json``).

Each operator gets its own kubernetes client configuration (:mod:`dss_airflow.hooks.kubernetes`).
"""

from __future__ import annotations

import dataclasses
import functools
import json
import logging
from functools import cached_property
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any

from kubernetes.client import models as k8s

from dss_airflow.backends.base import Backend, RunResult, execute_composed
from dss_airflow.config.models import KubernetesExecutionConfig
from dss_airflow.errors import ConfigError, ExecutionError
from dss_airflow.hooks.kubernetes import PodMemorySampler, isolated_hook_class, pod_metrics_fetch
from dss_airflow.k8s_names import dns_label, k8s_labels
from dss_airflow.spec import (
    INPUTS_DIR,
    LABEL_PREFIX,
    POD_OUTPUTS_ROOT,
    PROJECT_DIR,
    RUN_DIR,
    SECRETS_DIR,
    SECRETS_FILE,
    ContainerSpec,
    InputRef,
    MountSpec,
    OutputRef,
    build_spec,
)
from dss_airflow.staging import FolderRefs, plan_inputs, plan_outputs
from dss_airflow.usage import larger_config, out_of_memory_text, size_text

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence
    from datetime import timedelta

    from airflow.providers.cncf.kubernetes.operators.pod import KubernetesPodOperator
    from airflow.sdk import Context

    from dss_airflow.config.catalog import Catalog
    from dss_airflow.spec import TaskRun

log = logging.getLogger(__name__)

#: The runner's context travels in an environment variable: keep pod specs small (etcd objects are
#: limited to ~1.5 MiB and every env var is shown by `kubectl describe`).
MAX_CONTEXT_BYTES = 64 * 1024
BASE_CONTAINER = "base"
RUN_VOLUME = "dss-run"
SECRETS_VOLUME = "dss-secrets"


# ----------------------------------------------------------------------------------- planning (pure)
def _require_pvc(catalog: Catalog | None, section: str, name: str, pvc: str | None, what: str) -> str:
    if pvc:
        return pvc
    file, line = catalog.where(section, name) if catalog is not None else (None, None)
    raise ConfigError(
        f"{what} has no pvc, so a kubernetes execution config cannot mount it",
        file=file,
        line=line,
        field=f"{section}.{name}.pvc",
        fix="add 'pvc' (a PersistentVolumeClaim of the config's namespace) and 'sub_path' where "
        f"{what} lives in the cluster, or run this task on a docker or local execution config",
    )


def _clean_sub_path(sub_path: str | None) -> str:
    """The directory of the volume to mount ("" for its root)."""
    if not sub_path:
        return ""
    path = PurePosixPath(sub_path)
    if path.is_absolute() or ".." in path.parts:
        raise ConfigError(
            "sub_path must be relative to the volume, without '..'", value=sub_path, field="sub_path"
        )
    return str(path)


def plan_pod_io(
    catalog: Catalog, inputs: FolderRefs, outputs: FolderRefs, run_key: str
) -> tuple[tuple[InputRef, ...], tuple[OutputRef, ...]]:
    """Inputs and outputs with *in-pod* paths (the ``host_*`` fields hold what the pod sees)."""
    return (
        plan_inputs(catalog, inputs, root=lambda folder: Path(INPUTS_DIR, folder)),
        plan_outputs(
            catalog, outputs, run_key, root=lambda folder: Path(POD_OUTPUTS_ROOT, folder), published=False
        ),
    )


def pod_mounts(catalog: Catalog, run: TaskRun) -> tuple[MountSpec, ...]:
    """Project read-only at /dss/project, input folders read-only, output folders read-write (PVCs)."""
    resolved = run.resolved
    project = resolved.project
    claim = _require_pvc(catalog, "projects", resolved.project_name, project.pvc, "the project")
    mounts = [MountSpec(_clean_sub_path(project.sub_path), PROJECT_DIR, read_only=True, claim=claim)]
    for kind, names, base, read_only in (
        ("input", [ref.folder for ref in run.inputs], INPUTS_DIR, True),
        ("output", [ref.folder for ref in run.outputs], POD_OUTPUTS_ROOT, False),
    ):
        for name in dict.fromkeys(names):
            folder = catalog.managed_folders[name]
            pvc = _require_pvc(catalog, "managed_folders", name, folder.pvc, f"the {kind} managed folder")
            mounts.append(MountSpec(_clean_sub_path(folder.sub_path), f"{base}/{name}", read_only, claim=pvc))
    return tuple(mounts)


def pod_spec(catalog: Catalog, run: TaskRun, spec: ContainerSpec) -> ContainerSpec:
    """A pod-layout spec with the run's PVC mounts; an oversized context is refused here, before any
    API call."""
    context_json(spec.context)
    return dataclasses.replace(spec, mounts=pod_mounts(catalog, run))


# ------------------------------------------------------------------------------- manifest (pure)
def context_json(context: Mapping[str, Any]) -> str:
    """The runner context as compact JSON, refused above MAX_CONTEXT_BYTES (before any pod exists)."""
    text = json.dumps(context, sort_keys=True, separators=(",", ":"))
    size = len(text.encode())
    if size > MAX_CONTEXT_BYTES:
        raise ConfigError(
            f"the recipe context is {size} bytes, over the {MAX_CONTEXT_BYTES // 1024} KiB a kubernetes run "
            "passes in an environment variable: recipe_params are too big",
            field="recipe_params",
            fix="put large data in a managed folder (an input) and pass only its name or path in "
            "recipe_params",
        )
    return text


def container_security_context() -> k8s.V1SecurityContext:
    """Pod Security Standards "restricted": no privilege escalation, no capabilities, RuntimeDefault."""
    return k8s.V1SecurityContext(
        allow_privilege_escalation=False,
        capabilities=k8s.V1Capabilities(drop=["ALL"]),
        run_as_non_root=True,
        seccomp_profile=k8s.V1SeccompProfile(type="RuntimeDefault"),
    )


def _volumes(mounts: Sequence[MountSpec]) -> tuple[list[k8s.V1Volume], list[k8s.V1VolumeMount]]:
    """One volume per distinct claim (read-only when every mount of it is), one volumeMount per mount."""
    claims: dict[str, str] = {}
    for mount in mounts:
        if mount.claim is None:
            raise ValueError(f"a pod mounts PVCs only, not the worker's {mount.source}")
        claims.setdefault(mount.claim, f"pvc-{len(claims)}")
    volumes = [
        k8s.V1Volume(
            name=volume,
            persistent_volume_claim=k8s.V1PersistentVolumeClaimVolumeSource(
                claim_name=claim, read_only=all(m.read_only for m in mounts if m.claim == claim)
            ),
        )
        for claim, volume in claims.items()
    ]
    volumes.append(k8s.V1Volume(name=RUN_VOLUME, empty_dir=k8s.V1EmptyDirVolumeSource()))
    volume_mounts = [
        k8s.V1VolumeMount(
            name=claims[str(m.claim)], mount_path=m.target, sub_path=m.source or None, read_only=m.read_only
        )
        for m in mounts
    ]
    volume_mounts.append(k8s.V1VolumeMount(name=RUN_VOLUME, mount_path=RUN_DIR))
    return volumes, volume_mounts


def secret_name(spec: ContainerSpec) -> str:
    """The name of the Secret holding a run's connections and variables (its pod's name, suffixed)."""
    return f"{dns_label(spec.name)}-secrets"


def build_secret(spec: ContainerSpec, config: KubernetesExecutionConfig) -> k8s.V1Secret | None:
    """Pure: the Secret a run's pod mounts at ``SECRETS_DIR`` (None when the task declared none). Created
    before the pod, then owned by it (deleted with it), and deleted after the run."""
    if spec.secrets is None:
        return None
    return k8s.V1Secret(
        api_version="v1",
        kind="Secret",
        metadata=k8s.V1ObjectMeta(
            name=secret_name(spec),
            namespace=config.namespace,
            labels=k8s_labels(spec.labels, f"{LABEL_PREFIX}."),
        ),
        type="Opaque",
        immutable=True,
        string_data={SECRETS_FILE: spec.secrets.file_content().decode()},
    )


def owner_patch(pod: k8s.V1Pod) -> list[dict[str, Any]]:
    """The JSON Patch making a created pod the owner of its Secret: Kubernetes deletes the Secret with the
    pod, also when the worker that created it died. (A JSON Patch, a list: the client sends any patch body
    as ``application/json-patch+json``.)"""
    owner = k8s.V1OwnerReference(api_version="v1", kind="Pod", name=pod.metadata.name, uid=pod.metadata.uid)
    return [{"op": "add", "path": "/metadata/ownerReferences", "value": [owner]}]


def _secrets_volume(spec: ContainerSpec) -> tuple[list[k8s.V1Volume], list[k8s.V1VolumeMount]]:
    """The run's Secret, read-only, readable by the pod's user (group fsGroup) and no one else."""
    if spec.secrets is None:
        return [], []
    source = k8s.V1SecretVolumeSource(secret_name=secret_name(spec), default_mode=0o440, optional=False)
    return (
        [k8s.V1Volume(name=SECRETS_VOLUME, secret=source)],
        [k8s.V1VolumeMount(name=SECRETS_VOLUME, mount_path=SECRETS_DIR, read_only=True)],
    )


def build_pod(spec: ContainerSpec, config: KubernetesExecutionConfig) -> k8s.V1Pod:
    """Pure: the pod a task run becomes (before the provider adds its XCom sidecar and TI labels)."""
    if spec.image is None:
        raise ValueError("a pod needs an image")
    env = {**spec.env, "DSS_CONTEXT_JSON": context_json(spec.context)}
    uid = config.run_as_user
    volumes, volume_mounts = _volumes(spec.mounts)
    secret_volumes, secret_mounts = _secrets_volume(spec)
    volumes, volume_mounts = volumes + secret_volumes, volume_mounts + secret_mounts
    resources = spec.resources
    container = k8s.V1Container(
        name=BASE_CONTAINER,
        image=spec.image,
        image_pull_policy="IfNotPresent",
        command=list(spec.command),
        env=[k8s.V1EnvVar(name=name, value=value) for name, value in env.items()],
        working_dir=RUN_DIR,  # the runner creates and enters its own cwd below it
        resources=k8s.V1ResourceRequirements(
            requests=dict(resources.k8s_requests) or None, limits=dict(resources.k8s_limits) or None
        ),
        security_context=container_security_context(),
        volume_mounts=volume_mounts,
        termination_message_policy="FallbackToLogsOnError",
    )
    tolerations = [
        k8s.V1Toleration(
            key=t.key,
            operator=t.operator,
            value=t.value,
            effect=t.effect,
            toleration_seconds=t.toleration_seconds,
        )
        for t in config.tolerations
    ]
    pull_secrets = [k8s.V1LocalObjectReference(name=name) for name in config.image_pull_secrets]
    return k8s.V1Pod(
        api_version="v1",
        kind="Pod",
        metadata=k8s.V1ObjectMeta(
            name=dns_label(spec.name),
            namespace=config.namespace,
            labels=k8s_labels(spec.labels, f"{LABEL_PREFIX}."),
        ),
        spec=k8s.V1PodSpec(
            containers=[container],
            restart_policy="Never",
            volumes=volumes,
            node_selector=dict(config.node_selector) or None,
            tolerations=tolerations or None,
            image_pull_secrets=pull_secrets or None,
            service_account_name=config.service_account,
            security_context=k8s.V1PodSecurityContext(
                run_as_non_root=True,
                run_as_user=uid,
                run_as_group=uid,
                fs_group=uid,
                seccomp_profile=k8s.V1SeccompProfile(type="RuntimeDefault"),
            ),
        ),
    )


# ------------------------------------------------------------------------------------ the operator
def operator_kwargs(
    pod: k8s.V1Pod,
    config: KubernetesExecutionConfig,
    *,
    deferrable: bool = False,
    execution_timeout: timedelta | None = None,
    secret: k8s.V1Secret | None = None,
) -> dict[str, Any]:
    """Pure mapping of a pod and its config onto KubernetesPodOperator arguments.

    ``execution_timeout`` is the DSS task's own: the provider turns it into the trigger's deadline, so a
    deferred pod is stopped in time (apache/airflow#67227 for operators composed without it). ``secret``
    is created by a callback of the provider's, with its client, just before the pod."""
    kwargs: dict[str, Any] = {
        "full_pod_spec": pod,
        "name": pod.metadata.name,
        "random_name_suffix": False,
        "namespace": config.namespace,
        "cluster_context": config.context,
        "do_xcom_push": True,
        "on_finish_action": config.on_finish_action,
        "startup_timeout_seconds": config.startup_timeout,
        "logging_interval": config.logging_interval,
        "get_logs": True,
        "deferrable": deferrable,
        "execution_timeout": execution_timeout,
        "xcom_sidecar_container_security_context": container_security_context(),
    }
    # None = no Airflow connection: in-cluster, else the default kubeconfig (KUBECONFIG).
    kwargs["kubernetes_conn_id"] = config.kubernetes_conn_id
    if secret is not None:
        kwargs["callbacks"] = [pod_secret_callback(secret)]
    return kwargs


def pod_secret_callback(secret: k8s.V1Secret) -> type:
    """A provider callback that creates ``secret`` just before the pod (the provider's own client and
    namespace), then makes the created pod its owner."""
    from airflow.providers.cncf.kubernetes.callbacks import KubernetesPodOperatorCallback
    from kubernetes.client.exceptions import ApiException

    name, namespace = secret.metadata.name, secret.metadata.namespace

    class PodSecret(KubernetesPodOperatorCallback):
        @staticmethod
        def on_pod_manifest_created(*, client: Any, **kwargs: Any) -> None:
            try:
                client.create_namespaced_secret(namespace, secret)
            except ApiException as exc:
                if exc.status != 409:  # 409: a resumed or re-attached run made it already
                    raise

        @staticmethod
        def on_pod_creation(*, pod: k8s.V1Pod | None, client: Any, **kwargs: Any) -> None:
            if pod is not None and pod.metadata is not None and pod.metadata.uid:
                client.patch_namespaced_secret(name, namespace, owner_patch(pod))

    return PodSecret


def delete_secret(client: Any, secret: k8s.V1Secret) -> None:
    """Delete a run's Secret (after the run, on_kill); already gone (deleted with its pod) is fine."""
    from kubernetes.client.exceptions import ApiException

    try:
        client.delete_namespaced_secret(secret.metadata.name, secret.metadata.namespace)
    except ApiException as exc:
        if exc.status != 404:
            log.warning(
                "Could not delete Secret %s/%s: %s", secret.metadata.namespace, secret.metadata.name, exc
            )


@functools.cache
def isolated_operator_class(base: type[KubernetesPodOperator]) -> type[KubernetesPodOperator]:
    """``base`` (KubernetesPodOperator or a subclass: SparkKubernetesOperator) with a per-operator client
    configuration, and the runner's result kept when the provider extracts the XCom."""

    class Isolated(base):  # type: ignore[valid-type,misc]
        runner_result: Any = None

        @cached_property
        def hook(self) -> Any:
            return isolated_hook_class()(
                conn_id=self.kubernetes_conn_id,
                in_cluster=self.in_cluster,
                config_file=self.config_file,
                cluster_context=self.cluster_context,
            )

        def extract_xcom(self, pod: k8s.V1Pod, *, ignore_kill_failure: bool = True) -> Any:
            self.runner_result = super().extract_xcom(pod, ignore_kill_failure=ignore_kill_failure)
            return self.runner_result

    Isolated.__name__ = Isolated.__qualname__ = f"DSS{base.__name__}"
    return Isolated


def make_operator(task_id: str, pod: k8s.V1Pod, config: KubernetesExecutionConfig, **extra: Any) -> Any:
    from airflow.providers.cncf.kubernetes.operators.pod import KubernetesPodOperator

    operator_class = isolated_operator_class(KubernetesPodOperator)
    return operator_class(task_id=f"{task_id}.pod", **operator_kwargs(pod, config, **extra))


def submitted_manifest(task_id: str, pod: k8s.V1Pod, config: KubernetesExecutionConfig) -> dict[str, Any]:
    """The pod the provider submits for ``pod`` (its XCom sidecar and defaults added), as plain data:
    what ``dss-airflow k8s render`` prints and the task's rendered ``resolved_execution`` shows."""
    from kubernetes.client import ApiClient

    submitted = make_operator(task_id, pod, config).build_pod_request_obj(dry_run=True)
    manifest: dict[str, Any] = ApiClient().sanitize_for_serialization(submitted)
    return manifest


def without_env_values(manifest: dict[str, Any]) -> dict[str, Any]:
    """The manifest with each container's environment reduced to names (and ``valueFrom`` references):
    values may be credentials, and the runner's context is big."""
    spec = manifest.get("spec") or {}
    for container in (*spec.get("containers", []), *spec.get("initContainers", [])):
        if container.get("env"):
            container["env"] = [{k: v for k, v in var.items() if k != "value"} for var in container["env"]]
    return manifest


class PodBackend(Backend):
    """A backend whose task runs in pods: folders on PVCs at in-pod paths, the run directory an emptyDir,
    the code env's image (the runtime baked in); the runner promotes outputs in the pod."""

    layout = "pod"

    def plan_io(
        self, inputs: FolderRefs, outputs: FolderRefs, run_key: str
    ) -> tuple[tuple[InputRef, ...], tuple[OutputRef, ...]]:
        return plan_pod_io(self.catalog, inputs, outputs, run_key)

    def run_dir(self, run_key: str) -> Path:
        return Path(RUN_DIR)

    def prepare(self, run: TaskRun) -> ContainerSpec:
        from dss_airflow.images.lookup import image_for

        image = self.options.pinned_image or image_for(self.catalog, self.resolved)
        return pod_spec(self.catalog, run, build_spec(run, layout="pod", image=image))


class KubernetesBackend(PodBackend):
    """Runs one pod through a composed KubernetesPodOperator; the runner's JSON comes back by XCom."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        config = self.resolved.execution_config
        assert isinstance(config, KubernetesExecutionConfig)
        self.config = config
        self._operator: Any = None
        self._secret: k8s.V1Secret | None = None

    def pod(self, spec: ContainerSpec) -> k8s.V1Pod:
        return build_pod(spec, self.config)

    def describe(self, spec: ContainerSpec) -> dict[str, Any]:
        config = self.config
        return {
            "cluster": self.resolved.cluster_name or "the execution config's own",
            "kubernetes_conn_id": config.kubernetes_conn_id,
            "context": config.context,
            "namespace": config.namespace,
            "deferrable": self.options.deferrable,
        }

    def manifest(self, spec: ContainerSpec) -> dict[str, Any]:
        task_id = spec.labels.get(f"{LABEL_PREFIX}.task_id", "task")
        return without_env_values(submitted_manifest(task_id, self.pod(spec), self.config))

    def run(self, spec: ContainerSpec, context: Context) -> RunResult:
        """Run the pod to its end; the runner's result comes back through the XCom sidecar.

        Deferrable: the provider's ``TaskDeferred`` passes through (the operator re-targets it at its own
        resume method); with the trigger's event this finishes the run through the provider's
        ``trigger_reentry`` (logs, XCom sidecar result, pod deletion) instead of starting one.
        """
        from airflow.sdk.exceptions import TaskDeferred

        pod = self.pod(spec)
        self._secret = build_secret(spec, self.config)
        operator = make_operator(
            context["ti"].task_id,
            pod,
            self.config,
            deferrable=self.options.deferrable,
            execution_timeout=getattr(context.get("task"), "execution_timeout", None),
            secret=self._secret,
        )
        self._operator = operator
        name = f"{self.config.namespace}/{pod.metadata.name}"
        where = f"context {self.config.context}" if self.config.context else "the default context"
        self.log.info("Running pod %s (%s): image %s", name, where, spec.image)
        failure: BaseException | None = None
        event = self.options.resume_event
        sampler = None
        if event is None and not self.options.deferrable:  # a worker waits on the pod: it can sample too
            fetch = pod_metrics_fetch(operator, pod.metadata.name, self.config.namespace)
            sampler = PodMemorySampler(fetch, BASE_CONTAINER).start()
        try:
            if event is None:
                returned = execute_composed(operator, context)
            else:
                self.log.info("Pod %s: resumed after the trigger (%s)", name, event.get("status"))
                returned = operator.trigger_reentry(context, dict(event))
        except TaskDeferred:
            raise  # the pod (owner of its Secret) runs on: deleted when the run resumes, or with the pod
        except Exception as exc:  # the provider raises AirflowException / ApiException / its own types
            failure = exc
            returned = None
        finally:
            if sampler is not None:
                sampler.stop()
        self._delete_secret()
        if self._killed:
            # apache/airflow#73006: on_kill deletes the pod, cleanup() then returns early and execute()
            # may return normally; a killed task must never report success.
            return RunResult(None, failure=ExecutionError(f"pod {name} was deleted by on_kill"))
        raw = operator.runner_result if operator.runner_result is not None else returned
        result: dict[str, Any] | None = raw if isinstance(raw, dict) else None
        if failure is not None and not (result is not None and result.get("status") == "failed"):
            if container_oom_killed(getattr(operator, "remote_pod", None)):
                return self._out_of_memory(name, sampler.peak if sampler else None)
            return RunResult(result, failure=ExecutionError(f"pod {name} failed: {failure}"))
        if result is None and event is not None and event.get("status") == "success":
            result = collected_pod_result(name)
        return RunResult(result, promoted_in_cluster(spec, result))

    def _out_of_memory(self, name: str, sampled: int | None) -> RunResult:
        """The kubelet killed the pod's container for memory: say so, with the metrics API's largest
        sample (the runner wrote no result) and the next larger config the project may use."""
        resolved = self.resolved
        limit = self.config.resources.limits.get("memory", "none")
        seen = f"; the metrics API last saw {size_text(sampled)}" if sampled else ""
        larger = larger_config(
            self.catalog,
            project=resolved.project_name,
            config_name=resolved.execution_config_name,
            code_env=resolved.code_env_name,
        )
        cause = out_of_memory_text(
            limit, resolved.execution_config_name, "resources.limits.memory", larger, seen
        )
        usage = {"peak_memory_bytes": sampled, "measured_by": "metrics.k8s.io (sampled)"} if sampled else None
        failure = ExecutionError(f"pod {name} failed: {cause}", cause=cause, out_of_memory=True)
        return RunResult(None, failure=failure, usage=usage)

    def _delete_secret(self) -> None:
        if self._secret is not None and self._operator is not None:
            delete_secret(self._operator.client, self._secret)

    def kill(self) -> None:
        super().kill()
        if self._operator is not None:
            self._operator.on_kill()
        self._delete_secret()


def container_oom_killed(pod: k8s.V1Pod | None, container: str = BASE_CONTAINER) -> bool:
    """Whether the provider's last read of ``pod`` shows ``container`` terminated as OOMKilled."""
    statuses = pod.status.container_statuses if pod is not None and pod.status is not None else None
    for status in statuses or []:
        terminated = status.state.terminated if status.state is not None else None
        if status.name == container and terminated is not None:
            return bool(terminated.reason == "OOMKilled")
    return False


def collected_pod_result(name: str) -> dict[str, Any]:
    """The trigger saw the pod succeed, but it was garbage-collected before the result was read (the
    provider then returns nothing: apache/airflow#66715). The runner exits 0 only after promoting its
    outputs in the PVC, so the run succeeded; only its result and file listing are lost."""
    return {
        "status": "success",
        "result": None,
        "outputs": {},
        "warnings": [
            f"pod {name} succeeded but was deleted before its result was read: outputs were promoted in "
            "the volume; the recipe's result and the list of promoted files are unavailable"
        ],
    }


def promoted_in_cluster(spec: ContainerSpec, result: Mapping[str, Any] | None) -> dict[str, list[str]]:
    """Promoted paths (as the pod sees them) from the runner's listing of each output."""
    listed = (result or {}).get("outputs") or {}
    return {
        ref.name: [str(ref.host_destination / name) for name in listed.get(ref.name, [])]
        for ref in spec.outputs
    }
