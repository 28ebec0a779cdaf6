"""A recipe run for real on a cluster through DSSContainerRecipeOperator (needs KUBECONFIG).

Set ``KUBECONFIG`` to a kubeconfig file and ``DSS_K8S_TEST_CONFIG_DIR`` to a config directory whose
``k8s-live`` kubernetes execution config, ``live`` code env (image built and pushed), ``live-out`` managed
folder (pvc) and project (pvc) exist in that cluster; the project holds ``recipes/live.py``.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.helpers import fake_context

pytestmark = pytest.mark.kubernetes

KUBECONFIG = os.environ.get("KUBECONFIG", "")
CONFIG_DIR = os.environ.get("DSS_K8S_TEST_CONFIG_DIR", "")


@pytest.fixture
def live_config_dir() -> str:
    if not KUBECONFIG or not Path(KUBECONFIG).is_file():
        pytest.skip(f"no Kubernetes cluster: KUBECONFIG is unset or not a file ({KUBECONFIG!r})")
    if not CONFIG_DIR or not Path(CONFIG_DIR).is_dir():
        pytest.skip("DSS_K8S_TEST_CONFIG_DIR is unset: name a config dir with the k8s-live config")
    return CONFIG_DIR


def test_recipe_runs_in_a_pod_and_promotes_its_output(live_config_dir):
    from dss_airflow import DSSContainerRecipeOperator

    operator = DSSContainerRecipeOperator(
        task_id="live",
        recipe="recipes/live.py",
        code_env="live",
        execution_config="k8s-live",
        outputs={"out": "live-out/run"},
        recipe_params={"n": 3},
        config_dir=live_config_dir,
    )
    result = operator.execute(fake_context(dag_id="k8s_live", task_id="live"))
    assert result["status"] == "success"
    assert result["execution_config"] == "k8s-live"
    assert result["outputs"]["out"], "the recipe's files were promoted in the pod"
