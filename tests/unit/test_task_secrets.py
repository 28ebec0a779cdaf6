"""Connections and variables of a task: names checked at parse time, values read from Airflow (env-var
connections, no database), and the pure builders that deliver them — never in env, argv, labels or the
runner's context; a Kubernetes Secret and its volume valid for the cluster's API."""

from __future__ import annotations

import io
import json
import tarfile
import textwrap
import uuid
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml
from kubernetes.client import ApiClient

from dss_airflow.backends.docker import docker_operator_kwargs
from dss_airflow.backends.kubernetes import build_pod, build_secret, owner_patch, secret_name
from dss_airflow.config.loader import load_catalog
from dss_airflow.config.models import DockerExecutionConfig, KubernetesExecutionConfig
from dss_airflow.errors import ConfigError, MissingSecretError
from dss_airflow.spec import RUN_DIR, ImageRef, build_spec
from dss_airflow.task_secrets import SecretRefs, TaskSecrets, fetch_secrets, redacted
from tests.helpers import BASE_CONFIG, fake_context, make_project, recipe_run, write_config

PASSWORD = "s3cret-" + uuid.uuid4().hex
SECRETS = TaskSecrets(
    connections={
        "warehouse": {
            "conn_type": "postgres",
            "host": "db.example",
            "login": "etl",
            "password": PASSWORD,
            "schema": "sales",
            "port": 5432,
            "extra": {"sslmode": "require"},
        }
    },
    variables={"api_token": "tok-" + PASSWORD},
)
IMAGE = ImageRef("dss-code-envs:plain-0123456789ab")
K8S_VERSIONS = ("1.36.0", "1.37.0")


@pytest.fixture
def catalog(tmp_path):
    write_config(tmp_path, {"c.yaml": BASE_CONFIG})
    make_project(tmp_path, {"recipes/r.py": "pass\n"})
    return load_catalog(tmp_path)


def with_secrets(run):
    import dataclasses

    return dataclasses.replace(run, secrets=SECRETS)


# -------------------------------------------------------------------------------------- declaring
def test_names_are_checked_for_shape_when_declared():
    refs = SecretRefs.declared(["warehouse", "crm.api", "warehouse"], "api_token")
    assert refs == SecretRefs(("warehouse", "crm.api"), ("api_token",)), "deduplicated; one name may be a str"
    assert not SecretRefs.declared(None, None) and refs
    for bad in ("{{ var.value.conn }}", "two words", "", 42):
        with pytest.raises(ConfigError) as info:
            SecretRefs.declared([bad], None)  # type: ignore[list-item]
        assert info.value.field == "connections" and "not templated" in str(info.value)


def test_a_bad_name_is_a_dag_import_error_naming_the_field(catalog, tmp_path):
    from dss_airflow.operators.recipe import DSSContainerRecipeOperator

    common: dict[str, Any] = {"recipe": "recipes/r.py", "config_dir": str(tmp_path)}
    op = DSSContainerRecipeOperator(
        task_id="ok", connections=["warehouse"], variables=["api_token"], **common
    )
    assert (op.connections, op.variables) == (["warehouse"], ["api_token"])
    assert "connections" not in op.template_fields, "names, not templates: nothing secret is rendered"
    with pytest.raises(
        ConfigError, match=r"variables: not an Airflow connection id or variable key \(got 'a b'\)"
    ):
        DSSContainerRecipeOperator(task_id="bad", variables=["a b"], **common)


