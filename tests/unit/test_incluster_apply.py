"""Applying the in-cluster build: the Job is created, followed and its pushed digest becomes the pair's
current image; failures keep the previous image. No API server can run here, so the provider hook is
replaced by an in-memory cluster (the live round trip is in tests/integration/test_kubernetes_live.py's
territory: it needs KUBECONFIG)."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest
from kubernetes.client import V1Job, V1JobCondition, V1JobStatus, V1ObjectMeta
from kubernetes.client.exceptions import ApiException

from dss_airflow.config.loader import load_catalog
from dss_airflow.errors import ExecutionError, ImageBuildError
from dss_airflow.images.incluster import pushed_digest, run_build_job
from dss_airflow.images.plan import Target
from dss_airflow.images.service import ImageService
from tests.helpers import EXAMPLE_CONFIG

DIGEST = "sha256:" + "d" * 64


class FakeCluster:
    """core_v1/batch_v1 clients and the hook's job helpers, over dicts; the Job ends after ``polls``."""

    def __init__(self, *, outcome: str = "Complete", polls: int = 2, log: str = "", job_exists: bool = False):
        self.outcome, self.polls, self.log = outcome, polls, log
        self.created: list[str] = []
        self.deleted: list[str] = []
        self.job_exists = job_exists
        self.core_v1_client = SimpleNamespace(
            create_namespaced_config_map=lambda namespace, body: self._create(body),
            delete_namespaced_config_map=lambda name, namespace: self.deleted.append(name),
            list_namespaced_pod=lambda namespace, label_selector: SimpleNamespace(
                items=[SimpleNamespace(metadata=SimpleNamespace(name=label_selector.split("=")[1] + "-x1"))]
            ),
            read_namespaced_pod_log=lambda name, namespace, container: self.log,
        )
        self.batch_v1_client = SimpleNamespace(
            create_namespaced_job=lambda namespace, body: self._create(body)
        )

    def _create(self, body: dict[str, Any]) -> None:
        if body["kind"] == "Job" and self.job_exists:
            raise ApiException(status=409, reason="AlreadyExists")
        self.created.append(body["kind"])

    def get_job_status(self, job_name: str, namespace: str) -> V1Job:
        self.polls -= 1
        conditions = [V1JobCondition(type=self.outcome, status="True")] if self.polls <= 0 else None
        return V1Job(metadata=V1ObjectMeta(name=job_name), status=V1JobStatus(conditions=conditions))

    @staticmethod
    def is_job_complete(job: V1Job) -> bool:
        return bool(job.status.conditions)

    @staticmethod
    def is_job_failed(job: V1Job) -> str | bool:
        conditions = job.status.conditions or []
        return next((c.reason or "BackoffLimitExceeded" for c in conditions if c.type == "Failed"), False)


@pytest.fixture
def service() -> ImageService:
    return ImageService(load_catalog(EXAMPLE_CONFIG))


def manifests(service: ImageService) -> list[dict[str, Any]]:
    return service.incluster_build(Target("stdlib", "k8s-small"))


def push_log(reference: str) -> str:
    return f"#9 exporting layers 1.2s done\n#9 pushing manifest for {reference}@{DIGEST} 0.3s done\n"


def test_the_job_is_created_followed_and_its_log_returned(service):
    cluster = FakeCluster(log="build ok\n", polls=3)
    config = service.catalog.execution_configs["k8s-small"]
    logs = run_build_job(config, manifests(service), hook=cluster, poll_seconds=0)
    assert cluster.created == ["ConfigMap", "Job"], "the context exists before the Job that mounts it"
    assert logs == "build ok\n"
    assert cluster.deleted, "the build context ConfigMap is removed afterwards"


def test_a_running_build_of_the_same_hash_is_followed_not_duplicated(service):
    cluster = FakeCluster(log="ok", job_exists=True)
    config = service.catalog.execution_configs["k8s-small"]
    assert run_build_job(config, manifests(service), hook=cluster, poll_seconds=0) == "ok"
    assert cluster.created == ["ConfigMap"]


@pytest.mark.parametrize(
    ("outcome", "polls", "expected"), [("Failed", 1, "failed"), ("Complete", 99, "timed out")]
)
def test_failed_or_timed_out_jobs_raise_with_the_log_tail(service, outcome, polls, expected):
    cluster = FakeCluster(outcome=outcome, polls=polls, log="step 1\nERROR: no space left on device\n")
    config = service.catalog.execution_configs["k8s-small"]
    with pytest.raises(ExecutionError, match=expected) as failure:
        run_build_job(config, manifests(service), hook=cluster, poll_seconds=0, timeout_seconds=0)
    assert "ERROR: no space left on device" in failure.value.logs
    assert cluster.deleted, "the ConfigMap is removed after a failure too"


def test_pushed_digest_is_read_from_the_buildkit_log():
    reference = "registry:5000/dss-code-envs:ml-0123456789ab"
    assert pushed_digest(push_log(reference), reference) == DIGEST
    assert pushed_digest(push_log(reference), "registry:5000/dss-code-envs:other-0123") is None


def test_a_successful_job_makes_the_pushed_digest_current_and_a_failure_keeps_it(service):
    target = Target("stdlib", "k8s-small")
    seen: list[str] = []

    def succeed(config: Any, jobs: list[dict[str, Any]]) -> str:
        command = jobs[1]["spec"]["template"]["spec"]["containers"][0]["command"][2]
        reference = command.split("name=")[1].split(",")[0]
        seen.append(reference)
        return push_log(reference)

    record = service.build_in_cluster(target, run_job=succeed)
    assert record.image == seen[0].rpartition(":")[0] + "@" + DIGEST, "pods run the pushed image by digest"
    assert service.ledger.pair("stdlib", "k8s-small").current == record

    def fail(config: Any, jobs: list[dict[str, Any]]) -> str:
        raise ExecutionError("in-cluster build job dss/x failed (BackoffLimitExceeded)", logs=["pip: boom"])

    with pytest.raises(ImageBuildError, match="BackoffLimitExceeded") as failure:
        service.build_in_cluster(target, run_job=fail)
    state = service.ledger.pair("stdlib", "k8s-small")
    assert state.current == record, "the previous image stays current"
    assert state.status == "failed" and "BackoffLimitExceeded" in (state.last_error or "")
    assert failure.value.log_file is not None, "the builder wrote a local log"
    assert state.last_log is not None and "pip: boom" in (service.ledger.log(state.last_log) or ""), (
        "the log tail is stored in the ledger, readable from any host"
    )


def test_a_job_whose_log_names_no_digest_fails_and_keeps_its_whole_log(service):
    target = Target("stdlib", "k8s-small")
    log = "#1 building\n#2 exporting to image\n#3 DONE, but pushed somewhere else\n"
    with pytest.raises(ImageBuildError, match="names no pushed") as failure:
        service.build_in_cluster(target, run_job=lambda config, jobs: log)
    assert failure.value.logs[-1] == "#3 DONE, but pushed somewhere else"
    state = service.ledger.pair("stdlib", "k8s-small")
    assert state.status == "failed"
    assert state.last_log is not None and service.ledger.log(state.last_log) == log, "the whole Job log"
