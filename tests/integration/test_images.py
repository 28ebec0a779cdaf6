"""Code-env images for real: build once per hash, plan exactly what changed, smoke test, failure keeps the
previous image, rollback, registry push with credentials from an Airflow connection, run by digest."""

from __future__ import annotations

import json
import uuid

import pytest

from dss_airflow.config.loader import load_catalog
from dss_airflow.images.plan import Target
from dss_airflow.images.service import ImageService
from dss_airflow.operators.recipe import DSSContainerRecipeOperator
from tests.helpers import fake_context, make_project, write_config

pytestmark = pytest.mark.docker

CONFIG = """
defaults: {{project: p, data_dir: data}}
base_images:
  base: {{image: "{base}", bootstrap: {{}}}}
execution_configs:
  d1: {{type: docker, base_image: base}}
  d2: {{type: docker, base_image: base, resources: {{memory: 512m}}}}
{configs}
code_envs:
  six: {{packages: ["six==1.16.0"]}}
  attrs: {{packages: ["{attrs}"], build_for: [d1]}}
{envs}
managed_folders:
  out: {{path: out}}
projects:
  p: {{root: project}}
"""
RECIPE = """
import importlib, importlib.metadata, os, dss_recipe
name = dss_recipe.params()["package"]
importlib.import_module(name)
resources = os.environ.get("DSS_RESOURCES_DIR")
dss_recipe.set_result({
    "version": importlib.metadata.version(dss_recipe.params()["distribution"]),
    "resources": sorted(os.listdir(resources)) if resources else None,
})
"""


class ConfigDir:
    """A config directory whose YAML the test rewrites, as an admin editing package lists would."""

    def __init__(self, path, base_image: str) -> None:
        self.path = path
        self.base_image = base_image
        self.write()
        make_project(path, {"recipes/check.py": RECIPE})

    def write(self, attrs: str = "attrs==25.1.0", configs: str = "", envs: str = "") -> None:
        text = CONFIG.format(base=self.base_image, attrs=attrs, configs=configs, envs=envs)
        write_config(self.path, {"c.yaml": text})

    def __str__(self) -> str:
        return str(self.path)


@pytest.fixture
def config_dir(tmp_path, base_image):
    return ConfigDir(tmp_path, base_image)


def service(config_dir: ConfigDir) -> ImageService:
    return ImageService(load_catalog(config_dir.path))


def run_recipe(config_dir, env: str, config: str, package: str, distribution: str) -> dict:
    op = DSSContainerRecipeOperator(
        task_id="check",
        recipe="recipes/check.py",
        code_env=env,
        execution_config=config,
        config_dir=str(config_dir.path),
        recipe_params={"package": package, "distribution": distribution},
    )
    return op.execute(fake_context(dag_id=f"dag-{uuid.uuid4().hex[:8]}"))["result"]


def test_build_plan_rebuild_cycle(config_dir, docker_client):
    images = service(config_dir)
    assert {(i.target.env, i.target.config, i.action) for i in images.planner.plan()} == {
        ("attrs", "d1", "build"),
        ("six", "d1", "build"),
        ("six", "d2", "build"),
    }
    first = images.build(envs=None)
    assert first.ok, first.failed
    # An image with the same build hash (from an earlier run on this engine) is reused, not rebuilt.
    assert len(first.built) + len(first.reused) == 2, "six is built once for d1 and d2: same base, same lock"
    assert sorted(map(str, first.switched)) == ["attrs/d1", "six/d1", "six/d2"]
    record = images.ledger.pair("six", "d1").current
    assert record is not None and record == images.ledger.pair("six", "d2").current
    labels = docker_client.images.get(record.tag).labels
    assert labels["dss_airflow.build_hash"] == record.build_hash
    assert labels["dss_airflow.lock_sha256"] == record.lock_sha256
    assert (
        labels["org.opencontainers.image.base.digest"]
        == docker_client.images.get(images.planner.base_of("d1").image).id
    )
    assert docker_client.images.get(record.tag).attrs["Config"]["User"] == "1000:1000"
    baked = docker_client.containers.run(record.tag, ["ls", "/opt/dss-airflow/runtime"], remove=True).decode()
    assert {"runner.py", "dss_recipe.py", "smoke.py"} <= set(baked.split()), "pods need the runtime"

    second = service(config_dir).build()
    assert (second.built, second.switched, len(second.up_to_date)) == ([], [], 3), "nothing to do"

    config_dir.write(attrs="attrs==25.3.0")
    images = service(config_dir)
    plan = images.planner.plan()
    assert [(str(i.target), i.reasons) for i in plan if i.action == "build"] == [
        ("attrs/d1", ["package list changed"])
    ]
    third = images.build()
    assert (
        third.ok and len(third.built) + len(third.reused) == 1 and third.switched == [Target("attrs", "d1")]
    )
    assert [i.action for i in images.planner.plan()] == ["up to date"] * 3
    assert run_recipe(config_dir, "attrs", "d1", "attr", "attrs")["version"] == "25.3.0"


