"""Code-env image builds inside a Kubernetes cluster that has no Docker daemon: a rootless BuildKit Job.

Pure rendering (no cluster needed): a ConfigMap holding the build context (Dockerfile, lock, runtime) and
a Job running ``buildctl-daemonless.sh`` from the rootless BuildKit image, which pushes
``<registry>/dss-code-envs:<env>-<hash12>`` with the credentials of an image-pull/push secret
(a ``kubernetes.io/dockerconfigjson`` secret, never YAML). Kaniko is archived; BuildKit rootless needs no
privileged container (only unconfined seccomp/AppArmor, as its documentation says).
"""

from __future__ import annotations

import re
import shlex
from typing import Any

from dss_airflow.images.envbuild import ENV_PREFIX, ENV_PYTHON, LOCK_IN_IMAGE
from dss_airflow.images.identity import IMAGE_REPOSITORY
from dss_airflow.k8s_names import dns_label, label_value
from dss_airflow.spec import HOST_RUNTIME_DIR, RUNTIME_DIR

#: Pinned, so a rebuild months later uses the same builder.
BUILDKIT_IMAGE = "moby/buildkit:v0.25.1-rootless"
BUILDKIT_UID = 1000


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
        **{
            f"runtime__{p.name}": p.read_text(encoding="utf-8") for p in sorted(HOST_RUNTIME_DIR.glob("*.py"))
        },
    }
    # ConfigMap keys cannot hold "/": runtime files are flattened, and the volume items restore the tree.
    items = [{"key": key, "path": key.replace("runtime__", "runtime/")} for key in files]
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