# ------------------------------------------------------------------------------- reading from Airflow
def test_values_are_read_from_airflow_and_masked(monkeypatch):
    suffix = uuid.uuid4().hex[:8]
    conn, var = f"wh_{suffix}", f"region_{suffix}"
    uri = f"postgresql://etl:{PASSWORD}@db.example:6432/sales?sslmode=require&token=tk-{suffix}-xyz"
    monkeypatch.setenv(f"AIRFLOW_CONN_{conn.upper()}", uri)
    monkeypatch.setenv(f"AIRFLOW_VAR_{var.upper()}", f"eu-{suffix}")
    secrets = fetch_secrets(SecretRefs((conn,), (var,)), "load")
    assert secrets is not None
    assert secrets.connections[conn] == {
        "conn_type": "postgres",
        "host": "db.example",
        "login": "etl",
        "password": PASSWORD,
        "schema": "sales",
        "port": 6432,
        "extra": {"sslmode": "require", "token": f"tk-{suffix}-xyz"},
    }
    assert secrets.variables == {var: f"eu-{suffix}"}
    assert PASSWORD not in repr(secrets) and conn in repr(secrets), "its repr names, never shows"
    echoed = {"password_sha256": "abc", "said": f"pw={PASSWORD} token=tk-{suffix}-xyz", "n": [f"eu-{suffix}"]}
    assert redacted(echoed) == {"password_sha256": "abc", "said": "pw=*** token=***", "n": ["***"]}
    assert redacted({"mode": "require"}) == {"mode": "require"}, "only secret-sounding extras are masked"
    assert fetch_secrets(SecretRefs(), "load") is None


def test_every_missing_name_is_one_error_saying_how_to_add_it():
    suffix = uuid.uuid4().hex[:8]
    with pytest.raises(MissingSecretError) as info:
        fetch_secrets(SecretRefs((f"nope_{suffix}",), (f"gone_{suffix}",)), "load_orders")
    message = str(info.value)
    assert message.startswith(
        f"task 'load_orders' declares connection(s) 'nope_{suffix}', which Airflow does"
    )
    assert f"`airflow connections add nope_{suffix} --conn-uri 'postgresql://LOGIN:PASSWORD@HOST" in message
    assert f"`airflow variables set gone_{suffix} VALUE` (or AIRFLOW_VAR_GONE_{suffix.upper()}" in message
    assert (info.value.connections, info.value.variables) == ([f"nope_{suffix}"], [f"gone_{suffix}"])


# ------------------------------------------------------------------------------------ the spec (pure)
@pytest.mark.parametrize("layout", ["host", "container", "copy", "pod"])
def test_the_spec_carries_secrets_apart_from_env_argv_labels_and_context(catalog, tmp_path, layout):
    config = "k8s" if layout == "pod" else ("local" if layout == "host" else "docker-small")
    run = with_secrets(recipe_run(catalog, config, tmp_path))
    spec = build_spec(
        run, layout=layout, image=None if layout == "host" else IMAGE, local_python="/venv/bin/python"
    )
    assert spec.secrets is SECRETS
    visible = json.dumps([dict(spec.env), list(spec.command), dict(spec.labels), dict(spec.context)])
    assert PASSWORD not in visible and PASSWORD not in repr(spec)
    expected = str(run.run_dir / "secrets.json") if layout == "host" else "/dss/secrets/secrets.json"
    assert spec.context["secrets_file"] == expected
    assert spec.host_secrets_file == (run.run_dir / "secrets.json" if layout == "host" else None)
    assert not any(m.target.startswith("/dss/secrets") for m in (*spec.mounts, *spec.copies))
    without = build_spec(
        recipe_run(catalog, config, tmp_path), layout=layout, image=IMAGE, local_python="/venv/bin/python"
    )
    assert without.secrets is None and "secrets_file" not in without.context


