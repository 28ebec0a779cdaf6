"""`dss-airflow k8s render DAG TASK`: the exact pod a task would submit, valid for the cluster's API."""

from __future__ import annotations

from pathlib import Path

import kubernetes_validate
import pytest
import yaml

from dss_airflow.cli import main

DAGS = Path(__file__).resolve().parents[2] / "dags"


@pytest.mark.parametrize("version", ["1.36.0", "1.37.0"])
def test_render_example_task_on_kubernetes(capsys, version):
    code = main(
        ["k8s", "render", "dss_example_recipes", "summarize_orders", "--config", "k8s-small",
         "--dags-folder", str(DAGS)]
    )  # fmt: skip
    assert code == 0
    out = capsys.readouterr().out
    assert out.startswith("# no image is built for code env 'stdlib' on execution config 'k8s-small'")
    pod = yaml.safe_load(out)
    kubernetes_validate.validate(pod, version, strict=True)
    container = next(c for c in pod["spec"]["containers"] if c["name"] == "base")
    assert container["image"] == "registry.example.internal:5000/dss-code-envs:stdlib-NOT-BUILT"
    assert container["resources"] == {
        "limits": {"cpu": "1", "memory": "1Gi"},
        "requests": {"cpu": "250m", "memory": "256Mi"},
    }
    assert pod["metadata"]["namespace"] == "dss"
    assert pod["spec"]["imagePullSecrets"] == [{"name": "dss-registry-pull"}]
    assert {c["name"] for c in pod["spec"]["containers"]} == {"base", "airflow-xcom-sidecar"}


def test_render_refuses_a_non_kubernetes_config(capsys):
    code = main(["k8s", "render", "dss_example_recipes", "summarize_orders", "--dags-folder", str(DAGS)])
    assert code == 1
    assert "not on a kubernetes execution config" in capsys.readouterr().err
