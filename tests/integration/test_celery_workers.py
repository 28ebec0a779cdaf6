"""Several Airflow workers for real: CeleryExecutor, a Redis broker, PostgreSQL for Airflow's metadata and
the image ledger, two Celery workers each inside its own test host (network namespace with its own TLS
Docker daemon, tests/hosts.py), the scheduler, dag-processor and api-server on this machine.

What it shows: the example pipeline runs through the workers; an env rebuilt by a task on host A (built
here, pushed to the registry, recorded in the shared ledger) is what the next task runs on host B — pulled
by digest onto B's daemon — though worker B has no ledger file of its own.
"""

from __future__ import annotations

import json
import shutil
import textwrap
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from dss_airflow.config.loader import load_catalog
from dss_airflow.images.ledger import Ledger
from dss_airflow.images.plan import Target
from dss_airflow.images.service import ImageService
from tests.airflow_cluster import AirflowCluster, redis_server
from tests.helpers import EXAMPLE_CONFIG
from tests.services import postgres_cluster

if TYPE_CHECKING:
    from collections.abc import Iterator

    from tests.hosts import NamespaceHosts

pytestmark = [pytest.mark.docker, pytest.mark.airflow, pytest.mark.multihost]

REPO = Path(__file__).resolve().parents[2]
API_PORT, REDIS_PORT, PG_PORT = 18080, 18379, 18434  # 18432-18433: the ledger tests
ENV = "celery-env"

HOSTS_YAML = """
execution_configs:
  host-a:
    type: docker
    base_image: debian-py311
    docker_host: {a.docker_host}
    tls_cert_dir: {a.tls_dir}
    registry: {{url: "{registry}", connection_id: dsst_registry}}
    network_mode: none
    queue: host-a
  host-b:
    type: docker
    base_image: debian-py311
    docker_host: {b.docker_host}
    tls_cert_dir: {b.tls_dir}
    registry: {{url: "{registry}", connection_id: dsst_registry}}
    network_mode: none
    queue: host-b
code_envs:
  {env}: {{packages: {packages}, build_for: [host-a, host-b]}}
managed_folders:
  hosts_out: {{path: hosts_out}}
"""

RECIPE = """
import importlib.util, dss_recipe
has_attrs = importlib.util.find_spec("attrs") is not None
(dss_recipe.output_dir("hosts_out") / "where.json").write_text(
    '{"attrs": %s}' % ("true" if has_attrs else "false")
)
"""

DAG = """
from airflow.sdk import DAG
from dss_airflow import DSSContainerRecipeOperator, DSSRebuildCodeEnvImagesOperator

with DAG("celery_two_hosts", schedule=None, catchup=False):
    rebuild = DSSRebuildCodeEnvImagesOperator(
        task_id="rebuild_on_a", pairs=[{{"env": "{env}", "config": "host-b"}}], queue="host-a"
    )
    run = DSSContainerRecipeOperator(
        task_id="run_on_b", recipe="recipes/celery_where.py", project="demo", code_env="{env}",
        execution_config="host-b", outputs=["hosts_out"],
    )
    rebuild >> run
"""


