"""What a try ran, said truthfully: the log line's "chosen ..." and the rendered ``resolved_execution``.

The description is built from the spec the backend runs; the Airflow side (stored as a rendered field
when the try ends, shown in Rendered Templates) is tested through `airflow dags test` in
tests/integration/test_airflow_dags.py.
"""

from __future__ import annotations

import logging
from types import SimpleNamespace

import pytest
import yaml

from dss_airflow import DSSContainerRecipeOperator, DSSSparkOperator
from dss_airflow.backends.base import RunOptions
from dss_airflow.config.loader import load_catalog
from dss_airflow.operators.base import RESOLVED_FIELD, DSSTaskOperator
from dss_airflow.spec import ImageRef
from dss_airflow.tasks.flow import ARGUMENT_ORIGIN, RunKey, prepare_run, task_labels, task_value_origin
from tests.helpers import fake_context, make_project, write_config

SECRET = "s3cr3t-value-never-shown"
CONFIG = f"""
    defaults: {{project: demo, code_env: plain, data_dir: data}}
    base_images:
      base: {{image: dss-airflow-base:bookworm-py311}}
    execution_configs:
      docker-small:
        type: docker
        base_image: base
        resources: {{memory: 256m, cpus: 0.5, shm_size: 64m}}
        security: {{cap_add: [NET_BIND_SERVICE]}}
        env: {{API_TOKEN: {SECRET}}}
      k8s:
        type: kubernetes
        base_image: base
        namespace: dss-jobs
        kubernetes_conn_id: cluster_a
        resources: {{requests: {{cpu: 250m}}, limits: {{memory: 1Gi}}}}
        env: {{API_TOKEN: {SECRET}}}
      local-env:
        type: local
        env: {{API_TOKEN: {SECRET}}}
    code_envs:
      plain: {{}}
    managed_folders:
      raw: {{path: raw, pvc: data, sub_path: raw}}
      out: {{path: out, pvc: data, sub_path: out}}
    projects:
      demo: {{root: project, pvc: projects, sub_path: demo}}
"""
IMAGE = ImageRef("registry.example.com:5000/dss-code-envs@sha256:" + "ab" * 32, "/opt/dss/env/bin/python")


@pytest.fixture
def config_dir(tmp_path):
    write_config(tmp_path, {"c.yaml": CONFIG})
    make_project(tmp_path, {"recipes/r.py": "pass\n"})
    (tmp_path / "data" / "raw").mkdir(parents=True)
    return tmp_path


def context(conf=None, params=None):
    return {"dag_run": SimpleNamespace(conf=conf or {}), "params": params or {}}


# ------------------------------------------------------------------------------ where the choice came from
@pytest.mark.parametrize(
    ("written", "ctx", "expected"),
    [
        ("docker-small", context(), ARGUMENT_ORIGIN),
        (None, context(), ARGUMENT_ORIGIN),
        (
            "{{ params.execution_config }}",
            context({"execution_config": "k8s"}, {"execution_config": "k8s"}),
            "chosen in the trigger form (or run conf): params.execution_config",
        ),
        (
            "{{ params['where'] }}",
            context({"where": "k8s"}, {"where": "k8s"}),
            "chosen in the trigger form (or run conf): params.where",
        ),
        (
            "{{ params.execution_config }}",
            context({}, {"execution_config": "docker-small"}),
            "chosen by the default of DAG param params.execution_config (not set when triggered)",
        ),
        (
            "{{ params.execution_config }}",  # [core] dag_run_conf_overrides_params = False
            context({"execution_config": "k8s"}, {"execution_config": "docker-small"}),
            "chosen by the default of DAG param params.execution_config (not set when triggered)",
        ),
        (
            "{{ dag_run.conf.get('cfg', 'local') }}",
            context({"cfg": "k8s"}),
            "chosen in the run conf: {{ dag_run.conf.get('cfg', 'local') }}",
        ),
        (
            "{{ 'docker-small' if ds else 'local' }}",
            context(),
            "chosen by the task's templated execution_config argument "
            "{{ 'docker-small' if ds else 'local' }}",
        ),
    ],
)
def test_the_origin_of_the_tasks_value_is_said_as_it_was_set(written, ctx, expected):
    assert task_value_origin(written, ctx) == expected


def prepared(config_dir, config, *, written=None, ctx=None, task_class=DSSContainerRecipeOperator, **kwargs):
    """A prepared run of an operator (no engine touched: the image is pinned, daemons are not pinged)."""
    arguments = {"recipe": "recipes/r.py", "inputs": ["raw"], "outputs": ["out"], **kwargs}
    operator = task_class(task_id="clean", execution_config=config, config_dir=str(config_dir), **arguments)
    ti = fake_context(task_id="clean")["ti"]
    origin = task_value_origin(written or config, ctx or context())
    key = RunKey("clean-1-u", "u", task_labels(ti))
    catalog = load_catalog(config_dir)
    return prepare_run(
        operator.task(), catalog, ti, logging.getLogger(), RunOptions(pinned_image=IMAGE), key, origin
    )


