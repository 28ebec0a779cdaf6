"""Image targets and their plan without Docker: kubernetes spark configs named in ``build_for`` are targets
like kubernetes execution configs (local daemon, registry required, pushed by digest, in-cluster builds)."""

from __future__ import annotations

from typing import Any

import pytest

from dss_airflow.config.loader import load_catalog
from dss_airflow.errors import DSSAirflowError, UnknownNameError
from dss_airflow.hooks.docker import DEFAULT_DOCKER_HOST
from dss_airflow.images.ledger import Ledger
from dss_airflow.images.plan import Planner, Target
from dss_airflow.images.service import ImageService
from tests.helpers import BASE_CONFIG, write_config

DIGEST = "sha256:" + "e" * 64
SPARK_TARGETS = """
    base_images:
      spark-py: {image: "apache/spark:4.0.0-python3", pip_index_url: "https://pypi.internal/simple"}
    spark_configs:
      k8s-spark:
        type: kubernetes
        base_image: spark-py
        namespace: spark-jobs
        registry: {url: "registry.example.com:5000/team"}
        image_pull_secrets: [regcred]
      k8s-spark-unpushed:
        type: kubernetes
        base_image: spark-py
      local-spark: {type: local}
    code_envs:
      jobs: {build_for: [docker-small, k8s-spark, k8s-spark-unpushed, local-spark]}
"""


@pytest.fixture
def catalog(tmp_path):
    write_config(tmp_path, {"base.yaml": BASE_CONFIG, "spark.yaml": SPARK_TARGETS})
    return load_catalog(tmp_path)


@pytest.fixture
def planner(catalog, tmp_path) -> Planner:
    return Planner(catalog, Ledger.local(tmp_path / "state"))


def test_a_kubernetes_spark_config_named_in_build_for_is_a_target(planner):
    assert planner.targets(envs=["jobs"]) == [
        Target("jobs", "docker-small"),
        Target("jobs", "k8s-spark"),
        Target("jobs", "k8s-spark-unpushed"),
    ], "local spark runs in the env's virtualenv: no image"
    assert [t.config for t in planner.targets(envs=["plain"])] == [
        "docker-restricted",
        "docker-small",
        "k8s",
    ], "build_for: all means execution configs only (a spark config's base must be a Spark image)"
    assert planner.targets(configs=["k8s-spark"]) == [Target("jobs", "k8s-spark")]


def test_a_spark_target_builds_on_the_local_daemon_from_its_own_base(planner, monkeypatch):
    assert planner.daemon_of("k8s-spark") == DEFAULT_DOCKER_HOST
    assert planner.base_of("k8s-spark").image == "apache/spark:4.0.0-python3"
    seen: dict[str, Any] = {}

    def resolve_lock(requirements: list[str], **kwargs: Any) -> Any:
        seen.update(kwargs)
        return "lock"

    monkeypatch.setattr("dss_airflow.images.plan.resolve_lock", resolve_lock)
    planner.lock_of(Target("jobs", "k8s-spark"))
    assert seen["index_url"] == "https://pypi.internal/simple", "the spark config's base's package index"


def test_the_plan_of_spark_targets_builds_or_blocks_them(planner):
    plan = {str(item.target): item for item in planner.plan(envs=["jobs"], check_base=False)}
    assert (plan["jobs/k8s-spark"].action, plan["jobs/k8s-spark"].reasons) == ("build", ["never built"])
    unpushed = plan["jobs/k8s-spark-unpushed"]
    assert unpushed.action == "blocked"
    assert unpushed.reasons == ["kubernetes config without a registry: the cluster could not pull the image"]


def test_unknown_and_imageless_config_names_are_refused(planner):
    with pytest.raises(UnknownNameError, match=r"unknown execution or spark config 'k8s-sprak'") as info:
        planner.targets(configs=["k8s-sprak"])
    assert info.value.suggestion == "k8s-spark"
    with pytest.raises(
        DSSAirflowError, match="'local-spark' is a local config: its tasks run no code-env image"
    ):
        planner.config("local-spark")


def test_building_a_spark_target_without_registry_fails_and_is_recorded(catalog, tmp_path):
    service = ImageService(catalog, Ledger.local(tmp_path / "state"))
    report = service.build(envs=["jobs"], configs=["k8s-spark-unpushed"])
    assert report.failed == {
        Target("jobs", "k8s-spark-unpushed"): (
            "kubernetes config without a registry: the cluster could not pull the image"
        )
    }
    assert service.ledger.pair("jobs", "k8s-spark-unpushed").status == "failed"


def test_a_spark_target_builds_in_its_cluster_and_runs_by_digest(catalog, tmp_path):
    service = ImageService(catalog, Ledger.local(tmp_path / "state"))
    target = Target("jobs", "k8s-spark")
    config_map, job = service.incluster_build(target)
    assert job["metadata"]["namespace"] == "spark-jobs"
    pod = job["spec"]["template"]["spec"]
    assert pod["volumes"][2]["secret"]["secretName"] == "regcred", "the spark config's pull secret"
    assert config_map["data"]["Dockerfile"].startswith("FROM apache/spark:4.0.0-python3\n")
    reference = pod["containers"][0]["command"][2].split("name=")[1].split(",")[0]
    assert reference.startswith("registry.example.com:5000/team/dss-code-envs:jobs-")

    def run_job(config: Any, manifests: list[dict[str, Any]]) -> str:
        assert config is catalog.spark_configs["k8s-spark"]
        return f"#9 pushing manifest for {reference}@{DIGEST} 0.3s done\n"

    record = service.build_in_cluster(target, run_job=run_job)
    assert record.image == f"registry.example.com:5000/team/dss-code-envs@{DIGEST}"
    assert service.ledger.pair("jobs", "k8s-spark").current == record