def test_docker_gets_the_file_as_an_archive_owned_by_the_container_user(catalog, tmp_path):
    run = with_secrets(recipe_run(catalog, "docker-small", tmp_path))
    spec = build_spec(run, layout="container", image=IMAGE, worker_uid=0, worker_gid=0)
    config = run.resolved.execution_config
    assert isinstance(config, DockerExecutionConfig)
    kwargs = docker_operator_kwargs(spec, config)
    assert PASSWORD not in json.dumps([kwargs["environment"], kwargs["command"], kwargs["labels"]])
    with tarfile.open(fileobj=io.BytesIO(kwargs["secret_archive"])) as tar:
        members = {m.name: (m.type, oct(m.mode), m.uid, m.gid) for m in tar.getmembers()}
        content = json.load(tar.extractfile("dss/secrets/secrets.json"))  # type: ignore[arg-type]
    assert members == {
        "dss/secrets": (tarfile.DIRTYPE, "0o500", 1000, 1000),
        "dss/secrets/secrets.json": (tarfile.REGTYPE, "0o400", 1000, 1000),
    }
    assert content["connections"]["warehouse"]["password"] == PASSWORD
    assert content["variables"] == {"api_token": "tok-" + PASSWORD}
    plain = build_spec(recipe_run(catalog, "docker-small", tmp_path), layout="container", image=IMAGE)
    assert docker_operator_kwargs(plain, config)["secret_archive"] is None


# ------------------------------------------------------------------------------------- Kubernetes
def test_a_pod_mounts_its_own_secret_read_only(catalog, tmp_path):
    import dataclasses

    run = dataclasses.replace(with_secrets(recipe_run(catalog, "k8s", tmp_path)), run_dir=Path(RUN_DIR))
    config = run.resolved.execution_config
    assert isinstance(config, KubernetesExecutionConfig)
    spec = build_spec(run, layout="pod", image=IMAGE)
    api = ApiClient()
    secret = api.sanitize_for_serialization(build_secret(spec, config))
    pod = api.sanitize_for_serialization(build_pod(spec, config))
    for version in K8S_VERSIONS:
        kubernetes_validate.validate(secret, version, strict=True)
        kubernetes_validate.validate(pod, version, strict=True)
    assert secret["metadata"]["name"] == secret_name(spec) == pod["metadata"]["name"] + "-secrets"
    assert secret["metadata"]["namespace"] == pod["metadata"]["namespace"] == config.namespace
    assert secret["immutable"] is True and secret["type"] == "Opaque"
    assert (
        json.loads(secret["stringData"]["secrets.json"])["connections"]["warehouse"]["password"] == PASSWORD
    )
    assert secret["metadata"]["labels"] == pod["metadata"]["labels"], "found, and swept, like its pod"
    volume = next(v for v in pod["spec"]["volumes"] if "secret" in v)
    assert volume["secret"] == {"secretName": secret_name(spec), "defaultMode": 0o440, "optional": False}
    (container,) = pod["spec"]["containers"]
    mount = next(m for m in container["volumeMounts"] if m["name"] == volume["name"])
    assert mount == {"name": volume["name"], "mountPath": "/dss/secrets", "readOnly": True}
    assert PASSWORD not in json.dumps(pod), "the pod spec holds only the Secret's name"
    assert build_secret(dataclasses.replace(spec, secrets=None), config) is None


def test_the_pod_becomes_the_owner_of_its_secret():
    from kubernetes.client import models as k8s

    pod = k8s.V1Pod(metadata=k8s.V1ObjectMeta(name="dss-load-1", uid="6f1c1f0e-uid"))
    patch = ApiClient().sanitize_for_serialization(owner_patch(pod))
    owner = {"apiVersion": "v1", "kind": "Pod", "name": "dss-load-1", "uid": "6f1c1f0e-uid"}
    assert patch == [{"op": "add", "path": "/metadata/ownerReferences", "value": [owner]}]
    assert isinstance(patch, list), "a list is sent as application/json-patch+json; a dict would be too"