def test_broken_package_list_keeps_the_previous_image_in_use(config_dir):
    assert service(config_dir).build(envs=["attrs"]).ok
    before = service(config_dir).ledger.pair("attrs", "d1").current
    config_dir.write(attrs="attrs-does-not-exist-dss==1.0")
    images = service(config_dir)
    report = images.build(envs=["attrs"])
    assert not report.ok
    assert "attrs-does-not-exist-dss" in report.failed[Target("attrs", "d1")]
    state = images.ledger.pair("attrs", "d1")
    assert state.status == "failed" and state.current == before
    assert run_recipe(config_dir, "attrs", "d1", "attr", "attrs")["version"] == "25.1.0", "tasks still run"


def test_failed_build_step_and_resources(config_dir, docker_client):
    root = config_dir.path
    (root / "res").mkdir()
    (root / "res" / "model.bin").write_text("weights")
    (root / "init-ok.sh").write_text("echo generated > lookup.csv\n")
    (root / "init-bad.sh").write_text("echo about to fail; exit 3\n")
    envs = """
  copied: {packages: ["six==1.16.0"], build_for: [d1], resources: {mode: copy, path: res}}
  scripted: {packages: ["six==1.16.0"], build_for: [d1], resources: {mode: init_script, path: SCRIPT}}
"""
    config_dir.write(envs=envs.replace("SCRIPT", "init-ok.sh"))
    images = service(config_dir)
    assert images.build(envs=["copied", "scripted"]).ok
    assert run_recipe(config_dir, "copied", "d1", "six", "six")["resources"] == ["model.bin"]
    assert run_recipe(config_dir, "scripted", "d1", "six", "six")["resources"] == ["lookup.csv"]
    good = images.ledger.pair("scripted", "d1").current

    config_dir.write(envs=envs.replace("SCRIPT", "init-bad.sh"))
    images = service(config_dir)
    assert [i.reasons for i in images.planner.plan(envs=["scripted"])] == [["resources changed"]]
    report = images.build(envs=["scripted"])
    error = report.failed[Target("scripted", "d1")]
    assert "exit code 3" in error and "about to fail" in error, "the log tail says why"
    state = images.ledger.pair("scripted", "d1")
    assert state.current == good and state.status == "failed"
    assert state.last_log is not None and "about to fail" in (images.ledger.log(state.last_log) or "")
    builders = {"label": ["dss_airflow.kind=builder", "dss_airflow.code_env=scripted"]}
    leftovers = docker_client.containers.list(all=True, filters=builders)
    assert leftovers == [], "no builder container is left behind"


def test_rollback(config_dir):
    assert service(config_dir).build(envs=["attrs"]).ok
    config_dir.write(attrs="attrs==25.3.0")
    images = service(config_dir)
    assert images.build(envs=["attrs"]).ok
    assert run_recipe(config_dir, "attrs", "d1", "attr", "attrs")["version"] == "25.3.0"
    images.rollback("attrs")
    assert run_recipe(config_dir, "attrs", "d1", "attr", "attrs")["version"] == "25.1.0"
    assert images.ledger.pair("attrs", "d1").status == "rolled back"


def test_push_to_registry_with_connection_credentials_and_run_by_digest(
    config_dir, registry, docker_client, monkeypatch
):
    connection = {
        "conn_type": "docker",
        "host": registry["url"],
        "login": "dss",
        "password": registry["password"],
    }
    monkeypatch.setenv("AIRFLOW_CONN_DSS_TEST_REGISTRY", json.dumps(connection))
    config_dir.write(
        configs=f"""  pushed:
    type: docker
    base_image: base
    registry: {{url: "{registry["url"]}", connection_id: dss_test_registry}}"""
    )
    text = (config_dir.path / "c.yaml").read_text()
    assert registry["password"] not in text, "no credentials in YAML"
    images = service(config_dir)
    report = images.build(envs=["six"], configs=["pushed"])
    assert report.ok, report.failed
    record = images.ledger.pair("six", "pushed").current
    assert record is not None
    assert record.image.startswith(f"{registry['url']}/dss-code-envs@sha256:"), "runs by digest"
    docker_client.images.remove(record.image, force=True)  # the worker must pull it back from the registry
    docker_client.images.remove(f"{registry['url']}/{record.tag}", force=True)
    assert run_recipe(config_dir, "six", "pushed", "six", "six")["version"] == "1.16.0"


