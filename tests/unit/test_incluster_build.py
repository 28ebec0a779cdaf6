"""The in-cluster build Job (rootless BuildKit): rendered and validated against the Kubernetes schemas."""

from __future__ import annotations

import json

import kubernetes_validate
import pytest

from dss_airflow.images.incluster import BUILDKIT_IMAGE, build_job_manifests

VERSIONS = ["1.36.0", "1.37.0"]


@pytest.fixture
def manifests():
    return build_job_manifests(
        env_name="pandas",
        build_hash="ab" * 32,
        lock_text="numpy==2.3.0\npandas==2.2.3\n",
        base_image="registry.local:5000/dss-airflow-base@sha256:" + "c" * 64,
        registry_url="registry.local:5000",
        namespace="dss-builds",
        push_secret="registry-push",
    )


@pytest.mark.parametrize("version", VERSIONS)
def test_manifests_pass_strict_schema_validation(manifests, version):
    for manifest in manifests:
        kubernetes_validate.validate(manifest, version, strict=True)


def test_job_builds_and_pushes_the_content_tag_rootless(manifests):
    config_map, job = manifests
    assert config_map["kind"] == "ConfigMap" and job["kind"] == "Job"
    pod = job["spec"]["template"]["spec"]
    container = pod["containers"][0]
    assert container["image"] == BUILDKIT_IMAGE
    assert (
        "type=image,name=registry.local:5000/dss-code-envs:pandas-abababababab,push=true"
        in container["command"][2]
    )
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert not container["securityContext"].get("privileged")
    assert job["spec"]["backoffLimit"] == 0
    dockerfile = config_map["data"]["Dockerfile"]
    assert dockerfile.startswith("FROM registry.local:5000/dss-airflow-base@sha256:ccc")
    assert "USER 1000:1000" in dockerfile and 'dss_airflow.build_hash="' + "ab" * 32 + '"' in dockerfile
    items = {item["path"] for item in pod["volumes"][0]["configMap"]["items"]}
    assert {"Dockerfile", "requirements.lock", "runtime/runner.py", "runtime/dss_recipe.py"} <= items


def test_no_credentials_in_the_manifests(manifests):
    config_map, *rest = manifests
    # The runtime's sources (which speak of passwords: dss_recipe.connection) are code, not values.
    data = {key: value for key, value in config_map["data"].items() if not key.startswith("runtime-")}
    text = json.dumps([{**config_map, "data": data}, *rest])
    assert "password" not in text.lower() and "auth" not in text.replace("authorization", "")
    secret = manifests[1]["spec"]["template"]["spec"]["volumes"][2]["secret"]
    assert secret["secretName"] == "registry-push", "credentials come from a dockerconfigjson secret"


def test_cli_prints_the_build_job_of_a_kubernetes_pair(capsys):
    from pathlib import Path

    import yaml

    from dss_airflow.cli import main

    config_dir = Path(__file__).resolve().parents[2] / "examples" / "config"
    assert (
        main(["images", "build-job", "stdlib", "--config", "k8s-small", "--config-dir", str(config_dir)]) == 0
    )
    config_map, job = list(yaml.safe_load_all(capsys.readouterr().out))
    for version in VERSIONS:
        kubernetes_validate.validate(job, version, strict=True)
        kubernetes_validate.validate(config_map, version, strict=True)
    assert job["metadata"]["namespace"] == "dss"
    secret = job["spec"]["template"]["spec"]["volumes"][2]["secret"]["secretName"]
    assert secret == "dss-registry-pull", "the config's pull secret by default"
    assert (
        "registry.example.internal:5000/dss-code-envs:stdlib-"
        in job["spec"]["template"]["spec"]["containers"][0]["command"][2]
    )
    assert (
        main(["images", "build-job", "stdlib", "--config", "docker-small", "--config-dir", str(config_dir)])
        == 1
    )
    assert "in-cluster builds are for kubernetes execution configs" in capsys.readouterr().err


def test_an_env_with_r_packages_is_not_built_in_the_cluster(tmp_path, capsys):
    from dss_airflow.cli import main
    from tests.helpers import write_config

    write_config(
        tmp_path,
        {
            "c.yaml": """
            base_images:
              b: {image: "example/base:1"}
            execution_configs:
              k8s:
                type: kubernetes
                base_image: b
                registry: {url: "registry.example.internal:5000", connection_id: reg}
                image_pull_secrets: [pull]
            code_envs:
              r-env: {r_packages: [data.table]}
            """
        },
    )
    assert main(["images", "build-job", "r-env", "--config", "k8s", "--config-dir", str(tmp_path)]) == 1
    error = capsys.readouterr().err
    assert "in-cluster builds do not install R packages" in error, error
    assert "dss-airflow images build r-env --config k8s" in error, "the command that does build it"
