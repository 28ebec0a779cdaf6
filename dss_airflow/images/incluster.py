"""Code-env image builds inside a Kubernetes cluster that has no Docker daemon: a rootless BuildKit Job.

A ConfigMap holding the build context (Dockerfile, lock, runtime) and a Job running
``buildctl-daemonless.sh`` from the rootless BuildKit image, which pushes
``<registry>/dss-code-envs:<env>-<hash12>`` with the credentials of an image-pull/push secret
(a ``kubernetes.io/dockerconfigjson`` secret, never YAML). Kaniko is archived; BuildKit rootless needs no
privileged container (only unconfined seccomp/AppArmor, as its documentation says).

Rendering needs no cluster (``images build-job``); running the Job (``--apply``) follows it through the
provider hook and reads the pushed digest from its log, so pods run the image by digest.
"""

from __future__ import annotations

import logging
import re
import shlex
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from dss_airflow.config.models import KubernetesExecutionConfig
from dss_airflow.config.spark import KubernetesSparkConfig
from dss_airflow.errors import DSSAirflowError, ExecutionError, ImageBuildError
from dss_airflow.images.envbuild import ENV_PREFIX, ENV_PYTHON, LOCK_IN_IMAGE
from dss_airflow.images.identity import IMAGE_REPOSITORY, image_tag
from dss_airflow.images.ledger import ImageRecord
from dss_airflow.k8s_names import dns_label, label_value
from dss_airflow.runtime import runtime_files
from dss_airflow.spec import RUNTIME_DIR

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

    from dss_airflow.images.identity import BuildInputs, Lock
    from dss_airflow.images.plan import Planner, Target

log = logging.getLogger(__name__)

#: Pinned, so a rebuild months later uses the same builder.
BUILDKIT_IMAGE = "moby/buildkit:v0.25.1-rootless"
BUILDKIT_UID = 1000
#: Configs whose pairs run in a cluster, so their images can be built there.
ClusterConfig = KubernetesExecutionConfig | KubernetesSparkConfig


def env_dockerfile(*, base_image: str, labels: dict[str, str], uid: int = 1000) -> str:
    """Dockerfile equivalent of the commit-based build (pip instead of uv: the base has no uv)."""
    label_args = " ".join(f'{key}="{value}"' for key, value in sorted(labels.items()))
    return (
        "\n".join(
            [
                f"FROM {base_image}",
                "USER root",
                "COPY requirements.lock /tmp/requirements.lock",
                f"RUN python3 -m venv {ENV_PREFIX} && {ENV_PYTHON} -m pip install --no-cache-dir --no-deps"
                f" -r /tmp/requirements.lock && cp /tmp/requirements.lock {LOCK_IN_IMAGE}",
                f"COPY runtime/ {RUNTIME_DIR}/",
                f"ENV PATH={ENV_PREFIX}/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
                f" VIRTUAL_ENV={ENV_PREFIX}",
                f"LABEL {label_args}",
                f"USER {uid}:{uid}",
                f'CMD ["{ENV_PYTHON}"]',
            ]
        )
        + "\n"
    )


