"""R recipes for real: a base image with ``r: true`` (R and jsonlite from Debian's packages, CRAN being out
of reach) and the R runtime dss_recipe.R, run through the Docker backend like a Python recipe."""

from __future__ import annotations

import json
import uuid

import pytest

from dss_airflow.errors import ExecutionError
from dss_airflow.operators.recipe import DSSContainerRecipeOperator
from tests.helpers import fake_context, leftover_staging, make_project, notebook_json, write_config

pytestmark = pytest.mark.docker

R_IMAGE = "dss-airflow-test-r:bookworm"

CONFIG = """
    defaults: {project: demo, code_env: r-plain, data_dir: data}
    base_images:
      base-r:
        image: dss-airflow-test-r:bookworm
        from: BASE
        r: true
    execution_configs:
      docker-r: {type: docker, base_image: base-r, resources: {memory: 512m, cpus: 1}}
    code_envs:
      r-plain: {}
      r-dt: {r_packages: [data.table]}
      r-bad: {r_packages: [jsonlite, notapackage]}
      r-nb: {notebook: true, r_packages: [jsonlite]}
    managed_folders:
      raw: {path: raw}
      out: {path: out}
      reports: {path: reports}
    projects:
      demo: {root: project}
"""


RECIPES = {
    "notebooks/double.ipynb": notebook_json(
        "value <- x * 2\ncat(sprintf('%s: %d\\n', label, value))",
        "writeLines(as.character(value), file.path(output_dir('reports'), 'value.txt'))\n"
        "set_result(list(value = value, uid = as.integer(system('id -u', intern = TRUE))))",
        parameters="x <- 1\nlabel <- 'default'",
        language="R",
    ),
    "recipes/summarise.R": """
        orders <- jsonlite::fromJSON(file.path(input_path("raw"), "orders.json"))
        p <- params()
        big <- orders[orders$amount >= p$threshold, ]
        jsonlite::write_json(big, file.path(output_dir("out"), "big.json"))
        set_result(list(rows = nrow(big), total = sum(big$amount), r = R.version$major,
                        uid = as.integer(system("id -u", intern = TRUE))))
    """,
    "recipes/dt.R": """
        library(data.table)
        dt <- data.table(g = c("a", "b", "a"), x = c(1, 2, 3))
        set_result(list(sums = as.list(dt[, .(s = sum(x)), by = g][order(g)]$s),
                        version = as.character(packageVersion("data.table"))))
    """,
    "recipes/fails.R": """
        writeLines("half a file", file.path(output_dir("out"), "partial.csv"))
        check_row <- function(row) if (row > 41) stop(sprintf("bad row %d", row))
        for (row in 40:43) check_row(row)
    """,
}


@pytest.fixture(scope="module")
def r_config(tmp_path_factory, base_image):
    """The config, and the R base image built once from the air-gapped base (Debian's r-base-core)."""
    from dss_airflow.config.loader import load_catalog
    from dss_airflow.images.base import build_base_image

    root = tmp_path_factory.mktemp("r-recipes")
    write_config(root, {"c.yaml": CONFIG.replace("BASE", base_image)})
    make_project(root, RECIPES)
    (root / "data" / "raw").mkdir(parents=True)
    orders = [{"id": 1, "amount": 5}, {"id": 2, "amount": 50}, {"id": 3, "amount": 70}]
    (root / "data" / "raw" / "orders.json").write_text(json.dumps(orders))
    build_base_image(load_catalog(root), "base-r", progress=lambda *args: None)
    return root


def operator(config_dir, recipe: str, **kwargs) -> DSSContainerRecipeOperator:
    return DSSContainerRecipeOperator(
        task_id=recipe.split("/")[-1].removesuffix(".R"),
        recipe=recipe,
        execution_config="docker-r",
        config_dir=str(config_dir),
        **kwargs,
    )