def test_a_kubernetes_spark_config_gets_the_env_image_pushed_by_digest(
    config_dir, registry, monkeypatch, capsys
):
    """A spark config named in build_for is a target: built on the local daemon from the spark config's
    base image, pushed to its registry and recorded by digest (its own base here: nothing can be pulled)."""
    from dss_airflow.cli import main

    login = {"login": registry["login"], "password": registry["password"]}
    connection = {"conn_type": "docker", "host": registry["url"], **login}
    monkeypatch.setenv("AIRFLOW_CONN_DSS_TEST_REGISTRY", json.dumps(connection))
    spark = f"""
        spark_configs:
          k8s-spark:
            type: kubernetes
            base_image: base
            registry: {{url: "{registry["url"]}", connection_id: dss_test_registry}}
        code_envs:
          sparky: {{packages: ["six==1.16.0"], build_for: [k8s-spark]}}
        """
    write_config(config_dir.path, {"spark.yaml": spark})
    images = service(config_dir)
    assert [(str(i.target), i.action) for i in images.planner.plan(envs=["sparky"])] == [
        ("sparky/k8s-spark", "build")
    ]
    report = images.build(envs=["sparky"])
    assert report.ok, report.failed
    assert report.switched == [Target("sparky", "k8s-spark")]
    record = images.ledger.pair("sparky", "k8s-spark").current
    assert record is not None
    assert record.image.startswith(f"{registry['url']}/dss-code-envs@sha256:"), "runs by digest"
    assert [i.action for i in service(config_dir).planner.plan(envs=["sparky"])] == ["up to date"]
    assert main(["images", "status", "sparky", "--config-dir", str(config_dir)]) == 0
    assert f"sparky/k8s-spark: ok; current {record.image}" in capsys.readouterr().out


def test_base_image_from_an_upstream_image_with_fragments(tmp_path, base_image, docker_client):
    """`from:` builds a Dockerfile on an upstream image (here our own base: nothing can be pulled here)."""
    from dss_airflow.images.base import build_base_image

    tag = f"dss-test-corporate:{uuid.uuid4().hex[:8]}"
    (tmp_path / "append.Dockerfile").write_text("ENV CORPORATE_PROXY_READY=1\n")
    write_config(
        tmp_path,
        {
            "c.yaml": f"""
base_images:
  corporate:
    image: {tag}
    from: {base_image}
    dockerfile_append: append.Dockerfile
"""
        },
    )
    catalog = load_catalog(tmp_path)
    events: list[tuple[str, str]] = []
    try:
        first = build_base_image(
            catalog, "corporate", progress=lambda event, subject, _: events.append((event, subject))
        )
        again = build_base_image(
            catalog, "corporate", progress=lambda event, subject, _: events.append((event, subject))
        )
        assert first == again and ("cached", tag) in events, "the second build is a cache hit"
        output = docker_client.containers.run(
            tag, ["sh", "-c", "id -u; echo $CORPORATE_PROXY_READY"], remove=True
        )
        assert output.decode().split() == ["1000", "1"], "non-root user baked in, fragment applied"
    finally:
        docker_client.images.remove(tag, force=True)


def test_cli_plan_and_status(config_dir, capsys):
    from dss_airflow.cli import main

    assert main(["images", "plan", "--config-dir", str(config_dir)]) == 0
    out = capsys.readouterr().out
    assert "     build  six/d1  (never built)" in out and "3 build, 0 up to date, 0 blocked" in out
    assert main(["images", "build", "six", "--config", "d1", "--quiet", "--config-dir", str(config_dir)]) == 0
    assert "switched 1" in capsys.readouterr().out
    assert main(["images", "status", "six", "--config-dir", str(config_dir)]) == 0
    assert "six/d1: ok; current dss-code-envs:six-" in capsys.readouterr().out


def test_incremental_rebuild_equals_a_full_build(config_dir, docker_client):
    """After a package-list change the image is the previous one plus one small layer, with the same
    packages as a full build: removed packages are gone, changed ones updated, bytecode compiled."""
    env = f"inc-{uuid.uuid4().hex[:8]}"  # fresh name: images of earlier runs on this engine are not reused
    config_dir.write(envs=f'  {env}: {{packages: ["six==1.16.0", "attrs==25.1.0"], build_for: [d1]}}')
    assert service(config_dir).build(envs=[env]).ok
    first = service(config_dir).ledger.pair(env, "d1").current
    config_dir.write(envs=f'  {env}: {{packages: ["attrs==25.3.0"], build_for: [d1]}}')
    images = service(config_dir)
    assert images.build(envs=[env]).ok
    second = images.ledger.pair(env, "d1").current
    assert first is not None and second is not None
    labels = docker_client.images.get(second.tag).labels
    assert (labels["dss_airflow.increments"], labels["dss_airflow.parent"]) == ("1", first.tag)
    layers = len(docker_client.images.get(second.tag).history())
    assert layers == len(docker_client.images.get(first.tag).history()) + 1, "one layer on top"

    def freeze(tag: str) -> str:
        return docker_client.containers.run(
            tag, ["/opt/dss/env/bin/python", "-m", "pip", "freeze"], remove=True
        ).decode()

    incremental = freeze(second.tag)
    assert "attrs==25.3.0" in incremental and "six" not in incremental
    compiled = docker_client.containers.run(
        second.tag,
        ["sh", "-c", "ls /opt/dss/env/lib/python3.11/site-packages/attr/__pycache__ | head -1"],
        remove=True,
    )
    assert compiled.decode().strip().endswith(".pyc"), "bytecode is in the image: tasks never recompile"
    full = images.build(envs=[env], force=True)  # a full build of the same lock, for comparison
    assert full.ok and full.built == [second.tag]
    assert docker_client.images.get(second.tag).labels["dss_airflow.increments"] == "0"
    assert freeze(second.tag) == incremental