@pytest.fixture(scope="module")
def deployment(remote_hosts: NamespaceHosts, base_image: str, tmp_path_factory) -> Iterator[dict[str, Any]]:
    """The whole deployment, stopped by pid at the end (also when the test fails)."""
    root = tmp_path_factory.mktemp("celery")
    a, b = remote_hosts["a"], remote_hosts["b"]
    registry = remote_hosts.registry
    assert registry is not None
    config_dir = root / "config"
    shutil.copytree(EXAMPLE_CONFIG, config_dir)
    shutil.copytree(EXAMPLE_CONFIG.parent / "demo_project", root / "demo_project")
    (root / "demo_project" / "recipes" / "celery_where.py").write_text(RECIPE, encoding="utf-8")

    def configure(packages: list[str]) -> None:
        text = HOSTS_YAML.format(a=a, b=b, registry=registry.url, env=ENV, packages=json.dumps(packages))
        (config_dir / "hosts.yaml").write_text(text, encoding="utf-8")

    configure(["six==1.16.0"])
    dags = root / "dags"
    dags.mkdir()
    shutil.copy(REPO / "dags" / "dss_example_recipes.py", dags)
    (dags / "celery_two_hosts.py").write_text(textwrap.dedent(DAG.format(env=ENV)), encoding="utf-8")

    outside = ["127.0.0.1", a.outside_address, b.outside_address]
    with (
        postgres_cluster(PG_PORT, listen=outside, trusted_network="10.231.0.0/16") as pg,
        redis_server(REDIS_PORT, outside, root / "redis"),
    ):
        pg.create_database("airflow")
        registry_conn = {
            "conn_type": "docker", "host": registry.url,
            "login": registry.login, "password": registry.password,
        }  # fmt: skip
        shared = {
            "DSS_AIRFLOW_CONFIG": str(config_dir),
            "DSS_AIRFLOW_DATA_DIR": str(root / "data"),  # the managed folders: the one shared storage
            "DSS_AIRFLOW_STATE_CONN_ID": "dss_state",
            "AIRFLOW_CONN_DSST_REGISTRY": json.dumps(registry_conn),
            "AIRFLOW__CELERY__WORKER_CONCURRENCY": "2",
        }

        def at(address: str) -> dict[str, str]:
            """What a process reaching the services at ``address`` is told."""
            return {
                "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": pg.uri(database="airflow", host=address).replace(
                    "postgresql://", "postgresql+psycopg2://"
                ),
                "AIRFLOW_CONN_DSS_STATE": pg.uri(host=address),
                "AIRFLOW__CELERY__BROKER_URL": f"redis://{address}:{REDIS_PORT}/0",
                "AIRFLOW__CELERY__RESULT_BACKEND": f"redis://{address}:{REDIS_PORT}/1",
                "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"http://{address}:{API_PORT}/execution/",
            }

        cluster = AirflowCluster.create(
            root / "airflow",
            dags_folder=dags,
            executor="CeleryExecutor",
            api_port=API_PORT,
            api_host="0.0.0.0",
            extra_env={**shared, **at("127.0.0.1"), "DSS_AIRFLOW_STATE": str(root / "state-control")},
        )
        cluster.sql_alchemy_conn = cluster.env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"]
        try:
            cluster.airflow("db", "migrate")
            cluster.start_core()
            for host in (a, b):
                cluster.start(
                    f"worker-{host.name}",
                    "celery", "worker", "--queues", f"host-{host.name},default",
                    "--celery-hostname", f"host-{host.name}@%h",
                    netns=host.namespace,
                    env={
                        **at(host.outside_address),
                        # Each worker has its own local state and cache: nothing else is shared.
                        "DSS_AIRFLOW_STATE": str(root / f"state-{host.name}"),
                        "DSS_AIRFLOW_CACHE": str(root / f"cache-{host.name}"),
                    },
                )  # fmt: skip
            cluster.wait_parsed(["dss_example_recipes", "celery_two_hosts"])
            yield {
                "cluster": cluster,
                "root": root,
                "configure": configure,
                "hosts": remote_hosts,
                "ledger_env": {**shared, **at("127.0.0.1")},
            }
        finally:
            cluster.stop()


def test_the_example_pipeline_runs_through_celery_workers(deployment):
    cluster: AirflowCluster = deployment["cluster"]
    run_id = cluster.trigger("dss_example_recipes", {"orders": 60})
    assert cluster.wait_run("dss_example_recipes", run_id, timeout=600) == "success", cluster.tails()
    summary = json.loads((deployment["root"] / "data" / "curated" / "summary.json").read_text())
    assert summary["orders"] == 60
    workers = cluster.log("worker-a") + cluster.log("worker-b")
    assert run_id in workers, "the tasks ran on the Celery workers in the test hosts"


def test_an_env_rebuilt_on_host_a_is_what_host_b_runs_next(deployment, monkeypatch):
    cluster: AirflowCluster = deployment["cluster"]
    hosts: NamespaceHosts = deployment["hosts"]
    for name, value in deployment["ledger_env"].items():
        monkeypatch.setenv(name, value)  # this test process reads the shared ledger as the workers do
    config_dir = deployment["root"] / "config"
    first = ImageService(load_catalog(config_dir)).build([ENV], ["host-b"])
    assert first.ok, first.failed
    old = Ledger.default().pair(ENV, "host-b").current
    assert old is not None and "@sha256:" in old.image, "host b runs a pushed image by digest"

    deployment["configure"](["six==1.16.0", "attrs==25.1.0"])  # the admin adds a package
    # Test hosts have no route to the package index: the new list's lock is resolved here and shared
    # through the ledger, as a worker with an index mirror would resolve it (the build itself runs on the
    # build daemon, which reaches the index, from worker a).
    ImageService(load_catalog(config_dir)).planner.lock_of(Target(ENV, "host-b"))
    run_id = cluster.trigger("celery_two_hosts")
    assert cluster.wait_run("celery_two_hosts", run_id, timeout=900) == "success", cluster.tails(80)

    tasks = cluster.task_instances("celery_two_hosts", run_id)
    assert tasks["rebuild_on_a"]["queue"] == "host-a"
    assert tasks["run_on_b"]["queue"] == "host-b", "the config's queue routes the task"
    assert "run_on_b" in cluster.log("worker-b") and "run_on_b" not in cluster.log("worker-a")
    assert "rebuild_on_a" in cluster.log("worker-a")

    new = Ledger.default().pair(ENV, "host-b").current
    assert new is not None and new.image != old.image, "the rebuild switched host b's pair"
    digest = new.image.split("@", 1)[1]
    with hosts["b"].client() as client:
        pulled = [d for image in client.images() for d in image.get("RepoDigests") or []]
    assert any(d.endswith(digest) for d in pulled), "host b's daemon pulled the new image by digest"
    where = json.loads((deployment["root"] / "data" / "hosts_out" / "where.json").read_text())
    assert where == {"attrs": True}, "the recipe on host b ran the rebuilt image"
    state_b = deployment["root"] / "state-b"
    assert not list(state_b.rglob("*.json")) and not list(state_b.rglob("*.sqlite")), (
        "worker b found the image with no ledger of its own"
    )
