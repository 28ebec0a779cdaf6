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


def test_every_dag_documents_itself_and_its_trigger_form():
    """The DAG page shows the module docstring and a description; every dropdown is a string (never
    null); execution configs (and code envs to rebuild) are shown with their descriptions."""
    import ast

    from airflow.dag_processing.dagbag import DagBag

    bag = DagBag(dag_folder=str(DAGS))
    for dag in bag.dags.values():
        docstring = ast.get_docstring(ast.parse(Path(dag.fileloc).read_text()), clean=False)
        assert docstring and dag.doc_md == docstring, dag.dag_id
        assert dag.description and len(dag.description) < 100, dag.dag_id
        for name in dag.params:
            schema = dag.params.get_param(name).schema
            if "enum" in schema:
                assert schema["type"] == "string" and None not in schema["enum"], (dag.dag_id, name)
            if name in ("execution_config", "env"):
                assert set(schema["values_display"]) == set(schema["enum"]), (dag.dag_id, name)
    form = bag.dags["dss_example_recipes"].params.get_param("execution_config").schema["values_display"]
    assert form["docker-small"] == "docker-small: Local Docker daemon, hard limits of 1 CPU and 512 MiB"
    assert form["inherit"] == "inherit: the global default (local)", "what inherit comes to for project demo"
    assert bag.dags["dss_example_notebook"].params.get_param("product").schema["type"] == "string"
