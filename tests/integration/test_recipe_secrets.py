"""Connections and variables reach a recipe, and nothing Airflow or Docker records shows their values.

The main test runs a DAG under a real scheduler (tests/airflow_cluster.py: the task runner under its
supervisor, which masks the task log; XCom and rendered fields stored in the metadata database) on the
Docker backend, with the connection and variable given as ``AIRFLOW_CONN_*`` / ``AIRFLOW_VAR_*``. The
recipe waits on a gate file so that the running container can be inspected. (``airflow dags test`` runs
the task in its own process, whose log is not masked the way a worker's is: not used here.)
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import textwrap
import time
import uuid
from typing import TYPE_CHECKING

import pytest

from dss_airflow.errors import ExecutionError, MissingSecretError
from dss_airflow.operators.recipe import DSSContainerRecipeOperator
from dss_airflow.staging import run_dirs
from tests.airflow_cluster import AirflowCluster
from tests.helpers import BASE_CONFIG, fake_context, make_project, write_config

if TYPE_CHECKING:
    from pathlib import Path

#: This test's ports (api-server, worker log server): the range given to this branch's tests.
API_PORT = 18670

GATED_RECIPE = """
    import hashlib, json, os, time, dss_recipe
    db = dss_recipe.connection("CONN")
    token = dss_recipe.variable("VAR")
    print("connecting to", db.host, "as", db.login, "with", db.password, flush=True)  # the masker hides it
    print("the connection prints as", db, flush=True)
    gate = dss_recipe.input_path("gate") / "go"
    deadline = time.time() + 600  # the test opens the gate once it has inspected the container
    while not gate.exists() and time.time() < deadline:
        time.sleep(0.2)
    secrets_file = json.load(open(os.environ["DSS_CONTEXT"]))["secrets_file"]
    (dss_recipe.output_dir("out") / "digest.txt").write_text(hashlib.sha256(db.password.encode()).hexdigest())
    stat = os.stat(secrets_file)
    dss_recipe.set_result({
        "password_sha256": hashlib.sha256(db.password.encode()).hexdigest(),
        "token_length": len(token),
        "host": db.host, "port": db.port, "schema": db.schema, "extra": db.extra, "conn_type": db.conn_type,
        "file": secrets_file, "file_mode": oct(stat.st_mode & 0o777), "file_uid": stat.st_uid,
        "uid": os.getuid(),
        "echoed": "careless: " + db.password,
    })
"""

DAG_FILE = """
    from airflow.sdk import DAG
    from dss_airflow import DSSContainerRecipeOperator

    with DAG("DAG_ID", schedule=None):
        DSSContainerRecipeOperator(
            task_id="load",
            recipe="recipes/gated.py",
            config_dir="CONFIG_DIR",
            execution_config="docker-small",
            inputs=["gate"],
            outputs=["out"],
            connections=["CONN"],
            variables=["VAR"],
        )
