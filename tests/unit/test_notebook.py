"""Notebooks without Docker: notebook support of code envs, parse-time errors of DSSNotebookOperator, the
`notebook serve` container spec (loopback port, non-root, mounts, limits, labels, no token in it), and the
runtime's kernel set-up and cell-progress log."""

from __future__ import annotations

import json
import logging
import os
import stat
from pathlib import Path, PurePosixPath
from typing import Any

import pytest

from dss_airflow.cli import main
from dss_airflow.config.loader import load_catalog
from dss_airflow.config.notebook import NOTEBOOK_PACKAGES
from dss_airflow.config.resolve import resolve_execution
from dss_airflow.errors import ConfigError, UnknownNameError
from dss_airflow.notebook_server import (
    CONTAINER_PORT,
    SERVER_LABEL,
    _write_private,
    docker_arguments,
    docker_config_of,
    plan_server,
)
from dss_airflow.operators.notebook import DSSNotebookOperator
from dss_airflow.runtime import dss_notebook
from dss_airflow.spec import RUNTIME_DIR, Entrypoint, ImageRef
from tests.helpers import BASE_CONFIG, EXAMPLE_CONFIG, fake_context, make_project, write_config

NOTEBOOKS = """
    code_envs:
      nb: {notebook: true}
      nb-own-pins:
        notebook: true
        packages: ["ipykernel==6.29.5", "tabulate==0.9.0"]
    execution_configs:
      docker-nb:
        type: docker
        base_image: base
        resources: {memory: 1g, cpus: 1.5, shm_size: 64m}
      docker-host-net:
        type: docker
        base_image: base
        network_mode: host
      docker-remote:
        type: docker
        base_image: base
        docker_host: tcp://gpu-host.internal:2376
    managed_folders:
      reports: {path: reports}
"""
NOTEBOOK_JSON = json.dumps({"cells": [], "metadata": {}, "nbformat": 4, "nbformat_minor": 5})


@pytest.fixture
def config_dir(tmp_path: Path) -> Path:
    write_config(tmp_path, {"base.yaml": BASE_CONFIG, "notebooks.yaml": NOTEBOOKS})
    make_project(tmp_path, {"notebooks/report.ipynb": NOTEBOOK_JSON, "notes.txt": "not a notebook"})
    return tmp_path


def notebook_task(config_dir: Path, **kwargs: Any) -> DSSNotebookOperator:
    arguments: dict[str, Any] = {
        "notebook": "notebooks/report.ipynb",
        "code_env": "nb",
        "output": "reports",
        "config_dir": str(config_dir),
        **kwargs,
    }
    return DSSNotebookOperator(task_id="report", **arguments)


# ------------------------------------------------------------------------------------ notebook support
def test_notebook_packages_are_exact_pins():
    names = [pin.split("==")[0] for pin in NOTEBOOK_PACKAGES]
    assert {"papermill", "ipykernel", "nbconvert", "jupyterlab"} <= set(names)
    assert all("==" in pin and pin.split("==")[1] for pin in NOTEBOOK_PACKAGES)


def test_requirements_include_notebook_packages_only_with_notebook_support(config_dir):
    catalog = load_catalog(config_dir)
    assert catalog.requirements("plain") == []
    assert catalog.requirements("nb") == list(NOTEBOOK_PACKAGES)
    own = catalog.requirements("nb-own-pins")
    assert own[:2] == ["ipykernel==6.29.5", "tabulate==0.9.0"]
    assert not any(pin.startswith("ipykernel==7") for pin in own), "the env's own pin wins"
    assert "papermill==2.7.0" in own


def test_example_config_has_a_notebook_env_and_reports_folder():
    catalog = load_catalog(EXAMPLE_CONFIG)
    assert catalog.code_envs["notebooks"].notebook
    assert "papermill==2.7.0" in catalog.requirements("notebooks")
    assert not catalog.code_envs["stdlib"].notebook
    assert "reports" in catalog.managed_folders


def test_env_without_notebook_support_fails_at_parse_time_with_file_line_and_fix(config_dir):
    with pytest.raises(ConfigError) as caught:
        notebook_task(config_dir, code_env="plain")
    message = str(caught.value)
    assert "code env 'plain' has no notebook support" in message
    assert f"{config_dir / 'base.yaml'}:" in message and "code_envs.plain.notebook" in message
    assert caught.value.line is not None
    assert "Set 'notebook: true' under code_envs.plain" in message


