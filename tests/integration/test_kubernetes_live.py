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


def test_in_cluster_build_pushes_and_becomes_current(live_config_dir):
    """`images build-job --apply`: the BuildKit Job runs in the cluster and its digest becomes current
    (needs the config's registry, reachable from the cluster, and its push secret)."""
    from dss_airflow.config.loader import load_catalog
    from dss_airflow.images.plan import Target
    from dss_airflow.images.service import ImageService

    service = ImageService(load_catalog(live_config_dir))
    record = service.build_in_cluster(Target("live", "k8s-live"))
    assert "@sha256:" in record.image
    assert service.ledger.pair("live", "k8s-live").current == record


def test_deferrable_recipe_run_resumes_after_the_trigger(live_config_dir):
    """The deferral path for real: start, defer to the provider's trigger, run the trigger here, resume."""
    import asyncio

    from airflow.sdk.exceptions import TaskDeferred

    from dss_airflow import DSSContainerRecipeOperator

    def operator() -> DSSContainerRecipeOperator:
        return DSSContainerRecipeOperator(
            task_id="live_deferred",
            recipe="recipes/live.py",
            code_env="live",
            execution_config="k8s-live",
            outputs={"out": "live-out/deferred"},
            recipe_params={"n": 2},
            config_dir=live_config_dir,
            deferrable=True,
        )

    context = fake_context(dag_id="k8s_live", task_id="live_deferred")
    with pytest.raises(TaskDeferred) as deferred:
        operator().execute(context)

    async def first_event() -> dict:
        async for event in deferred.value.trigger.run():
            return dict(event.payload)
        raise AssertionError("the trigger ended without an event")

    event = asyncio.run(first_event())
    result = operator().resume_execution(
        deferred.value.method_name, {**(deferred.value.kwargs or {}), "event": event}, context
    )
    assert result["status"] == "success" and result["outputs"]["out"]
