"""Selection order: task > project default > global default; inherit passes down; none/local are local."""

from __future__ import annotations

from typing import Any

import pytest

from dss_airflow.config.loader import load_catalog
from dss_airflow.config.resolve import resolve_execution
from dss_airflow.dag_helpers import execution_config_choices, execution_config_param
from dss_airflow.errors import InvalidConfigError
from tests.helpers import BASE_CONFIG, write_config


def catalog_with(tmp_path, project_default: str, global_default: str):
    config = BASE_CONFIG.replace(
        "        root: project\n",
        f"        root: project\n        default_execution_config: {project_default}\n",
    ).replace("      project: demo\n", f"      project: demo\n      execution_config: {global_default}\n")
    write_config(tmp_path, {"c.yaml": config})
    return load_catalog(tmp_path)


@pytest.mark.parametrize(
    ("task", "project", "global_", "expected", "level"),
    [
        ("k8s", "docker-small", "local", "k8s", "task"),
        (None, "docker-small", "k8s", "docker-small", "project 'demo' default"),
        ("inherit", "docker-small", "k8s", "docker-small", "project 'demo' default"),
        ("inherit", "inherit", "k8s", "k8s", "global default"),
        ("none", "docker-small", "k8s", "local", "task"),
        ("local", "docker-small", "k8s", "local", "task"),
        (None, "inherit", "none", "local", "global default"),
    ],
)
def test_selection_order(tmp_path, task, project, global_, expected, level):
    catalog = catalog_with(tmp_path, project, global_)
    resolved = resolve_execution(catalog, project=None, execution_config=task, code_env=None)
    assert (resolved.execution_config_name, resolved.selected_by) == (expected, level)
    assert resolved.code_env_name == "plain"
    assert resolved.project_root == tmp_path / "project"


def test_missing_config_dir_is_the_embedded_local_default(tmp_path):
    catalog = load_catalog(tmp_path / "nowhere")
    assert list(catalog.execution_configs) == ["local"]
    assert catalog.execution_configs["local"].type == "local"


def test_trigger_form_choices_hide_forbidden_configs(tmp_path):
    write_config(tmp_path, {"c.yaml": BASE_CONFIG})
    choices = execution_config_choices(str(tmp_path), project="demo")
    assert choices == ["inherit", "docker-small", "k8s", "local"]
    assert "docker-restricted" in execution_config_choices(str(tmp_path))
    param = execution_config_param(str(tmp_path), "demo", description="Where it runs.")
    assert param.value == "inherit" and param.schema["enum"] == choices
    assert param.description == (
        "Where it runs. Not available to project 'demo': docker-restricted (groups ml-team)."
    ), "a REST trigger gets only 'is not one of': the form says why beforehand"
    assert param.schema["type"] == "string", "never null"
    assert param.schema["values_display"] == {
        "inherit": "inherit: the global default (local)",
        "docker-small": "docker-small",  # no description written
        "k8s": "k8s",
        "local": "local: Built-in: a virtualenv on the worker",
    }


def test_templated_folder_refs_are_checked_at_run_time_only(tmp_path):
    from dss_airflow.operators.recipe import DSSContainerRecipeOperator
    from tests.helpers import make_project

    write_config(tmp_path, {"c.yaml": BASE_CONFIG})
    make_project(tmp_path, {"recipes/r.py": "pass\n"})
    op = DSSContainerRecipeOperator(
        task_id="t",
        recipe="recipes/r.py",
        execution_config="local",
        inputs={"x": "{{ params.folder }}/file.csv"},
        outputs=["{{ params.out }}"],
        config_dir=str(tmp_path),
    )
    assert op.inputs == {"x": "{{ params.folder }}/file.csv"}


def test_a_configs_queue_routes_its_tasks_unless_the_dag_sets_one(tmp_path):
    from dss_airflow.operators.recipe import DSSContainerRecipeOperator
    from tests.helpers import make_project

    routed = BASE_CONFIG.replace(
        "        resources: {memory: 256m, cpus: 0.5}\n", "        queue: host-a\n", 1
    )
    write_config(tmp_path, {"c.yaml": routed})
    make_project(tmp_path, {"recipes/r.py": "pass\n"})
    common: dict[str, Any] = {"recipe": "recipes/r.py", "config_dir": str(tmp_path)}
    on_a = DSSContainerRecipeOperator(task_id="a", execution_config="docker-small", **common)
    assert on_a.queue == "host-a", "the task goes to the workers next to its Docker host"
    explicit = DSSContainerRecipeOperator(task_id="b", execution_config="docker-small", queue="gpu", **common)
    assert explicit.queue == "gpu", "the DAG's own queue wins"
    chosen_later = DSSContainerRecipeOperator(task_id="c", execution_config="{{ params.cfg }}", **common)
    local = DSSContainerRecipeOperator(task_id="d", execution_config="local", **common)
    assert chosen_later.queue == local.queue != "host-a", "templated or queue-less configs: the default queue"
    write_config(tmp_path, {"c.yaml": routed.replace("queue: host-a", "queue: 'two words'")})
    with pytest.raises(InvalidConfigError, match=r"execution_configs.docker-small.queue"):
        load_catalog(tmp_path)


def test_the_trigger_form_says_what_inherit_comes_to(tmp_path):
    catalog_with(tmp_path, "docker-small", "k8s")
    labels = execution_config_param(str(tmp_path), "demo").schema["values_display"]
    assert labels["inherit"] == "inherit: the project 'demo' default (docker-small)"
    assert execution_config_param(str(tmp_path)).schema["values_display"]["inherit"] == labels["inherit"], (
        "defaults.project is demo"
    )