# ------------------------------------------------------------------------------------ operator
@pytest.mark.parametrize(
    ("notebook", "expected"),
    [
        ("../outside.ipynb", "notebook path escapes the project directory"),
        ("notebooks/../../outside.ipynb", "notebook path escapes the project directory"),
        ("/etc/report.ipynb", "notebook path escapes the project directory"),
        ("notes.txt", r"notebook must be a Jupyter notebook \(.ipynb\)"),
        ("notebooks/missing.ipynb", "notebook not found"),
    ],
)
def test_bad_notebook_paths_fail_at_parse_time(config_dir, notebook, expected):
    with pytest.raises(ConfigError, match=expected):
        notebook_task(config_dir, notebook=notebook)


def test_symlink_out_of_the_project_is_refused(config_dir, tmp_path_factory):
    outside = tmp_path_factory.mktemp("outside") / "secret.ipynb"
    outside.write_text(NOTEBOOK_JSON)
    (config_dir / "project" / "notebooks" / "link.ipynb").symlink_to(outside)
    with pytest.raises(ConfigError, match="through a symbolic link"):
        notebook_task(config_dir, notebook="notebooks/link.ipynb")


@pytest.mark.parametrize("library", ["plugin:dss-plugin-geo", "shared-utils"])
def test_plugin_libraries_are_refused(config_dir, library):
    with pytest.raises(ConfigError) as caught:
        notebook_task(config_dir, libraries=["project", library])
    message = str(caught.value)
    assert "plugin libraries are not available in containerized notebooks (DSS limitation)" in message
    assert "move the code into the project's lib/" in message.lower()


@pytest.mark.parametrize(
    ("kwargs", "expected"),
    [
        ({"output": "reprots"}, r"unknown managed folder 'reprots'.*Did you mean 'reports'"),
        ({"output": "reports/../raw"}, "escapes its managed folder"),
        ({"output": ["reports", "out"]}, "a notebook task has one output"),
        ({"inputs": ["rwa"]}, r"Did you mean 'raw'"),
        ({"parameters": {"not valid": 1}}, "must be a Python identifier"),
        ({"parameters": {"when": object()}}, "must be JSON values"),
        ({"parameters": ["a"]}, "must be a mapping"),
    ],
)
def test_bad_arguments_fail_at_parse_time(config_dir, kwargs, expected):
    with pytest.raises(ConfigError, match=expected):
        notebook_task(config_dir, **kwargs)


def test_templated_names_are_checked_at_run_time(config_dir):
    task = notebook_task(config_dir, code_env="{{ params.env }}", output="{{ params.folder }}")
    task.code_env, task.output_folder = "plain", "reports"  # as rendered
    with pytest.raises(ConfigError, match="has no notebook support"):
        task.execute(fake_context())


def test_run_parameters_output_and_libraries_reach_the_runtime(config_dir):
    task = notebook_task(
        config_dir,
        output="reports/weekly",
        inputs=["raw"],
        parameters={"region": "emea", "limit": 3},
        html=False,
        libraries=[],
    )
    assert type(task.output).__name__ == "PlainXComArg", "BaseOperator.output (the XComArg) is untouched"
    catalog = load_catalog(config_dir)
    kind = task.task()
    resolved = kind.resolve(catalog)
    plan = kind.plan(catalog, resolved, fake_context()["ti"])
    assert plan.outputs == {"reports": "reports/weekly"}
    assert plan.label == "notebook notebooks/report.ipynb"
    assert plan.params == {
        "notebook": "notebooks/report.ipynb",
        "parameters": {"region": "emea", "limit": 3},
        "output": "reports",
        "html": False,
        "libraries": [],
    }
    assert plan.entrypoint == Entrypoint(PurePosixPath("dss_notebook.py"), "python", builtin=True)
    assert {"notebook", "parameters", "output_folder", "inputs", "code_env"} <= set(task.template_fields)


