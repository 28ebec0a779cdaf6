"""Shared test helpers: write a config directory, fake the bits of an Airflow context we read."""

from __future__ import annotations

import json
import textwrap
import threading
from pathlib import Path
from types import SimpleNamespace
from typing import Any

EXAMPLE_CONFIG = Path(__file__).resolve().parents[1] / "examples" / "config"


def write_config(directory: Path, files: dict[str, str]) -> Path:
    """Write YAML files (dedented) into ``directory`` and return it."""
    directory.mkdir(parents=True, exist_ok=True)
    for name, text in files.items():
        path = directory / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text), encoding="utf-8")
    return directory


BASE_CONFIG = """
    defaults:
      project: demo
      code_env: plain
      data_dir: data
    base_images:
      base:
        image: dss-airflow-base:bookworm-py311
    execution_configs:
      docker-small:
        type: docker
        base_image: base
        resources: {memory: 256m, cpus: 0.5}
      docker-restricted:
        type: docker
        base_image: base
        allowed_groups: [ml-team]
      k8s:
        type: kubernetes
        base_image: base
        resources:
          requests: {cpu: 250m, memory: 256Mi}
          limits: {cpu: "1", memory: 1Gi}
    code_envs:
      plain: {}
      external:
        managed: false
        external_path: /opt/conda/envs/legacy
      with-path:
        pythonpath: [/opt/shared/lib]
      only-k8s:
        build_for: [k8s]
    managed_folders:
      raw: {path: raw}
      out: {path: out}
    projects:
      demo:
        root: project
        groups: [analysts]
"""


def make_project(config_dir: Path, recipes: dict[str, str]) -> Path:
    """Create the demo project's recipes next to a BASE_CONFIG directory."""
    root = config_dir / "project"
    for name, text in recipes.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text), encoding="utf-8")
    return root


def fake_context(
    dag_id: str = "dag", task_id: str = "task", run_id: str = "run1", try_number: int = 1
) -> Any:
    """The task-instance fields the operator reads from an Airflow context."""
    ti = SimpleNamespace(dag_id=dag_id, task_id=task_id, run_id=run_id, map_index=-1, try_number=try_number)
    ti.xcom_push = lambda key, value: None  # the provider pushes pod name/namespace before deferring
    ti.start_date = None
    return {"ti": ti}


def execute_in_background(operator: Any, context: Any) -> tuple[threading.Thread, list[BaseException]]:
    """Start ``operator.execute(context)`` in a thread (to kill it); the list collects what it raised."""
    errors: list[BaseException] = []

    def run() -> None:
        try:
            operator.execute(context)
        except BaseException as exc:  # noqa: BLE001 - handed to the test's assertions
            errors.append(exc)

    thread = threading.Thread(target=run, name=f"execute-{operator.task_id}")
    thread.start()
    return thread, errors


def leftover_staging(root: Path) -> list[Path]:
    """What runs left in any ``.dss-staging`` under ``root`` (beside folders, or inside them for pods):
    everything but the per-folder writer locks."""
    from dss_airflow.publish import STAGING_DIR

    def lock_only(path: Path) -> bool:
        return path.is_dir() and {child.name for child in path.iterdir()} <= {".lock"}

    return [
        path
        for staging in root.rglob(STAGING_DIR)
        for path in staging.rglob("*")
        if path.name != ".lock" and not lock_only(path)
    ]


def recipe_run(catalog: Any, config: str, tmp_path: Path, unique: str = "0") -> Any:
    """A planned recipe run of the demo project (BASE_CONFIG) on ``config``: inputs, one output, params."""
    from pathlib import PurePosixPath

    from dss_airflow.config.resolve import resolve_execution
    from dss_airflow.spec import Entrypoint, TaskRun
    from dss_airflow.staging import plan_inputs, plan_outputs

    resolved = resolve_execution(catalog, project="demo", execution_config=config, code_env="plain")
    return TaskRun(
        resolved=resolved,
        entrypoint=Entrypoint(PurePosixPath("recipes/r.py")),
        inputs=plan_inputs(catalog, {"orders": "raw/2026/orders.csv", "lookup": "raw/lookup.csv"}),
        outputs=plan_outputs(catalog, ["out"], run_key="t-1-abcd"),
        params={"limit": 3},
        run_dir=tmp_path / "run",
        task_labels={"dss_airflow.dag_id": "d", "dss_airflow.task_id": "t", "dss_airflow.run_id": "r"},
        unique=unique,
    )


def notebook_json(*sources: str, parameters: str | None = None, language: str = "python") -> str:
    """A minimal nbformat 4.5 notebook (python3 or IRkernel's ``ir``); ``parameters`` becomes the cell
    tagged for papermill."""
    cells: list[dict[str, Any]] = []
    if parameters is not None:
        cells.append({"source": parameters, "metadata": {"tags": ["parameters"]}})
    cells += [{"source": source, "metadata": {}} for source in sources]
    for index, cell in enumerate(cells):
        cell.update(cell_type="code", id=f"cell-{index}", execution_count=None, outputs=[])
    kernel = (
        {"name": "ir", "display_name": "R", "language": "R"}
        if language == "R"
        else {"name": "python3", "display_name": "Python 3", "language": "python"}
    )
    notebook = {"cells": cells, "metadata": {"kernelspec": kernel}, "nbformat": 4, "nbformat_minor": 5}
    return json.dumps(notebook)