def test_the_log_line_says_what_chose_the_config(config_dir, caplog, monkeypatch):
    import dss_airflow.backends.local as local

    monkeypatch.setattr(local, "venv_python", lambda catalog, resolved: "/venvs/plain/bin/python")
    with caplog.at_level(logging.INFO):
        prepared(
            config_dir,
            "k8s",
            written="{{ params.execution_config }}",
            ctx=context({"execution_config": "k8s"}, {"execution_config": "k8s"}),
        )
        prepared(config_dir, "inherit", written="{{ params.execution_config }}")
    assert (
        "execution config 'k8s' (kubernetes; "
        "chosen in the trigger form (or run conf): params.execution_config)" in caplog.text
    )
    assert "chosen by the task" not in caplog.text.replace("chosen by the task's", "")
    assert "execution config 'local' (local; chosen by the global default)" in caplog.text, (
        "inherit passes on"
    )


# ------------------------------------------------------------------------------ the rendered description
def described(run) -> dict:
    text = run.description()
    assert SECRET not in text, "environment values are never shown"
    assert text.startswith("# What this try runs")
    return yaml.safe_load(text)


def test_docker_description_names_host_image_mounts_user_and_limits(config_dir, monkeypatch):
    monkeypatch.setattr("os.getuid", lambda: 0)  # a root worker runs containers as the config's user
    data = described(prepared(config_dir, "docker-small"))
    assert data["execution_config"] == "docker-small" and data["backend"] == "docker"
    assert data["chosen"] == "by the task's execution_config argument"
    assert data["docker_host"] == "unix:///var/run/docker.sock" and data["shares_worker_filesystem"] is True
    assert data["image"] == IMAGE.image, "the image by digest, as the ledger gave it"
    assert data["command"] == [IMAGE.python, "/opt/dss-airflow/runtime/runner.py", "/dss/run/context.json"]
    assert "API_TOKEN" in data["env_names"] and "DSS_CODE_ENV" in data["env_names"]
    assert data["user"] == "1000:1000"
    assert f"{config_dir / 'project'} -> /dss/project (ro)" in data["mounts"]
    assert any(m.endswith("-> /dss/out/out (rw)") for m in data["mounts"]), data["mounts"]
    assert data["limits"] == {"memory": "256m", "cpus": 0.5, "shm_size": "64m"}
    assert data["security"] == {
        "cap_drop": ["ALL"],
        "security_opt": ["no-new-privileges"],
        "pids_limit": 1024,
        "cap_add": ["NET_BIND_SERVICE"],
    }


def test_kubernetes_description_is_the_pod_k8s_render_prints_without_env_values(config_dir, monkeypatch):
    from airflow.configuration import conf

    monkeypatch.setenv("AIRFLOW_CONN_CLUSTER_A", '{"conn_type": "kubernetes"}')  # the provider reads it
    run = prepared(config_dir, "k8s")
    assert len(run.description()) <= conf.getint("core", "max_templated_field_length"), "Airflow cuts longer"
    data = described(run)
    assert (data["backend"], data["namespace"]) == ("kubernetes", "dss-jobs")
    assert data["kubernetes_conn_id"] == "cluster_a"
    assert "image" not in data and "mounts" not in data, "the pod says it, once"
    pod = data["pod"]
    names = {c["name"] for c in pod["spec"]["containers"]}
    assert names == {"base", "airflow-xcom-sidecar"}, "the pod the provider submits"
    base = next(c for c in pod["spec"]["containers"] if c["name"] == "base")
    assert base["image"] == IMAGE.image
    assert base["resources"] == {"requests": {"cpu": "250m"}, "limits": {"memory": "1Gi"}}
    assert {"mountPath": "/dss/project", "name": "pvc-0", "readOnly": True, "subPath": "demo"} in base[
        "volumeMounts"
    ]
    env = {var["name"]: var for var in base["env"]}
    assert {"API_TOKEN", "DSS_CONTEXT_JSON"} <= set(env)
    assert all("value" not in var for var in env.values()), "names only: the context and config env stay out"


def test_local_description_has_no_image_and_no_env_values(config_dir, monkeypatch):
    import dss_airflow.backends.local as local

    monkeypatch.setattr(local, "venv_python", lambda catalog, resolved: "/venvs/plain/bin/python")
    data = described(prepared(config_dir, "local-env"))
    assert data["backend"] == "local" and data["image"].startswith("none")
    assert data["command"][0] == "/venvs/plain/bin/python"
    assert data["limits"] == "none" and data["user"] == "the worker's own"


def test_every_dss_operator_shows_the_resolved_execution_in_rendered_templates():
    import dss_airflow

    operators = [
        getattr(dss_airflow, name)
        for name in dss_airflow.__all__
        if isinstance(getattr(dss_airflow, name), type)
        and issubclass(getattr(dss_airflow, name), DSSTaskOperator)
    ]
    assert len(operators) >= 8, "sanity: recipe, model (5), notebook, spark"
    for operator in operators:
        assert operator.template_fields[-1] == RESOLVED_FIELD, operator.__name__
        assert operator.template_fields_renderers[RESOLVED_FIELD] == "yaml", operator.__name__
        assert operator.overwrite_rtif_after_execution, operator.__name__
    assert DSSSparkOperator in operators