def test_concurrent_rebuilds_take_turns_and_tasks_keep_the_current_image(config_dir):
    """Two builders of one env never build at once; while one builds, lookups return the old image."""
    import threading
    import time

    from dss_airflow.config.resolve import resolve_execution
    from dss_airflow.images.lookup import image_for

    env = f"slow-{uuid.uuid4().hex[:6]}"
    root = config_dir.path
    (root / "init.sh").write_text("echo v1 > version.txt\n")
    resources = "{mode: init_script, path: init.sh}"
    envs = f'  {env}: {{packages: ["six==1.16.0"], build_for: [d1], resources: {resources}}}'
    config_dir.write(envs=envs)
    assert service(config_dir).build(envs=[env]).ok
    catalog = load_catalog(root)
    resolved = resolve_execution(catalog, project="p", execution_config="d1", code_env=env)
    old = image_for(catalog, resolved)

    (root / "init.sh").write_text("sleep 3; echo v2 > version.txt\n")  # a slow build step
    config_dir.write(envs=envs)
    events: list[tuple[float, str]] = []
    lock = threading.Lock()
    seen_during_build: list[str] = []

    def record(event: str, subject: str, message: str) -> None:
        with lock:
            events.append((time.monotonic(), event))
        if event == "building":  # a task starting now must get the current image, not the one being built
            seen_during_build.append(image_for(load_catalog(root), resolved).image)

    def rebuild() -> None:
        ImageService(load_catalog(root), progress=record).build(envs=[env], force=True)

    threads = [threading.Thread(target=rebuild, name=f"builder-{i}") for i in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=300)
    building = sorted(t for t, event in events if event == "building")
    built = sorted(t for t, event in events if event == "built")
    assert len(building) == 2 and len(built) == 2
    spans = list(zip(building, built, strict=True))
    assert spans[0][1] <= spans[1][0], "the second build started only after the first finished"
    assert seen_during_build[0] == old.image
    new = image_for(load_catalog(root), resolved)
    assert new.image != old.image


def test_a_build_killed_with_sigkill_leaves_a_container_that_gc_removes(config_dir, docker_client):
    """The builder process dies (OOM killer, node loss) mid-build: its builder container keeps running,
    labelled with the dead owner; `dss-airflow gc` removes it and the pair's state is untouched."""
    import os
    import signal
    import subprocess
    import sys
    import time

    (config_dir.path / "slow.sh").write_text("sleep 300\n")
    config_dir.write(envs="  slow: {build_for: [d1], resources: {mode: init_script, path: slow.sh}}")
    builders = {"label": ["dss_airflow.kind=builder", "dss_airflow.code_env=slow"]}
    build = subprocess.Popen(
        [sys.executable, "-m", "dss_airflow.cli", "images", "build", "slow", "--config-dir", str(config_dir)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        for _ in range(600):
            if docker_client.containers.list(filters=builders):
                break
            assert build.poll() is None, "the build ended before its builder started"
            time.sleep(0.1)
        os.kill(build.pid, signal.SIGKILL)
        build.wait(timeout=10)
        (orphan,) = docker_client.containers.list(filters=builders)
        assert orphan.status == "running", "nothing stops a dead builder's container but a sweep"
        swept = subprocess.run(
            [sys.executable, "-m", "dss_airflow.cli", "gc", "--config-dir", str(config_dir)],
            capture_output=True, text=True, check=True,
        )  # fmt: skip
        assert orphan.name in swept.stdout + swept.stderr, swept
        assert docker_client.containers.list(all=True, filters=builders) == []
        assert service(config_dir).ledger.pair("slow", "d1").current is None
    finally:
        if build.poll() is None:
            build.kill()
        for container in docker_client.containers.list(all=True, filters=builders):
            container.remove(force=True)