def test_render_shows_the_secret_before_the_pod_without_any_value(tmp_path):
    from dss_airflow.k8s_render import render_task

    config = BASE_CONFIG.replace("root: project\n", "root: project\n        pvc: projects-pvc\n")
    write_config(tmp_path, {"c.yaml": config})
    make_project(tmp_path, {"recipes/r.py": "pass\n"})
    dags = tmp_path / "dags"
    dags.mkdir()
    (dags / "render_dag.py").write_text(
        textwrap.dedent(
            f"""
            from airflow.sdk import DAG
            from dss_airflow import DSSContainerRecipeOperator

            with DAG("render_secrets", schedule=None):
                DSSContainerRecipeOperator(
                    task_id="load", recipe="recipes/r.py", config_dir={str(tmp_path)!r},
                    execution_config="k8s", connections=["warehouse"], variables=["api_token"],
                )
            """
        )
    )
    rendered = render_task("render_secrets", "load", dags)
    assert "# the Secret's values are read from Airflow when the task runs: shown empty here" in rendered
    documents = list(yaml.safe_load_all(rendered))
    assert [d["kind"] for d in documents] == ["Secret", "Pod"]
    secret, pod = documents
    for version in K8S_VERSIONS:
        kubernetes_validate.validate(secret, version, strict=True)
        kubernetes_validate.validate(pod, version, strict=True)
    content = json.loads(secret["stringData"]["secrets.json"])
    assert (
        content["variables"] == {"api_token": ""} and content["connections"]["warehouse"]["password"] is None
    )
    assert any(
        v.get("secret", {}).get("secretName") == secret["metadata"]["name"] for v in pod["spec"]["volumes"]
    )


# ------------------------------------------------------------------------------------------ refused
def test_spark_on_kubernetes_refuses_secrets_before_anything_runs(tmp_path):
    from dss_airflow.operators.spark import DSSSparkOperator

    spark = """
        base_images:
          spark-py: {image: "apache/spark:4.0.0-python3"}
        code_envs:
          spark: {packages: ["pyspark==4.0.1"]}
        spark_configs:
          k8s-spark: {type: kubernetes, base_image: spark-py, namespace: spark-jobs}
    """
    write_config(tmp_path, {"base.yaml": BASE_CONFIG, "spark.yaml": spark})
    make_project(tmp_path, {"jobs/count.py": "print('count')\n"})
    op = DSSSparkOperator(
        task_id="count",
        application="jobs/count.py",
        spark_config="k8s-spark",
        code_env="spark",
        config_dir=str(tmp_path),
        connections=["warehouse"],
    )
    with pytest.raises(ConfigError) as info:
        op.execute(fake_context(task_id="count"))
    assert info.value.field == "connections"
    assert "spark config 'k8s-spark' (kubernetes, operator) cannot deliver" in str(info.value)


# ------------------------------------------------------------------------------- the runtime (stdlib)
def test_the_runtime_names_what_the_task_declared(tmp_path, monkeypatch):
    from dss_airflow.runtime import dss_recipe

    secrets_file = tmp_path / "secrets.json"
    secrets_file.write_bytes(SECRETS.file_content())
    context = tmp_path / "context.json"
    context.write_text(json.dumps({"secrets_file": str(secrets_file)}))
    monkeypatch.setenv("DSS_CONTEXT", str(context))
    monkeypatch.setattr(dss_recipe, "_SECRETS", None)
    conn = dss_recipe.connection("warehouse")
    assert (conn.password, conn["login"], conn.extra, conn.port) == (
        PASSWORD,
        "etl",
        {"sslmode": "require"},
        5432,
    )
    assert PASSWORD not in repr(conn) and PASSWORD not in str(conn) and "password='***'" in repr(conn)
    assert dss_recipe.variable("api_token") == "tok-" + PASSWORD
    with pytest.raises(
        KeyError, match=r"no connection named 'crm' declared by this task \(declared: warehouse\)"
    ):
        dss_recipe.connection("crm")
    context.write_text(json.dumps({}))
    monkeypatch.setattr(dss_recipe, "_SECRETS", None)
    with pytest.raises(KeyError, match=r"declared: none\): add it to the operator's variables=\[...\]"):
        dss_recipe.variable("api_token")