def build_job_manifests(
    *,
    env_name: str,
    build_hash: str,
    lock_text: str,
    base_image: str,
    registry_url: str,
    namespace: str,
    push_secret: str,
    labels: dict[str, str] | None = None,
) -> list[dict[str, Any]]:
    """[ConfigMap, Job] that build and push one code-env image in the cluster."""
    tag = f"{env_name}-{build_hash[:12]}"
    target = f"{registry_url}/{IMAGE_REPOSITORY}:{tag}"
    name = dns_label("dss-build", env_name, build_hash[:12])
    meta_labels = {
        "app.kubernetes.io/managed-by": "dss-airflow",
        "dss-airflow/code-env": label_value(env_name),
    }
    image_labels = {"dss_airflow.code_env": env_name, "dss_airflow.build_hash": build_hash, **(labels or {})}
    files = {
        "Dockerfile": env_dockerfile(base_image=base_image, labels=image_labels),
        "requirements.lock": lock_text,
    }
    # ConfigMap keys cannot hold "/": runtime files get numbered keys, and the volume items restore the tree.
    items = [{"key": key, "path": key} for key in files]
    for number, (relative, path) in enumerate(runtime_files().items()):
        files[f"runtime-{number}"] = Path(path).read_text(encoding="utf-8")
        items.append({"key": f"runtime-{number}", "path": f"runtime/{relative}"})
    config_map = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": name, "namespace": namespace, "labels": meta_labels},
        "data": files,
    }
    build = [
        "buildctl-daemonless.sh", "build",
        "--frontend", "dockerfile.v0",
        "--local", "context=/workspace", "--local", "dockerfile=/workspace",
        "--output", f"type=image,name={target},push=true",
    ]  # fmt: skip
    job = {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": name, "namespace": namespace, "labels": meta_labels},
        "spec": {
            "backoffLimit": 0,
            "ttlSecondsAfterFinished": 3600,
            "template": {
                "metadata": {
                    "labels": meta_labels,
                    "annotations": {"container.apparmor.security.beta.kubernetes.io/buildkit": "unconfined"},
                },
                "spec": {
                    "restartPolicy": "Never",
                    "securityContext": {
                        "runAsNonRoot": True,
                        "runAsUser": BUILDKIT_UID,
                        "fsGroup": BUILDKIT_UID,
                    },
                    "containers": [
                        {
                            "name": "buildkit",
                            "image": BUILDKIT_IMAGE,
                            "command": ["sh", "-c", " ".join(shlex.quote(arg) for arg in build)],
                            "env": [
                                {"name": "BUILDKITD_FLAGS", "value": "--oci-worker-no-process-sandbox"},
                                {"name": "DOCKER_CONFIG", "value": "/home/user/.docker"},
                            ],
                            "securityContext": {
                                "runAsUser": BUILDKIT_UID,
                                "runAsGroup": BUILDKIT_UID,
                                "seccompProfile": {"type": "Unconfined"},
                                "allowPrivilegeEscalation": True,  # rootless BuildKit's newuidmap
                            },
                            "resources": {
                                "requests": {"cpu": "500m", "memory": "1Gi"},
                                "limits": {"memory": "4Gi"},
                            },
                            "volumeMounts": [
                                {"name": "context", "mountPath": "/workspace", "readOnly": True},
                                {"name": "buildkitd", "mountPath": "/home/user/.local/share/buildkit"},
                                {"name": "push-secret", "mountPath": "/home/user/.docker", "readOnly": True},
                            ],
                        }
                    ],
                    "volumes": [
                        {"name": "context", "configMap": {"name": name, "items": items}},
                        {"name": "buildkitd", "emptyDir": {}},
                        {
                            "name": "push-secret",
                            "secret": {
                                "secretName": push_secret,
                                "items": [{"key": ".dockerconfigjson", "path": "config.json"}],
                            },
                        },
                    ],
                },
            },
        },
    }
    return [config_map, job]


def pushed_digest(log_text: str, reference: str) -> str | None:
    """The digest BuildKit reports for the pushed ``reference`` (``#12 pushing manifest for REF@sha256:…``),
    so pods run the image by digest, as after a local build and push."""
    found = re.findall(re.escape(reference) + r"@(sha256:[0-9a-f]{64})", log_text)
    return found[-1] if found else None


# ------------------------------------------------------------------------------------ running the Job
def run_build_job(
    config: ClusterConfig,
    manifests: Sequence[dict[str, Any]],
    *,
    hook: Any = None,
    poll_seconds: float = 10.0,
    timeout_seconds: float = 3600.0,
    logger: logging.Logger | None = None,
) -> str:
    """Create the build's ConfigMap and Job (see :mod:`dss_airflow.images.incluster`), wait for the Job
    and return its pod's log. Raises ExecutionError (with the log tail) when it fails or times out.

    A Job of the same name is the same build hash: it is followed, not created twice. The ConfigMap is
    deleted afterwards; the Job removes itself (``ttlSecondsAfterFinished``).
    """
    from kubernetes.client.exceptions import ApiException

    if hook is None:
        from dss_airflow.hooks.kubernetes import make_hook

        hook = make_hook(config.kubernetes_conn_id, config.context)
    logger = logger or log
    config_map, job = manifests
    namespace, name = job["metadata"]["namespace"], job["metadata"]["name"]
    core, batch = hook.core_v1_client, hook.batch_v1_client
    try:
        for create, body in (
            (core.create_namespaced_config_map, config_map),
            (batch.create_namespaced_job, job),
        ):
            try:
                create(namespace=namespace, body=body)
            except ApiException as exc:
                if exc.status != 409:
                    raise ExecutionError(f"cannot create {body['kind']} {namespace}/{name}: {exc}") from exc
                logger.info("%s %s/%s exists (same build hash): following it", body["kind"], namespace, name)
        finished = _wait_for_job(hook, name, namespace, poll_seconds, timeout_seconds, logger)
        logs = _job_logs(core, name, namespace)
        failed = hook.is_job_failed(finished) if finished is not None else "timed out"
        if failed:
            raise ExecutionError(
                f"in-cluster build job {namespace}/{name} failed ({failed})", logs=logs.splitlines()[-40:]
            )
        return logs
    finally:
        try:
            core.delete_namespaced_config_map(name=name, namespace=namespace)
        except ApiException as exc:
            if exc.status != 404:
                logger.warning("could not delete ConfigMap %s/%s: %s", namespace, name, exc)


