"""Pure builders: recipe run → ContainerSpec → DockerOperator arguments."""

from __future__ import annotations

import pytest
from docker.types import DeviceRequest

from dss_airflow.backends.docker import docker_operator_kwargs
from dss_airflow.config.loader import load_catalog
from dss_airflow.config.models import DockerExecutionConfig
from dss_airflow.config.resolve import resolve_execution
from dss_airflow.errors import ConfigError, ImageNotBuiltError
from dss_airflow.hooks.docker import tls_paths
from dss_airflow.images.lookup import image_for
from dss_airflow.spec import HOST_RUNTIME_DIR, ImageRef, TaskRun, build_context, build_spec
from tests.helpers import BASE_CONFIG, make_project, recipe_run, write_config


@pytest.fixture
def catalog(tmp_path):
    write_config(tmp_path, {"c.yaml": BASE_CONFIG})
    make_project(tmp_path, {"recipes/r.py": "pass\n"})
    return load_catalog(tmp_path)


def test_container_spec_for_docker(catalog, tmp_path):
    run = recipe_run(catalog, "docker-small", tmp_path, unique="u1")
    spec = build_spec(run, layout="container", image=ImageRef("img:1"), worker_uid=0, worker_gid=0)
    assert spec.image == "img:1"
    assert spec.command == ("python3", "/opt/dss-airflow/runtime/runner.py", "/dss/run/context.json")
    assert spec.user == "1000:1000", "a root worker runs containers as the config's non-root user"
    mounts = {m.target: (m.source, m.read_only) for m in spec.mounts}
    assert mounts == {
        "/opt/dss-airflow/runtime": (str(HOST_RUNTIME_DIR), True),
        "/dss/project": (str(tmp_path / "project"), True),
        "/dss/run": (str(tmp_path / "run"), False),
        "/dss/in/raw": (str(tmp_path / "data" / "raw"), True),
        "/dss/out/out": (str(tmp_path / "data" / ".dss-staging" / "out" / "t-1-abcd" / "out"), False),
    }, "inputs are read-only, one mount per folder; outputs are staged"
    assert spec.resources.memory_bytes == 256 * 2**20
    assert spec.resources.nano_cpus == 500_000_000
    assert spec.labels["dss_airflow.execution_config"] == "docker-small"
    assert spec.labels["dss_airflow.code_env"] == "plain"
    assert spec.env["HOME"] == "/tmp" and spec.env["DSS_EXECUTION_CONFIG"] == "docker-small"
    assert spec.name.startswith("dss-d-t-") and spec.name.endswith("-u1")
    assert spec.host_result_file == tmp_path / "run" / "result.json"


def test_non_root_worker_runs_containers_as_itself(catalog, tmp_path):
    run = recipe_run(catalog, "docker-small", tmp_path)
    spec = build_spec(run, layout="container", image=ImageRef("img"), worker_uid=1234, worker_gid=99)
    assert spec.user == "1234:99"


def test_context_paths_follow_the_layout(catalog, tmp_path):
    run = recipe_run(catalog, "docker-small", tmp_path)
    inside = build_context(run, "container")
    assert inside["recipe"] == "/dss/project/recipes/r.py"
    assert inside["inputs"] == {"orders": "/dss/in/raw/2026/orders.csv", "lookup": "/dss/in/raw/lookup.csv"}
    assert inside["outputs"] == {"out": "/dss/out/out"}
    assert inside["python_path"] == ["/dss/project/lib"]
    assert inside["params"] == {"limit": 3}
    host = build_context(run, "host")
    assert host["inputs"]["orders"] == str(tmp_path / "data" / "raw" / "2026" / "orders.csv")
    assert host["outputs"]["out"] == str(tmp_path / "data" / ".dss-staging" / "out" / "t-1-abcd" / "out")
    assert host["result_file"] == str(tmp_path / "run" / "result.json")


def test_host_spec_for_local(catalog, tmp_path):
    run = recipe_run(catalog, "local", tmp_path)
    spec = build_spec(run, layout="host", image=None, local_python="/venv/bin/python")
    assert spec.image is None and spec.mounts == () and spec.user is None
    assert spec.command == (
        "/venv/bin/python",
        str(HOST_RUNTIME_DIR / "runner.py"),
        str(tmp_path / "run" / "context.json"),
    )


def test_docker_operator_kwargs_add_hard_limits_runtime_and_gpus(catalog, tmp_path):
    config = DockerExecutionConfig.model_validate(
        {
            "type": "docker",
            "base_image": "base",
            "resources": {"memory": "1g", "cpus": 1.5, "shm_size": "256m"},
            "runtime": "nvidia",
            "gpus": {"count": 2},
            "docker_host": "tcp://gpu:2376",
            "registry": {"url": "registry.local:5000", "connection_id": "reg"},
        }
    )
    run = recipe_run(catalog, "docker-small", tmp_path)
    resolved = run.resolved.__class__(**{**run.resolved.__dict__, "execution_config": config})
    spec = build_spec(
        TaskRun(**{**run.__dict__, "resolved": resolved}), layout="container", image=ImageRef("img")
    )
    kwargs = docker_operator_kwargs(spec, config)
    assert kwargs["host_config_extras"] == {
        "init": True,
        "nano_cpus": 1_500_000_000,
        "runtime": "nvidia",
        "cap_drop": ["ALL"],
        "security_opt": ["no-new-privileges"],
        "pids_limit": 1024,
    }
    assert kwargs["cap_add"] is None
    assert kwargs["mem_limit"] == 2**30 and kwargs["shm_size"] == 256 * 2**20
    assert kwargs["device_requests"] == [DeviceRequest(driver="", count=2, capabilities=[["gpu"]])]
    assert kwargs["docker_url"] == "tcp://gpu:2376" and kwargs["docker_conn_id"] == "reg"
    assert kwargs["auto_remove"] == "force" and kwargs["mount_tmp_dir"] is False
    assert {m["Target"]: m["ReadOnly"] for m in kwargs["mounts"]}["/dss/project"] is True


def test_tls_dir_must_hold_the_three_files(tmp_path):
    config = DockerExecutionConfig(
        type="docker", base_image="b", docker_host="tcp://h:2376", tls_cert_dir=str(tmp_path)
    )
    with pytest.raises(ConfigError, match="lacks ca.pem, cert.pem, key.pem"):
        tls_paths(config)
    for name in ("ca.pem", "cert.pem", "key.pem"):
        (tmp_path / name).write_text("x")
    assert tls_paths(config)["tls_client_key"] == str(tmp_path / "key.pem")


def test_env_with_packages_needs_a_built_image(tmp_path):
    write_config(
        tmp_path, {"c.yaml": BASE_CONFIG, "e.yaml": "code_envs:\n  pandas:\n    packages: [pandas==2.2.3]\n"}
    )
    catalog = load_catalog(tmp_path)
    resolved = resolve_execution(catalog, project="demo", execution_config="docker-small", code_env="pandas")
    with pytest.raises(ImageNotBuiltError, match="dss-airflow images build pandas --config docker-small"):
        image_for(catalog, resolved)
    plain = resolve_execution(catalog, project="demo", execution_config="docker-small", code_env="plain")
    assert image_for(catalog, plain) == ImageRef("dss-airflow-base:bookworm-py311")