def test_notebook_task_renders_a_valid_pod_running_the_notebook_engine(tmp_path, capsys):
    """On kubernetes a notebook task is a recipe pod like any other, running dss_notebook.py."""
    import kubernetes_validate
    import yaml

    config_dir = tmp_path / "config"
    claims = BASE_CONFIG.replace("{path: out}", "{path: out, pvc: data, sub_path: out}").replace(
        "        root: project\n", "        root: project\n        pvc: projects\n"
    )
    write_config(config_dir, {"base.yaml": claims, "notebooks.yaml": NOTEBOOKS})
    make_project(config_dir, {"notebooks/report.ipynb": NOTEBOOK_JSON})
    dags = tmp_path / "dags"
    dags.mkdir()
    (dags / "report.py").write_text(
        "from airflow.sdk import DAG\n"
        "from dss_airflow import DSSNotebookOperator\n"
        "with DAG('notebook_on_k8s', schedule=None):\n"
        "    DSSNotebookOperator(task_id='report', notebook='notebooks/report.ipynb', code_env='nb',\n"
        f"        output='out/weekly', parameters={{'region': 'emea'}}, config_dir={str(config_dir)!r})\n"
    )
    argv = ["k8s", "render", "notebook_on_k8s", "report", "--config", "k8s", "--dags-folder", str(dags)]
    assert main(argv) == 0
    pod = yaml.safe_load(capsys.readouterr().out)
    kubernetes_validate.validate(pod, "1.36.0", strict=True)
    container = next(c for c in pod["spec"]["containers"] if c["name"] == "base")
    context = json.loads(next(e["value"] for e in container["env"] if e["name"] == "DSS_CONTEXT_JSON"))
    assert context["recipe"] == f"{RUNTIME_DIR}/dss_notebook.py"
    assert context["params"]["notebook"] == "notebooks/report.ipynb"
    assert context["params"]["parameters"] == {"region": "emea"} and context["params"]["output"] == "out"
    assert context["python_path"] == ["/dss/project/lib"], "the engine finds the project (and its lib/)"


# ------------------------------------------------------------------------------------ notebook serve
def test_serve_refuses_kubernetes_and_local_configs_before_any_docker_call(config_dir, capsys):
    for config, kind in (("k8s", "kubernetes"), ("local", "local")):
        code = main(
            [
                "notebook", "serve", "--code-env", "nb", "--execution-config", config,
                "--config-dir", str(config_dir),
            ]
        )  # fmt: skip
        err = capsys.readouterr().err
        assert code == 1
        assert f"notebook servers run on docker execution configs; '{config}' is a {kind} config" in err
        assert "kubernetes and local configs are not supported" in err


def test_serve_refuses_an_env_without_notebook_support(config_dir, capsys):
    argv = ["notebook", "serve", "--code-env", "plain", "--execution-config", "docker-nb"]
    assert main([*argv, "--config-dir", str(config_dir)]) == 1
    err = capsys.readouterr().err
    assert "code_envs.plain.notebook" in err and "Set 'notebook: true' under code_envs.plain" in err


@pytest.mark.parametrize(
    ("config", "expected"),
    [
        ("docker-host-net", "network_mode: a notebook server needs a published port"),
        ("docker-remote", "loopback"),
    ],
)
def test_serve_refuses_configs_that_cannot_publish_on_this_loopback(config_dir, config, expected):
    catalog = load_catalog(config_dir)
    resolved = resolve_execution(catalog, project="demo", execution_config=config, code_env="nb")
    with pytest.raises(ConfigError, match=expected):
        docker_config_of(resolved)


def test_stop_of_an_unknown_server_lists_the_known_ones(config_dir, capsys):
    assert main(["notebook", "stop", "dss-notebook-demo-nb", "--config-dir", str(config_dir)]) == 1
    assert "unknown notebook server 'dss-notebook-demo-nb'" in capsys.readouterr().err
    assert main(["notebook", "stop", "--config-dir", str(config_dir)]) == 2


def planned(config_dir: Path, tmp_path: Path) -> Any:
    catalog = load_catalog(config_dir)
    resolved = resolve_execution(catalog, project="demo", execution_config="docker-nb", code_env="nb")
    return plan_server(
        resolved,
        ImageRef("dss-code-envs:nb-0123456789ab", "/opt/dss/env/bin/python"),
        port=48888,
        folders={"reports": catalog.folder_path("reports"), "raw": catalog.folder_path("raw")},
        state_dir=tmp_path / "state" / "dss-notebook-demo-nb",
        worker_uid=0,
        worker_gid=0,
    )