def test_an_r_recipe_reads_an_input_writes_an_output_and_returns_a_result(r_config, docker_client):
    dag_id = f"dag-{uuid.uuid4().hex[:8]}"
    op = operator(
        r_config, "recipes/summarise.R", inputs=["raw"], outputs=["out"], recipe_params={"threshold": 10}
    )
    result = op.execute(fake_context(dag_id=dag_id))
    assert result["result"] == {"rows": 2, "total": 120, "r": "4", "uid": 1000}
    assert result["image"] == R_IMAGE
    written = json.loads((r_config / "data" / "out" / "big.json").read_text())
    assert [row["id"] for row in written] == [2, 3]
    assert result["outputs"] == {"out": [str(r_config / "data" / "out" / "big.json")]}
    assert leftover_staging(r_config / "data") == []
    assert docker_client.containers.list(all=True, filters={"label": f"dss_airflow.dag_id={dag_id}"}) == []


def test_a_failing_r_recipe_fails_with_its_r_error_and_writes_nothing(r_config, docker_client):
    dag_id = f"dag-{uuid.uuid4().hex[:8]}"
    before = (
        sorted(p.name for p in (r_config / "data" / "out").glob("*"))
        if (r_config / "data" / "out").exists()
        else []
    )
    with pytest.raises(ExecutionError) as info:
        operator(r_config, "recipes/fails.R", outputs=["out"]).execute(fake_context(dag_id=dag_id))
    message = str(info.value)
    assert "R error: bad row 42" in message and "at fails.R:3" in message, message
    logs = "\n".join(info.value.logs)
    assert "R traceback (outermost first):" in logs and "check_row(row) at fails.R:4" in logs, logs
    assert "Traceback (most recent call last)" not in logs, "no Python traceback of the runner"
    after = (
        sorted(p.name for p in (r_config / "data" / "out").glob("*"))
        if (r_config / "data" / "out").exists()
        else []
    )
    assert after == before and "partial.csv" not in after, "a failed R recipe promotes nothing"
    assert leftover_staging(r_config / "data") == []
    assert docker_client.containers.list(all=True, filters={"label": f"dss_airflow.dag_id={dag_id}"}) == []


def test_r_packages_come_from_the_distribution_and_an_unknown_one_fails_the_build(r_config):
    from dss_airflow.config.loader import load_catalog
    from dss_airflow.images.plan import Target
    from dss_airflow.images.service import ImageService

    images = ImageService(load_catalog(r_config))
    report = images.build(envs=["r-dt", "r-bad"])
    error = report.failed[Target("r-bad", "docker-r")]
    assert "R packages not in the distribution: notapackage (r-cran-notapackage)" in error, error
    assert Target("r-dt", "docker-r") not in report.failed, report.failed
    result = operator(r_config, "recipes/dt.R", code_env="r-dt").execute(fake_context(dag_id="dt"))
    assert result["result"]["sums"] == [4, 2] and result["result"]["version"].startswith("1.")
    current = images.ledger.pair("r-dt", "docker-r").current
    assert current is not None and result["image"] == current.image


def test_an_r_notebook_runs_in_its_container_with_r_parameters(r_config, docker_client):
    from dss_airflow.config.loader import load_catalog
    from dss_airflow.images.service import ImageService
    from dss_airflow.operators.notebook import DSSNotebookOperator

    assert ImageService(load_catalog(r_config)).build(envs=["r-nb"]).ok
    dag_id = f"dag-{uuid.uuid4().hex[:8]}"
    outcome = DSSNotebookOperator(
        task_id="double",
        notebook="notebooks/double.ipynb",
        code_env="r-nb",
        execution_config="docker-r",
        output="reports",
        parameters={"x": 21, "label": "answer"},
        config_dir=str(r_config),
    ).execute(fake_context(dag_id=dag_id))
    assert outcome["result"] == {"value": 42, "uid": 1000}
    reports = r_config / "data" / "reports"
    cells = json.loads((reports / "double.ipynb").read_text())["cells"]
    (injected,) = [cell for cell in cells if "injected-parameters" in cell["metadata"].get("tags", [])]
    assert "x = 21" in "".join(injected["source"]), "papermill injects R assignments"
    outputs = "".join("".join(o.get("text", "")) for cell in cells for o in cell.get("outputs", []))
    assert "answer: 42" in outputs
    assert (reports / "value.txt").read_text().strip() == "42"
    assert docker_client.containers.list(all=True, filters={"label": f"dss_airflow.dag_id={dag_id}"}) == []
