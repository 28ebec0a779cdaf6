"""Every DAG in dags/ loads without import errors (as the scheduler's DAG processor would)."""

from __future__ import annotations

from pathlib import Path

DAGS = Path(__file__).resolve().parents[1] / "dags"


def test_every_dag_file_loads():
    from airflow.dag_processing.dagbag import DagBag

    bag = DagBag(dag_folder=str(DAGS))
    assert bag.import_errors == {}
    files = {Path(dag.fileloc).name for dag in bag.dags.values()}
    assert files == {p.name for p in DAGS.glob("*.py")}, "each file in dags/ defines at least one DAG"
    assert "dss_example_recipes" in bag.dags


def test_example_dag_offers_only_permitted_configs_in_the_trigger_form():
    from airflow.dag_processing.dagbag import DagBag

    dag = DagBag(dag_folder=str(DAGS / "dss_example_recipes.py")).dags["dss_example_recipes"]
    schema = dag.params.get_param("execution_config").schema
    assert schema["enum"] == ["inherit", "docker-small", "k8s-small", "local"], "docker-gpu is ml-team only"