def test_server_spec_binds_loopback_runs_non_root_with_the_configs_limits(config_dir, tmp_path):
    server = planned(config_dir, tmp_path)
    create, host = docker_arguments(server)
    assert host["port_bindings"] == {CONTAINER_PORT: ("127.0.0.1", 48888)}
    assert create["ports"] == [CONTAINER_PORT]
    assert create["user"] == "1000:1000", "a root worker runs the server as the config's non-root user"
    assert (
        host["mem_limit"] == 2**30 and host["nano_cpus"] == 1_500_000_000 and host["shm_size"] == 64 * 2**20
    )
    assert (
        host["init"] is True and host["cap_drop"] == ["ALL"] and "no-new-privileges" in host["security_opt"]
    )
    assert create["name"] == "dss-notebook-demo-nb"
    assert create["labels"][SERVER_LABEL] == "dss-notebook-demo-nb"
    assert create["labels"]["dss_airflow.code_env"] == "nb"
    assert create["labels"]["dss_airflow.execution_config"] == "docker-nb"
    assert create["environment"]["HOME"] == "/tmp"
    assert create["environment"]["PYTHONPATH"] == f"{RUNTIME_DIR}:/dss/project/lib"
    assert create["command"][:3] == ["/opt/dss/env/bin/python", "-m", "jupyterlab"]
    assert "--ServerApp.root_dir=/dss" in create["command"]
    mounts = {m["Target"]: (m["Source"], m["ReadOnly"]) for m in host["mounts"]}
    assert mounts["/dss/project"] == (str(config_dir / "project"), False)
    assert mounts["/dss/folders/reports"] == (str(config_dir / "data" / "reports"), False)
    assert mounts["/dss/folders/raw"] == (str(config_dir / "data" / "raw"), False)
    assert mounts["/dss/notebook-server"] == (str(server.state_dir), True), "token and context: read-only"
    assert mounts[RUNTIME_DIR][1] is True


def test_the_token_is_only_in_a_private_file_never_in_the_container_spec(config_dir, tmp_path):
    server = planned(config_dir, tmp_path)
    token = "tok-" + os.urandom(16).hex()
    _write_private(server, token, ["reports"])
    create, host = docker_arguments(server)
    spec_text = json.dumps([create, host], default=str)
    assert token not in spec_text, "not in the command line, environment, labels or mounts"
    assert create["environment"]["JUPYTER_TOKEN_FILE"] == "/dss/notebook-server/token"
    token_file = server.state_dir / "token"
    assert token_file.read_text() == token
    assert stat.S_IMODE(token_file.stat().st_mode) == 0o600
    assert stat.S_IMODE(server.state_dir.stat().st_mode) == 0o700
    if os.getuid() == 0:
        assert (token_file.stat().st_uid, token_file.stat().st_gid) == (1000, 1000)
    context = json.loads((server.state_dir / "context.json").read_text())
    assert context["inputs"] == context["outputs"] == {"reports": "/dss/folders/reports"}
    assert token not in (server.state_dir / "server.json").read_text()


def test_unknown_folder_for_serve_suggests_the_closest(config_dir):
    with pytest.raises(UnknownNameError, match="Did you mean 'reports'"):
        load_catalog(config_dir).folder_path("reprots")


# ------------------------------------------------------------------------------------ runtime
def test_kernelspec_puts_runtime_and_project_lib_on_the_kernels_path(tmp_path):
    context = {"workdir": str(tmp_path / "run" / "cwd"), "python_path": ["/dss/project/lib"], "params": {}}
    env = dss_notebook._kernel_environment(context, {"parameters": {"x": 1}, "libraries": ["project"]})
    private = tmp_path / "run" / "jupyter"
    assert env["JUPYTER_PATH"] == str(private) and env["IPYTHONDIR"].startswith(str(private))
    spec = json.loads((private / "kernels" / "python3" / "kernel.json").read_text())
    path = spec["env"]["PYTHONPATH"].split(os.pathsep)
    assert path[:2] == [str(Path(dss_notebook.__file__).parent), "/dss/project/lib"]
    kernel_context = json.loads(Path(spec["env"]["DSS_CONTEXT"]).read_text())
    assert kernel_context["params"] == {"x": 1}, "dss_recipe.params() in the notebook: its parameters"
    assert kernel_context["result_file"] != context.get("result_file")
    dss_notebook._kernel_environment(context, {"parameters": {}, "libraries": []})
    spec = json.loads((private / "kernels" / "python3" / "kernel.json").read_text())
    assert "/dss/project/lib" not in spec["env"]["PYTHONPATH"]


def test_cell_progress_is_numbered_and_end_markers_dropped():
    progress = dss_notebook._CellProgress(total=7)

    def record(message: str) -> logging.LogRecord:
        return logging.LogRecord("papermill", logging.INFO, __file__, 1, message, None, None)

    started = record("Executing Cell 3" + "-" * 39)
    assert progress.filter(started) and started.getMessage() == "[dss-notebook] Executing cell 3 of 7"
    assert not progress.filter(record("Ending Cell 3" + "-" * 42))
    output = record("answer: 42\n")
    assert progress.filter(output) and output.getMessage() == "answer: 42"