"""


def names() -> tuple[str, str]:
    """A connection id and a variable key of this test alone (Airflow caches secrets per process)."""
    suffix = uuid.uuid4().hex[:8]
    return f"warehouse_{suffix}", f"api_token_{suffix}"


@pytest.fixture
def config_dir(tmp_path: Path, base_image: str) -> Path:
    """BASE_CONFIG plus a ``gate`` folder the gated recipe waits on."""
    config = BASE_CONFIG.replace("dss-airflow-base:bookworm-py311", base_image).replace(
        "out: {path: out}", "out: {path: out}\n      gate: {path: gate}"
    )
    write_config(tmp_path / "config", {"c.yaml": config})
    (tmp_path / "config" / "data" / "gate").mkdir(parents=True)
    return tmp_path / "config"


def containers_of(docker_client, dag_id: str) -> list:
    return docker_client.containers.list(all=True, filters={"label": f"dss_airflow.dag_id={dag_id}"})


def wait_for_running_container(docker_client, dag_id: str, cluster: AirflowCluster):
    while True:
        running = [c for c in containers_of(docker_client, dag_id) if c.status == "running"]
        if running:
            return running[0]
        cluster.check_alive()
        time.sleep(0.5)


@pytest.mark.airflow
@pytest.mark.docker
def test_a_recipe_in_docker_reads_a_connection_that_no_record_shows(config_dir, tmp_path, docker_client):
    """Under a real scheduler (LocalExecutor: the task runner under its supervisor, whose log masking is
    what users see), a recipe reads a password; docker inspect, the worker's disk, the task log, XCom and
    the rendered fields do not hold it."""
    conn_id, var_key = names()
    password, token = f"pw-{uuid.uuid4().hex}", f"tok-{uuid.uuid4().hex}"
    dag_id = f"secrets-{uuid.uuid4().hex[:8]}"
    make_project(
        config_dir, {"recipes/gated.py": GATED_RECIPE.replace("CONN", conn_id).replace("VAR", var_key)}
    )
    dags = tmp_path / "dags"
    dags.mkdir()
    (dags / "secrets_dag.py").write_text(
        textwrap.dedent(DAG_FILE)
        .replace("DAG_ID", dag_id)
        .replace("CONFIG_DIR", str(config_dir))
        .replace("CONN", conn_id)
        .replace("VAR", var_key)
    )
    cluster = AirflowCluster.create(
        tmp_path / "airflow",
        dags_folder=dags,
        api_port=API_PORT,
        extra_env={
            "AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT": str(API_PORT + 1),
            f"AIRFLOW_CONN_{conn_id.upper()}": f"postgresql://etl:{password}@db.example:6432/sales?sslmode=require",
            f"AIRFLOW_VAR_{var_key.upper()}": token,
        },
    )
    try:
        cluster.airflow("db", "migrate")
        cluster.start_core()
        cluster.wait_parsed([dag_id])
        run_id = cluster.trigger(dag_id)
        container = wait_for_running_container(docker_client, dag_id, cluster)
        inspected = docker_client.api.inspect_container(container.id)
        assert inspected["Config"]["Labels"]["dss_airflow.task_id"] == "load", "sanity: the task's container"
        for secret in (password, token):
            assert secret not in json.dumps(inspected), "not in env, argv, labels, mounts: docker inspect"
        assert not any(m["Destination"].startswith("/dss/secrets") for m in inspected["Mounts"])
        on_worker = [path for run_dir in run_dirs() for path in run_dir.rglob("*") if path.is_file()]
        assert any(path.name == "context.json" for path in on_worker), "sanity: the run directory exists"
        for path in on_worker:
            assert password.encode() not in path.read_bytes(), f"the worker's disk holds it: {path}"
        (config_dir / "data" / "gate" / "go").write_text("")
        state = cluster.wait_run(dag_id, run_id)
        task_log = cluster.task_log(dag_id, run_id, "load")
        xcom = cluster.query(
            "SELECT value FROM xcom WHERE dag_id = :d AND run_id = :r AND task_id = 'load' "
            "AND key = 'return_value'",
            d=dag_id,
            r=run_id,
        )
        rendered = cluster.query(
            "SELECT rendered_fields FROM rendered_task_instance_fields WHERE dag_id = :d AND run_id = :r",
            d=dag_id,
            r=run_id,
        )
    finally:
        cluster.stop()
        with contextlib.suppress(OSError):
            (config_dir / "data" / "gate" / "go").write_text("")  # a recipe still waiting ends
    assert state == "success", task_log[-6000:]

    # The recipe read the values: what it derived reaches its output folder and XCom.
    digest = hashlib.sha256(password.encode()).hexdigest()
    assert (config_dir / "data" / "out" / "digest.txt").read_text() == digest
    # The task log as the worker wrote it: the recipe printed the password, the log shows ***.
    assert "as etl with ***" in task_log, task_log[-6000:]
    assert "password='***'" in task_log, "printing the connection shows no password"
    for secret in (password, token):
        assert secret not in task_log, "not in the task log"

    # What Airflow stored in its metadata database: XCom and the rendered template fields.
    assert xcom and rendered, "sanity: Airflow stored both"
    stored_xcom, stored_fields = str(xcom[0][0]), str(rendered[0][0])
    assert digest in stored_xcom and "recipes/gated.py" in stored_fields, "sanity: the right records"
    for secret in (password, token):
        assert secret not in stored_xcom and secret not in stored_fields
    value = xcom[0][0]
    result = (json.loads(value) if isinstance(value, str | bytes) else value)["result"]
    assert result["echoed"] == "careless: ***", "a recipe echoing a secret into its result gets *** instead"
    assert result["token_length"] == len(token)
    assert (result["host"], result["port"], result["schema"]) == ("db.example", 6432, "sales")
    assert result["extra"] == {"sslmode": "require"} and result["conn_type"] == "postgres"
    assert result["file"] == "/dss/secrets/secrets.json"
    assert (result["file_mode"], result["file_uid"], result["uid"]) == ("0o400", 1000, 1000)

    # Afterwards: no container (the secrets file lived only in its own filesystem), no run directory.
    assert containers_of(docker_client, dag_id) == []
    assert [d for d in run_dirs() if d.name.startswith("dss-run-load-")] == []


@pytest.mark.docker
def test_a_missing_connection_fails_before_any_container(config_dir, docker_client, monkeypatch):
    conn_id, var_key = names()
    monkeypatch.delenv(f"AIRFLOW_CONN_{conn_id.upper()}", raising=False)
    make_project(config_dir, {"recipes/never.py": "raise SystemExit('must not run')\n"})
    dag_id = f"secrets-{uuid.uuid4().hex[:8]}"
    op = DSSContainerRecipeOperator(
        task_id="load_orders",
        recipe="recipes/never.py",
        config_dir=str(config_dir),
        execution_config="docker-small",
        connections=[conn_id],
        variables=[var_key],
    )
    before = set(run_dirs())
    with pytest.raises(MissingSecretError) as info:
        op.execute(fake_context(dag_id=dag_id, task_id="load_orders"))
    message = str(info.value)
    assert message.startswith(f"task 'load_orders' declares connection(s) '{conn_id}'"), message
    assert f"airflow connections add {conn_id} --conn-uri" in message
    assert f"AIRFLOW_CONN_{conn_id.upper()}" in message
    assert f"variable(s) '{var_key}'" in message and f"airflow variables set {var_key} VALUE" in message
    assert message.endswith("Nothing was started.")
    assert containers_of(docker_client, dag_id) == [], "no container was created"
    assert set(run_dirs()) == before, "no run directory was made"


@pytest.mark.docker
def test_copy_layout_and_a_failing_recipe_keep_the_secret_out_of_errors(
    config_dir, docker_client, monkeypatch
):
    """A daemon that does not share the worker's files (here the local one, told so) gets the same file;
    a recipe that fails with the password in its error fails with *** instead, and leaves no container."""
    (config_dir / "copy.yaml").write_text(
        "execution_configs:\n  docker-copy:\n    type: docker\n    base_image: base\n"
        "    shares_worker_filesystem: false\n"
    )
    conn_id, _ = names()
    password = f"pw-{uuid.uuid4().hex}"
    monkeypatch.setenv(f"AIRFLOW_CONN_{conn_id.upper()}", f"postgresql://etl:{password}@db.example/sales")
    make_project(
        config_dir,
        {
            "recipes/fails.py": f"""
                import json, os, dss_recipe
                db = dss_recipe.connection("{conn_id}")
                path = json.load(open(os.environ["DSS_CONTEXT"]))["secrets_file"]
                print("mode", oct(os.stat(path).st_mode & 0o777), "uid", os.stat(path).st_uid, flush=True)
                raise RuntimeError("login refused for etl:" + db.password)
            """
        },
    )
    from dss_airflow.config.loader import load_catalog
    from dss_airflow.images.service import ImageService

    # A daemon without the worker's files runs the runtime of the code env's image: built (or reused).
    report = ImageService(load_catalog(config_dir)).build(["plain"], ["docker-copy"])
    assert report.ok, report
    dag_id = f"secrets-{uuid.uuid4().hex[:8]}"
    op = DSSContainerRecipeOperator(
        task_id="fails",
        recipe="recipes/fails.py",
        config_dir=str(config_dir),
        execution_config="docker-copy",
        connections=[conn_id],
    )
    with pytest.raises(ExecutionError) as info:
        op.execute(fake_context(dag_id=dag_id, task_id="fails"))
    message, logs = str(info.value), "\n".join(info.value.logs)
    assert "RuntimeError: login refused for etl:***" in message, message
    assert "mode 0o400 uid 1000" in logs, logs
    assert password not in message and password not in logs
    assert containers_of(docker_client, dag_id) == []
    assert [d for d in run_dirs() if d.name.startswith("dss-run-fails-")] == []


@pytest.fixture
def local_secrets(config_dir, monkeypatch, tmp_path):
    """A connection and a variable as Airflow env vars, for the local backend (a private venv cache)."""
    monkeypatch.setenv("DSS_AIRFLOW_CACHE", str(tmp_path / "cache"))
    conn_id, var_key = names()
    password = f"pw-{uuid.uuid4().hex}"
    monkeypatch.setenv(
        f"AIRFLOW_CONN_{conn_id.upper()}", f"mysql://reader:{password}@mysql.example:3306/shop"
    )
    monkeypatch.setenv(f"AIRFLOW_VAR_{var_key.upper()}", "eu-west-1")
    return conn_id, var_key, password


def run_locally(config_dir, recipe: str, conn_id: str, var_key: str) -> dict:
    op = DSSContainerRecipeOperator(
        task_id="local_secrets",
        recipe=recipe,
        config_dir=str(config_dir),
        execution_config="local",
        connections=[conn_id],
        variables=[var_key],
    )
    return op.execute(fake_context(dag_id=f"secrets-{uuid.uuid4().hex[:8]}", task_id="local_secrets"))


def test_a_local_python_recipe_reads_its_secrets_from_a_private_file(config_dir, local_secrets):
    conn_id, var_key, password = local_secrets
    make_project(
        config_dir,
        {
            "recipes/local.py": f"""
                import json, os, dss_recipe
                db = dss_recipe.connection("{conn_id}")
                path = json.load(open(os.environ["DSS_CONTEXT"]))["secrets_file"]
                try:
                    dss_recipe.connection("nope")
                    unknown = None
                except KeyError as exc:
                    unknown = str(exc)
                dss_recipe.set_result({{
                    "password_length": len(db["password"]), "login": db.login, "port": db.port,
                    "variable": dss_recipe.variable("{var_key}").upper(),
                    "echoed": dss_recipe.variable("{var_key}"), "unknown": unknown, "shown": repr(db),
                    "mode": oct(os.stat(path).st_mode & 0o777), "owner": os.stat(path).st_uid,
                    "in_run_dir": os.path.dirname(path) == os.path.dirname(os.getcwd()),
                }})
            """
        },
    )
    result = run_locally(config_dir, "recipes/local.py", conn_id, var_key)["result"]
    assert result["password_length"] == len(password)
    assert (result["login"], result["port"], result["variable"]) == ("reader", 3306, "EU-WEST-1")
    assert result["echoed"] == "***", "a variable is a secret too: never in XCom"
    assert f"no connection named 'nope' declared by this task (declared: {conn_id})" in result["unknown"]
    assert "password='***'" in result["shown"] and password not in result["shown"]
    assert (result["mode"], result["owner"], result["in_run_dir"]) == ("0o600", os.getuid(), True)
    assert [d for d in run_dirs() if d.name.startswith("dss-run-local_secrets-")] == [], "removed with it"


def test_an_r_recipe_reads_a_connection_as_a_list(config_dir, local_secrets):
    if shutil.which("Rscript") is None:
        message = "no Rscript on this worker: run scripts/ensure-r.sh"
        pytest.fail(message) if os.environ.get("CI") == "true" else pytest.skip(message)
    conn_id, var_key, password = local_secrets
    make_project(
        config_dir,
        {
            "recipes/local.R": f"""
                db <- connection("{conn_id}")
                unknown <- tryCatch(variable("nope"), error = function(e) conditionMessage(e))
                set_result(list(login = db$login, port = db$port, schema = db$schema, type = db$conn_type,
                                password_length = nchar(db$password), region = toupper(variable("{var_key}")),
                                unknown = unknown))
            """
        },
    )
    result = run_locally(config_dir, "recipes/local.R", conn_id, var_key)["result"]
    assert result == {
        "login": "reader",
        "port": 3306,
        "schema": "shop",
        "type": "mysql",
        "password_length": len(password),
        "region": "EU-WEST-1",
        "unknown": f"no variable named 'nope' declared by this task (declared: {var_key}): add it to the "
        "operator's variables=[...]",
    }