def _wait_for_job(
    hook: Any, name: str, namespace: str, poll_seconds: float, timeout_seconds: float, logger: logging.Logger
) -> Any:
    """The finished Job (complete or failed), or None once ``timeout_seconds`` have passed."""
    deadline = time.monotonic() + timeout_seconds
    while True:
        job = hook.get_job_status(job_name=name, namespace=namespace)
        if hook.is_job_complete(job=job):
            return job
        if time.monotonic() >= deadline:
            return None
        logger.info("build job %s/%s still running", namespace, name)
        time.sleep(poll_seconds)


def _job_logs(core: Any, name: str, namespace: str) -> str:
    pods = core.list_namespaced_pod(namespace=namespace, label_selector=f"job-name={name}").items
    return "".join(
        str(core.read_namespaced_pod_log(name=pod.metadata.name, namespace=namespace, container="buildkit"))
        for pod in pods
    )


# ------------------------------------------------------------------------------------- one pair's build
@dataclass(frozen=True)
class InClusterBuild:
    """The in-cluster build of one pair: its manifests, and what its image is built from.

    The base image is referenced as configured (the cluster must be able to pull it); the lock is the one
    ``images build`` would use, so both builders install the same packages.
    """

    target: Target
    config: ClusterConfig
    registry_url: str
    manifests: list[dict[str, Any]]
    inputs: BuildInputs
    lock: Lock

    @property
    def tag(self) -> str:
        return image_tag(self.target.env, self.inputs.build_hash())

    @property
    def job(self) -> str:
        metadata = self.manifests[1]["metadata"]
        return f"{metadata['namespace']}/{metadata['name']}"

    def run(self, log_file: Path, run_job: Callable[..., str] | None = None) -> ImageRecord:
        """Run the Job (``run_job``, default :func:`run_build_job`; tests pass their own) and return the
        record of the image it pushed, by digest. A failure (Job failed or timed out, no digest in its
        log) raises ImageBuildError with the log tail, also written to ``log_file``."""
        reference = f"{self.registry_url}/{self.tag}"
        log_file.parent.mkdir(parents=True, exist_ok=True)
        try:
            logs = (run_job or run_build_job)(self.config, self.manifests)
        except DSSAirflowError as exc:
            tail = getattr(exc, "logs", [])
            log_file.write_text("\n".join(tail), encoding="utf-8")
            raise ImageBuildError(str(exc), logs=tail, log_file=log_file) from exc
        log_file.write_text(logs, encoding="utf-8")  # the whole Job log, also when it names no digest
        digest = pushed_digest(logs, reference)
        if digest is None:
            raise ImageBuildError(
                f"{self.target}: the build job's log names no pushed {reference}",
                logs=logs.splitlines()[-40:],
                log_file=log_file,
            )
        image = f"{reference.rpartition(':')[0]}@{digest}"
        return ImageRecord.built_from(self.inputs, self.lock, image=image, tag=self.tag)


def plan_in_cluster(planner: Planner, target: Target, push_secret: str | None = None) -> InClusterBuild:
    """The ConfigMap + Job that build and push the pair's image inside its cluster (no Docker daemon)."""
    config = planner.config(target.config)
    if not isinstance(config, ClusterConfig) or config.registry is None:
        raise DSSAirflowError(
            f"{target}: in-cluster builds are for kubernetes execution configs (or kubernetes spark "
            "configs) with a registry to push to"
        )
    secret = push_secret or (config.image_pull_secrets[0] if config.image_pull_secrets else None)
    if secret is None:
        raise DSSAirflowError(
            f"{target}: name the dockerconfigjson secret that may push to {config.registry.url} "
            "(--push-secret, or image_pull_secrets on the config)"
        )
    if planner.catalog.code_envs[target.env].r_packages_to_install:
        raise DSSAirflowError(
            f"{target}: in-cluster builds do not install R packages (their lock is resolved in a container "
            "of the base image): build it on a Docker daemon, `dss-airflow images build "
            f"{target.env} --config {target.config}`, which pushes to the config's registry"
        )
    base = planner.base_of(target.config)
    lock = planner.lock_of(target)
    inputs = planner.inputs(target, lock.sha256, base_digest=base.image)
    manifests = build_job_manifests(
        env_name=target.env,
        build_hash=inputs.build_hash(),
        lock_text=lock.text,
        base_image=base.image,
        registry_url=config.registry.url,
        namespace=config.namespace,
        push_secret=secret,
    )
    return InClusterBuild(target, config, config.registry.url, manifests, inputs, lock)