def test_an_r_notebook_gets_an_irkernel_spec_with_the_r_runtime_attached(tmp_path):
    notebook = tmp_path / "n.ipynb"
    notebook.write_text(
        json.dumps({"metadata": {"kernelspec": {"name": "ir", "language": "R"}}, "cells": []})
    )
    assert dss_notebook._kernel_language(str(notebook)) == "R"
    context = {"workdir": str(tmp_path / "run" / "cwd"), "python_path": ["/dss/project/lib"], "params": {}}
    dss_notebook._kernel_environment(context, {"parameters": {"x": 1}}, "R")
    spec = json.loads((tmp_path / "run" / "jupyter" / "kernels" / "ir" / "kernel.json").read_text())
    assert spec["argv"][:4] == ["R", "--slave", "-e", "IRkernel::main()"] and spec["language"] == "R"
    profile = Path(spec["env"]["R_PROFILE_USER"]).read_text()
    assert "dss_recipe.R" in profile and "attach(.dss_recipe" in profile
    python = tmp_path / "p.ipynb"
    python.write_text(json.dumps({"metadata": {"kernelspec": {"name": "python3", "language": "python"}}}))
    assert dss_notebook._kernel_language(str(python)) == "python"


def test_kernelspecs_install_list_remove_under_a_prefix(config_dir, tmp_path):
    from dss_airflow import notebook_kernels

    catalog = load_catalog(config_dir)
    names = notebook_kernels.install(catalog, prefix=str(tmp_path))
    assert names and all(name.startswith("dss-") for name in names)
    assert sorted(notebook_kernels.installed(str(tmp_path))) == sorted(names)
    spec = json.loads((tmp_path / "share" / "jupyter" / "kernels" / names[0] / "kernel.json").read_text())
    assert spec["argv"][-1] == "{connection_file}" and spec["interrupt_mode"] == "signal"
    assert notebook_kernels.remove(every=True, prefix=str(tmp_path)) == sorted(names)
    assert notebook_kernels.installed(str(tmp_path)) == {}


def test_a_kernel_publishes_its_five_ports_on_loopback_only(config_dir, tmp_path):
    from dss_airflow import notebook_kernels
    from dss_airflow.spec import ImageRef

    (resolved, *_) = notebook_kernels.kernel_targets(load_catalog(config_dir))
    spec = notebook_kernels.plan_kernel(
        resolved, ImageRef("img", "/opt/dss/env/bin/python"), name="k", state_dir=tmp_path, folders={},
        owner="host/boot/1/2", worker_uid=1000, worker_gid=1000,
    )  # fmt: skip
    ports = {key: 40000 + i for i, key in enumerate(notebook_kernels.PORTS)}
    from dss_airflow.notebook_server import docker_config_of

    config = docker_config_of(resolved)
    create, host = notebook_kernels.docker_arguments(spec, config, ports)
    assert sorted(create["ports"]) == sorted(ports.values())
    assert set(host["port_bindings"].values()) == {("127.0.0.1", port) for port in ports.values()}
    assert create["user"] != "0" and create["command"][-1] == "/dss/kernel/connection.json"


def test_an_r_kernel_runs_irkernel_with_the_r_profile_the_launcher_writes(config_dir, tmp_path):
    from dss_airflow import notebook_kernels
    from dss_airflow.spec import ImageRef

    (resolved, *_) = notebook_kernels.kernel_targets(load_catalog(config_dir))
    spec = notebook_kernels.plan_kernel(
        resolved, ImageRef("img", "/opt/dss/env/bin/python"), name="k", state_dir=tmp_path, folders={},
        owner="host/boot/1/2", worker_uid=1000, worker_gid=1000, language="R",
    )  # fmt: skip
    assert spec.command == ("R", "--slave", "-e", "IRkernel::main()", "--args", "/dss/kernel/connection.json")
    assert spec.env["R_PROFILE_USER"] == "/dss/kernel/dss_profile.R"
    kernelspec = notebook_kernels.kernelspec(resolved, config_dir, language="R")
    assert kernelspec["language"] == "R" and kernelspec["display_name"].startswith("R (")
    assert kernelspec["argv"][kernelspec["argv"].index("--language") + 1] == "R"
    name = notebook_kernels.kernel_name("demo", "stats", "docker-small", "R")
    assert name == "dss-demo-stats-docker-small-r"
