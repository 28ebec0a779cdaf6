"""How vs where: a Kubernetes cluster chosen apart from the execution config, task > project > global."""

from __future__ import annotations

import pytest

from dss_airflow.config.loader import load_catalog
from dss_airflow.config.models import KubernetesExecutionConfig
from dss_airflow.config.resolve import resolve_execution
from dss_airflow.errors import InvalidConfigError, PermissionDeniedError
from tests.helpers import BASE_CONFIG, write_config

CLUSTERS = """
clusters:
  eu: {kubernetes_conn_id: k8s_eu}
  us: {kubernetes_conn_id: k8s_us, namespace: dss-us}
  gpu: {context: gpu-ctx, allowed_groups: [ml-team]}
"""


def catalog_with(tmp_path, extra: str = ""):
    config = BASE_CONFIG.replace("      data_dir: data\n", "      data_dir: data\n      cluster: eu\n")
    write_config(tmp_path, {"c.yaml": config, "clusters.yaml": CLUSTERS + extra})
    return load_catalog(tmp_path)


def resolved_config(catalog, **kwargs) -> KubernetesExecutionConfig:
    resolved = resolve_execution(catalog, project="demo", execution_config="k8s", code_env="plain", **kwargs)
    assert isinstance(resolved.execution_config, KubernetesExecutionConfig)
    return resolved.execution_config


def test_global_default_then_task_choice(tmp_path):
    catalog = catalog_with(tmp_path)
    assert resolved_config(catalog).kubernetes_conn_id == "k8s_eu", "global default"
    us = resolved_config(catalog, cluster="us")
    assert (us.kubernetes_conn_id, us.namespace) == ("k8s_us", "dss-us"), "task choice wins"
    assert resolved_config(catalog, cluster="inherit").kubernetes_conn_id == "k8s_eu"
    assert us.resources == catalog.execution_configs["k8s"].resources, "the config's 'how' is kept"


def test_project_default_sits_between(tmp_path):
    write_config(tmp_path, {"p.yaml": ""})
    config = BASE_CONFIG.replace(
        "        groups: [analysts]\n", "        groups: [analysts]\n        default_cluster: us\n"
    )
    write_config(tmp_path, {"c.yaml": config, "clusters.yaml": CLUSTERS})
    catalog = load_catalog(tmp_path)
    assert resolved_config(catalog).kubernetes_conn_id == "k8s_us"


def test_docker_configs_ignore_clusters(tmp_path):
    catalog = catalog_with(tmp_path)
    resolved = resolve_execution(
        catalog, project="demo", execution_config="docker-small", code_env="plain", cluster="us"
    )
    assert resolved.cluster_name is None


def test_bad_cluster_choices_are_clear(tmp_path):
    catalog = catalog_with(tmp_path)
    with pytest.raises(Exception, match=r"unknown cluster 'uss'.*Did you mean 'us'"):
        resolved_config(catalog, cluster="uss")
    with pytest.raises(PermissionDeniedError, match="may not use cluster 'gpu'"):
        resolved_config(catalog, cluster="gpu")
    with pytest.raises(InvalidConfigError, match="a cluster needs a kubernetes_conn_id"):
        catalog_with(tmp_path, "  empty: {description: nothing}\n")


def test_the_pod_operator_targets_the_chosen_cluster(tmp_path):
    from dss_airflow.backends.kubernetes import operator_kwargs

    catalog = catalog_with(tmp_path)
    kwargs = operator_kwargs(k8s_pod(), resolved_config(catalog, cluster="us"))
    assert (kwargs["kubernetes_conn_id"], kwargs["namespace"]) == ("k8s_us", "dss-us")


def k8s_pod():
    from kubernetes.client import V1ObjectMeta, V1Pod

    return V1Pod(metadata=V1ObjectMeta(name="p"))
