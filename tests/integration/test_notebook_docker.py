"""Notebooks for real: papermill in the code env's Docker image (and in its local virtualenv), a failing
cell, and `dss-airflow notebook serve` answering on loopback with its token only, then `stop`.

The notebook env's image is built once for the module through the one build path (ImageService), with a
module-wide state directory (the image ledger) that every test here uses.
"""

from __future__ import annotations

import csv
import json
import random
import shutil
import urllib.error
import urllib.request
import uuid
from typing import TYPE_CHECKING, Any

import pytest

from dss_airflow.cli import main
from dss_airflow.config.loader import load_catalog
from dss_airflow.errors import ExecutionError
from dss_airflow.notebook_server import SERVER_LABEL, free_port, serve, servers_dir
from dss_airflow.operators.notebook import DSSNotebookOperator
from tests.helpers import EXAMPLE_CONFIG, fake_context, leftover_staging, notebook_json, write_config

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path

pytestmark = [pytest.mark.docker]

CONFIG = """
    defaults: {project: demo, data_dir: data, allowed_roots: [PROJECT_ROOT]}
    base_images:
      base: {image: BASE_IMAGE}
    execution_configs:
      docker-nb:
        type: docker
        base_image: base
        resources: {memory: 1g, cpus: 1.0, shm_size: 64m}
    code_envs:
      nb: {notebook: true, build_for: [docker-nb]}
    managed_folders:
      raw: {path: raw}
      reports: {path: reports}
    projects:
      demo: {root: PROJECT_ROOT}
"""
EXAMPLE_PROJECT = EXAMPLE_CONFIG.parent / "demo_project"


NOTEBOOKS = {
    "notebooks/double.ipynb": notebook_json(
        "from helpers import double  # the project's lib/\n"
        "import dss_recipe\n"
        "value = double(x)\n"
        "print(f'{label}: {value}')",
        "(dss_recipe.output_dir('reports') / 'value.txt').write_text(str(value))\n"
        "dss_recipe.set_result({'value': value, 'params': dss_recipe.params()})",
        parameters="x = 1\nlabel = 'default'",
    ),
    "notebooks/fails.ipynb": notebook_json(
        "import dss_recipe\n(dss_recipe.output_dir('reports') / 'partial.txt').write_text('half')",
        "def ratio():\n    return 1 / 0\nratio()",
        "print('never printed')",
    ),
}


