"""`import dss_airflow` must stay cheap at DAG-parse time: no Airflow, Docker, Kubernetes or pydantic."""

from __future__ import annotations

import json
import subprocess
import sys

HEAVY = ("airflow", "docker", "kubernetes", "pydantic", "yaml")


def loaded_modules(code: str) -> set[str]:
    script = f"{code}\nimport sys, json\nprint(json.dumps(sorted(sys.modules)))"
    output = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True).stdout
    return {name.split(".")[0] for name in json.loads(output)}


def test_import_dss_airflow_loads_nothing_heavy():
    assert not loaded_modules("import dss_airflow") & set(HEAVY)


def test_recipe_operator_does_not_load_kubernetes_or_docker():
    modules = loaded_modules("from dss_airflow import DSSContainerRecipeOperator")
    assert "airflow" in modules, "sanity: the operator itself was imported"
    assert not modules & {"kubernetes", "docker"}