@pytest.fixture(scope="module")
def state(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("notebook-state")


@pytest.fixture(scope="module")
def config_dir(tmp_path_factory: pytest.TempPathFactory, base_image: str, state: Path) -> Path:
    """Config and project; the env's image built once, with the module's state directory."""
    directory = tmp_path_factory.mktemp("notebook-config")
    project = directory / "project"
    for name, text in {**NOTEBOOKS, "lib/helpers.py": "def double(x):\n    return 2 * x\n"}.items():
        (project / name).parent.mkdir(parents=True, exist_ok=True)
        (project / name).write_text(text)
    yaml = CONFIG.replace("BASE_IMAGE", base_image).replace("PROJECT_ROOT", str(project))
    write_config(directory, {"c.yaml": yaml})
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("DSS_AIRFLOW_STATE", str(state))
        from dss_airflow.images.service import ImageService

        report = ImageService(load_catalog(directory)).build(envs=["nb"], configs=["docker-nb"])
    assert report.ok, report.failed
    return directory


@pytest.fixture(autouse=True)
def _module_state(_isolated_state: None, state: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every test reads the ledger the module's build wrote (it replaces the per-test state)."""
    monkeypatch.setenv("DSS_AIRFLOW_STATE", str(state))


@pytest.fixture
def reports(config_dir: Path) -> Iterator[Path]:
    folder = config_dir / "data" / "reports"
    yield folder
    shutil.rmtree(folder, ignore_errors=True)


def task(config_dir: Path, name: str, **kwargs: Any) -> DSSNotebookOperator:
    return DSSNotebookOperator(
        task_id=name.removesuffix(".ipynb"),
        notebook=f"notebooks/{name}",
        code_env="nb",
        config_dir=str(config_dir),
        **kwargs,
    )


def containers_of(docker_client: Any, dag_id: str) -> list[Any]:
    return docker_client.containers.list(all=True, filters={"label": f"dss_airflow.dag_id={dag_id}"})


def outputs_of(executed: Path) -> list[str]:
    cells = json.loads(executed.read_text())["cells"]
    return ["".join(output.get("text", "")) for cell in cells for output in cell.get("outputs", [])]


# ------------------------------------------------------------------------------------ tasks
def test_parameterised_notebook_runs_in_the_container_into_the_managed_folder(
    config_dir, reports, docker_client
):
    dag_id = f"dag-{uuid.uuid4().hex[:8]}"
    outcome = task(
        config_dir,
        "double.ipynb",
        execution_config="docker-nb",
        output="reports/weekly",
        parameters={"x": 21, "label": "answer"},
    ).execute(fake_context(dag_id=dag_id))
    executed, html = reports / "weekly" / "double.ipynb", reports / "weekly" / "double.html"
    assert outcome["output_notebook"] == str(executed) and outcome["html"] == str(html)
    assert outcome["result"] == {"value": 42, "params": {"x": 21, "label": "answer"}}
    assert outcome["cells"] == 4 and outcome["image"].startswith("dss-code-envs:nb-")
    assert sorted(outcome["files"]) == sorted(
        str(p) for p in (executed, html, reports / "weekly" / "value.txt")
    )
    cells = json.loads(executed.read_text())["cells"]
    (injected,) = [cell for cell in cells if "injected-parameters" in cell["metadata"].get("tags", [])]
    assert "x = 21" in "".join(injected["source"]) and 'label = "answer"' in "".join(injected["source"])
    assert "answer: 42\n" in outputs_of(executed), "the output cell shows the computed value"
    assert "answer: 42" in html.read_text()
    assert (reports / "weekly" / "value.txt").read_text() == "42"
    assert leftover_staging(reports.parent) == []
    json.dumps(outcome)  # XCom-safe
    assert containers_of(docker_client, dag_id) == []


def test_failing_cell_fails_the_task_with_its_traceback_and_writes_nothing(
    config_dir, reports, docker_client
):
    dag_id = f"dag-{uuid.uuid4().hex[:8]}"
    with pytest.raises(ExecutionError) as caught:
        task(config_dir, "fails.ipynb", execution_config="docker-nb", output="reports").execute(
            fake_context(dag_id=dag_id)
        )
    message, logs = str(caught.value), "\n".join(caught.value.logs)
    assert "notebook notebooks/fails.ipynb failed on docker-nb (docker)" in message
    assert "cell 2 of 3 failed: ZeroDivisionError: division by zero" in message
    assert "[dss-notebook] source of the failing cell:" in logs and "return 1 / 0" in logs
    assert "ZeroDivisionError" in logs and "----> 3 ratio()" in logs, "the cell's traceback is in the log"
    assert "never printed" not in logs
    assert not reports.exists() or list(reports.rglob("*")) == [], "no partial notebook, no partial file"
    assert containers_of(docker_client, dag_id) == []


def test_notebook_runs_in_the_local_virtualenv_too(tmp_path):
    """The example notebook itself, with the example project's lib/, on the built-in local config."""
    raw = tmp_path / "data" / "raw"
    raw.mkdir(parents=True)
    rng = random.Random(3)
    with (raw / "orders.csv").open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["order_id", "day", "product", "quantity", "unit_price"])
        for order_id in range(1, 61):
            writer.writerow(
                [order_id, f"2026-11-0{rng.randint(1, 7)}", rng.choice(["widget", "gizmo"]), 2, 2.5]
            )
    yaml = CONFIG.replace("BASE_IMAGE", "unused").replace("PROJECT_ROOT", str(EXAMPLE_PROJECT))
    write_config(tmp_path, {"c.yaml": yaml})
    outcome = DSSNotebookOperator(
        task_id="orders_report",
        notebook="notebooks/orders_report.ipynb",
        code_env="nb",
        inputs=["raw"],
        output="reports",
        parameters={"product": "widget", "min_quantity": 2},
        config_dir=str(tmp_path),
    ).execute(fake_context())
    assert outcome["execution_config"] == "local" and outcome["image"] is None
    widgets = sum(1 for row in csv.DictReader((raw / "orders.csv").open()) if row["product"] == "widget")
    assert outcome["result"] == {"orders": widgets, "revenue": round(widgets * 5.0, 2)}
    reports = tmp_path / "data" / "reports"
    assert {p.name for p in reports.iterdir()} == {
        "orders_report.ipynb",
        "orders_report.html",
        "daily_revenue.csv",
    }
    assert any(
        f"{widgets} of 60 orders (widget" in text for text in outputs_of(reports / "orders_report.ipynb")
    )
    assert "data:image/png;base64," in (reports / "orders_report.html").read_text(), "the plot is in the HTML"


# ------------------------------------------------------------------------------------ notebook serve
def http_status(url: str) -> int:
    try:
        with urllib.request.urlopen(url, timeout=10) as response:
            return int(response.status)
    except urllib.error.HTTPError as error:
        return error.code


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None


def test_serve_answers_on_loopback_with_its_token_only_and_stop_removes_it(config_dir, docker_client):
    urls: list[str] = []
    port = free_port()
    server = serve(
        load_catalog(config_dir),
        code_env="nb",
        execution_config="docker-nb",
        port=port,
        folders=["raw", "reports"],
        show_url=urls.append,
    )
    try:
        (url,) = urls
        token = url.split("token=", 1)[1]
        assert url == f"http://127.0.0.1:{port}/lab?token={token}" and len(token) >= 40
        assert http_status(f"http://127.0.0.1:{port}/api/status?token={token}") == 200
        assert http_status(f"http://127.0.0.1:{port}/api/status") == 403
        assert http_status(f"http://127.0.0.1:{port}/api/contents/project/notebooks") == 403
        no_redirect = urllib.request.build_opener(_NoRedirect)
        with pytest.raises(urllib.error.HTTPError) as lab:
            no_redirect.open(f"http://127.0.0.1:{port}/lab", timeout=10)
        assert lab.value.code == 302 and "/login" in lab.value.headers["Location"], "not served without token"
        container = docker_client.containers.get(server.name)
        assert container.attrs["HostConfig"]["PortBindings"] == {
            "8888/tcp": [{"HostIp": "127.0.0.1", "HostPort": str(port)}]
        }
        assert container.attrs["Config"]["User"] == "1000:1000"
        assert token not in json.dumps(container.attrs), "not in the command, environment or labels"
        assert token not in container.logs().decode(), "Jupyter does not log a token it did not generate"
    finally:
        assert main(["notebook", "stop", server.name, "--config-dir", str(config_dir)]) == 0
    assert docker_client.containers.list(all=True, filters={"label": f"{SERVER_LABEL}={server.name}"}) == []
    assert not (servers_dir() / server.name).exists(), "the token file is gone with the server"
