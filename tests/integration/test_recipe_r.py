"""R recipes for real: a base image with ``r: true`` (R and jsonlite from Debian's packages, CRAN being out
of reach) and the R runtime dss_recipe.R, run through the Docker backend like a Python recipe."""

from __future__ import annotations

import contextlib
import hashlib
import io
import ipaddress
import json
import socket
import subprocess
import sys
import tarfile
import time
import urllib.request
import uuid
from typing import TYPE_CHECKING

import pytest

from dss_airflow.errors import ExecutionError
from dss_airflow.operators.recipe import DSSContainerRecipeOperator
from tests.helpers import fake_context, leftover_staging, make_project, notebook_json, write_config

if TYPE_CHECKING:
    from pathlib import Path

pytestmark = pytest.mark.docker

R_IMAGE = "dss-airflow-test-r:bookworm"

CONFIG = """
    defaults: {project: demo, code_env: r-plain, data_dir: data}
    base_images:
      base-r:
        image: dss-airflow-test-r:bookworm
        from: BASE
        r: true
    execution_configs:
      docker-r: {type: docker, base_image: base-r, resources: {memory: 512m, cpus: 1}}
    code_envs:
      r-plain: {}
      r-dt: {r_packages: [data.table]}
      r-bad: {r_packages: [jsonlite, notapackage]}
      r-nb: {notebook: true, r_packages: [jsonlite]}
    managed_folders:
      raw: {path: raw}
      out: {path: out}
      reports: {path: reports}
      scratch: {path: scratch}
    projects:
      demo: {root: project}
"""


RECIPES = {
    "notebooks/double.ipynb": notebook_json(
        "value <- x * 2\ncat(sprintf('%s: %d\\n', label, value))",
        "writeLines(as.character(value), file.path(output_dir('reports'), 'value.txt'))\n"
        "set_result(list(value = value, uid = as.integer(system('id -u', intern = TRUE))))",
        parameters="x <- 1\nlabel <- 'default'",
        language="R",
    ),
    "recipes/summarise.R": """
        orders <- jsonlite::fromJSON(file.path(input_path("raw"), "orders.json"))
        p <- params()
        big <- orders[orders$amount >= p$threshold, ]
        jsonlite::write_json(big, file.path(output_dir("out"), "big.json"))
        set_result(list(rows = nrow(big), total = sum(big$amount), r = R.version$major,
                        uid = as.integer(system("id -u", intern = TRUE))))
    """,
    "recipes/dt.R": """
        library(data.table)
        dt <- data.table(g = c("a", "b", "a"), x = c(1, 2, 3))
        set_result(list(sums = as.list(dt[, .(s = sum(x)), by = g][order(g)]$s),
                        version = as.character(packageVersion("data.table"))))
    """,
    "recipes/fails.R": """
        writeLines("half a file", file.path(output_dir("out"), "partial.csv"))
        check_row <- function(row) if (row > 41) stop(sprintf("bad row %d", row))
        for (row in 40:43) check_row(row)
    """,
}


@pytest.fixture(scope="module")
def r_config(tmp_path_factory, base_image):
    """The config, and the R base image built once from the air-gapped base (Debian's r-base-core)."""
    from dss_airflow.config.loader import load_catalog
    from dss_airflow.images.base import build_base_image

    root = tmp_path_factory.mktemp("r-recipes")
    write_config(root, {"c.yaml": CONFIG.replace("BASE", base_image)})
    make_project(root, RECIPES)
    (root / "data" / "raw").mkdir(parents=True)
    orders = [{"id": 1, "amount": 5}, {"id": 2, "amount": 50}, {"id": 3, "amount": 70}]
    (root / "data" / "raw" / "orders.json").write_text(json.dumps(orders))
    build_base_image(load_catalog(root), "base-r", progress=lambda *args: None)
    return root


def operator(config_dir, recipe: str, **kwargs) -> DSSContainerRecipeOperator:
    return DSSContainerRecipeOperator(
        task_id=recipe.split("/")[-1].removesuffix(".R"),
        recipe=recipe,
        execution_config="docker-r",
        config_dir=str(config_dir),
        **kwargs,
    )


def test_an_r_recipe_reads_an_input_writes_an_output_and_returns_a_result(r_config, docker_client):
    dag_id = f"dag-{uuid.uuid4().hex[:8]}"
    op = operator(
        r_config, "recipes/summarise.R", inputs=["raw"], outputs=["out"], recipe_params={"threshold": 10}
    )
    result = op.execute(fake_context(dag_id=dag_id))
    assert result["result"] == {"rows": 2, "total": 120, "r": "4", "uid": 1000}
    assert result["image"] == R_IMAGE
    written = json.loads((r_config / "data" / "out" / "big.json").read_text())
    assert [row["id"] for row in written] == [2, 3]
    assert result["outputs"] == {"out": [str(r_config / "data" / "out" / "big.json")]}
    assert leftover_staging(r_config / "data") == []
    assert docker_client.containers.list(all=True, filters={"label": f"dss_airflow.dag_id={dag_id}"}) == []


def test_a_failing_r_recipe_fails_with_its_r_error_and_writes_nothing(r_config, docker_client):
    dag_id = f"dag-{uuid.uuid4().hex[:8]}"
    before = (
        sorted(p.name for p in (r_config / "data" / "out").glob("*"))
        if (r_config / "data" / "out").exists()
        else []
    )
    with pytest.raises(ExecutionError) as info:
        operator(r_config, "recipes/fails.R", outputs=["out"]).execute(fake_context(dag_id=dag_id))
    message = str(info.value)
    assert "R error: bad row 42" in message and "at fails.R:3" in message, message
    logs = "\n".join(info.value.logs)
    assert "R traceback (outermost first):" in logs and "check_row(row) at fails.R:4" in logs, logs
    assert "Traceback (most recent call last)" not in logs, "no Python traceback of the runner"
    after = (
        sorted(p.name for p in (r_config / "data" / "out").glob("*"))
        if (r_config / "data" / "out").exists()
        else []
    )
    assert after == before and "partial.csv" not in after, "a failed R recipe promotes nothing"
    assert leftover_staging(r_config / "data") == []
    assert docker_client.containers.list(all=True, filters={"label": f"dss_airflow.dag_id={dag_id}"}) == []


def test_r_packages_are_locked_installed_pinned_and_an_unknown_one_fails_before_building(
    r_config, docker_client
):
    """The R lock: versions resolved in a container of the base image, stored, pinned in the image and in
    its build hash; a pin the distribution lost fails the build and keeps the image; --refresh mends it."""
    from dss_airflow.config.loader import load_catalog
    from dss_airflow.images.plan import Target
    from dss_airflow.images.rlock import lock_key, r_names
    from dss_airflow.images.service import ImageService

    images = ImageService(load_catalog(r_config))
    report = images.build(envs=["r-dt", "r-bad"])
    error = report.failed[Target("r-bad", "docker-r")]
    assert "R packages not in the distribution: notapackage (r-cran-notapackage)" in error, error
    bad = images.ledger.pair("r-bad", "docker-r")
    assert bad.current is None and bad.last_log is None, "found by the lock, before any builder ran"
    assert Target("r-dt", "docker-r") not in report.failed, report.failed
    result = operator(r_config, "recipes/dt.R", code_env="r-dt").execute(fake_context(dag_id="dt"))
    assert result["result"]["sums"] == [4, 2] and result["result"]["version"].startswith("1.")
    current = images.ledger.pair("r-dt", "docker-r").current
    assert current is not None and result["image"] == current.image

    base_digest = current.base_digest
    key = lock_key(r_names(["data.table"]), base_digest=base_digest, cran_url=None)
    lock = images.ledger.lock_text(key)
    assert lock is not None and current.r_lock_sha256 == hashlib.sha256(lock.encode()).hexdigest()
    pins = dict(line.split("=", 1) for line in lock.splitlines())
    assert set(pins) >= {"r-cran-data.table", "r-cran-jsonlite"}, lock
    in_image = docker_client.containers.run(
        current.image,
        ["sh", "-c", "cat /opt/dss/r-packages.lock; dpkg-query -W r-cran-data.table"],
        remove=True,
    ).decode()
    assert in_image.startswith(lock), "the image carries its lock"
    assert f"r-cran-data.table\t{pins['r-cran-data.table']}" in in_image, "and has exactly that version"

    # The distribution moved on (a pinned version is gone): the build fails, the image stays current.
    images.ledger.store_lock(key, lock.replace(pins["r-cran-data.table"], "0.0-gone"))
    drifted = images.build(envs=["r-dt"])
    error = drifted.failed[Target("r-dt", "docker-r")]
    assert "images build --refresh" in error and "0.0-gone" in error, error
    assert images.ledger.pair("r-dt", "docker-r").current == current
    (planned,) = images.planner.plan(envs=["r-dt"])
    assert (planned.action, planned.reasons) == ("build", ["resolved R packages changed"])
    mended = images.build(envs=["r-dt"], refresh=True)
    assert mended.up_to_date == [Target("r-dt", "docker-r")], "re-resolved to the very same versions"
    assert images.ledger.lock_text(key) == lock


def test_an_r_notebook_runs_in_its_container_with_r_parameters(r_config, docker_client):
    from dss_airflow.config.loader import load_catalog
    from dss_airflow.images.service import ImageService
    from dss_airflow.operators.notebook import DSSNotebookOperator

    assert ImageService(load_catalog(r_config)).build(envs=["r-nb"]).ok
    dag_id = f"dag-{uuid.uuid4().hex[:8]}"
    outcome = DSSNotebookOperator(
        task_id="double",
        notebook="notebooks/double.ipynb",
        code_env="r-nb",
        execution_config="docker-r",
        output="reports",
        parameters={"x": 21, "label": "answer"},
        config_dir=str(r_config),
    ).execute(fake_context(dag_id=dag_id))
    assert outcome["result"] == {"value": 42, "uid": 1000}
    reports = r_config / "data" / "reports"
    cells = json.loads((reports / "double.ipynb").read_text())["cells"]
    (injected,) = [cell for cell in cells if "injected-parameters" in cell["metadata"].get("tags", [])]
    assert "x = 21" in "".join(injected["source"]), "papermill injects R assignments"
    outputs = "".join("".join(o.get("text", "")) for cell in cells for o in cell.get("outputs", []))
    assert "answer: 42" in outputs
    assert (reports / "value.txt").read_text().strip() == "42"
    assert docker_client.containers.list(all=True, filters={"label": f"dss_airflow.dag_id={dag_id}"}) == []


# ----------------------------------------------------------------------------------- a CRAN-like mirror
def _r_source_package(name: str, version: str, body: str, imports: tuple[str, ...] = ()) -> bytes:
    """A minimal R source package (what `R CMD build` makes, without the extras R does not need)."""
    description = (
        f"Package: {name}\nVersion: {version}\nTitle: Toy\nDescription: A toy package for tests.\n"
        f"License: MIT\nAuthor: dss\nMaintainer: dss <dss@example.invalid>\nNeedsCompilation: no\n"
        + (f"Imports: {', '.join(imports)}\n" if imports else "")
    )
    files = {"DESCRIPTION": description, "NAMESPACE": f"export({name})\n", f"R/{name}.R": body}
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        for path, text in files.items():
            data = text.encode()
            info = tarfile.TarInfo(f"{name}/{path}")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def _publish(repo: Path, name: str, version: str, body: str, imports: tuple[str, ...] = ()) -> None:
    """Put a version on the mirror as CRAN does: the previous one moves to Archive/<name>/."""
    contrib = repo / "src" / "contrib"
    (contrib / "Archive" / name).mkdir(parents=True, exist_ok=True)
    for old in contrib.glob(f"{name}_*.tar.gz"):
        old.rename(contrib / "Archive" / name / old.name)
    (contrib / f"{name}_{version}.tar.gz").write_bytes(_r_source_package(name, version, body, imports))
    entries = []
    for tarball in sorted(contrib.glob("*.tar.gz")):
        package, _, rest = tarball.name.partition("_")
        deps = "Imports: dsstoyb, jsonlite\n" if package == "dsstoya" else ""
        entries.append(
            f"Package: {package}\nVersion: {rest.removesuffix('.tar.gz')}\n{deps}NeedsCompilation: no\n"
        )
    (contrib / "PACKAGES").write_text("\n".join(entries))


@pytest.fixture(scope="module")
def cran_mirror(tmp_path_factory, docker_client):
    """A CRAN-like mirror (src/contrib/PACKAGES, tarballs, Archive/) over HTTP on the Docker bridge's
    gateway, where build containers reach it; stopped by pid."""
    subnet = docker_client.networks.get("bridge").attrs["IPAM"]["Config"][0]
    gateway = subnet.get("Gateway") or str(ipaddress.ip_network(subnet["Subnet"])[1])
    repo = tmp_path_factory.mktemp("cran")
    _publish(repo, "dsstoyb", "0.1.0", 'dsstoyb <- function() "b 0.1.0"\n')
    _publish(
        repo,
        "dsstoya",
        "1.0.0",
        'dsstoya <- function() paste("a uses", dsstoyb::dsstoyb())\n',
        ("dsstoyb", "jsonlite"),
    )
    with socket.socket() as probe:
        probe.bind((gateway, 0))
        port = probe.getsockname()[1]
    server = subprocess.Popen(
        [sys.executable, "-m", "http.server", str(port), "--bind", gateway, "--directory", str(repo)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        url = f"http://{gateway}:{port}"
        for _ in range(50):
            with contextlib.suppress(OSError), urllib.request.urlopen(f"{url}/src/contrib/PACKAGES"):
                break
            time.sleep(0.1)
        yield repo, url
    finally:
        server.terminate()
        server.wait(timeout=10)


def test_r_packages_from_a_cran_mirror_are_locked_and_installed_at_the_locked_version(
    tmp_path, base_image, cran_mirror
):
    """The cran_url route for real: the lock is the Imports closure (installed jsonlite as it is), the
    build installs the locked versions, also once the mirror moved on (from its Archive/), and --refresh
    takes the new version with a new build hash."""
    from dss_airflow.config.loader import load_catalog
    from dss_airflow.images.base import build_base_image
    from dss_airflow.images.plan import Target
    from dss_airflow.images.service import ImageService

    repo, url = cran_mirror
    config = CONFIG.replace("BASE", base_image).replace("r: true", f"r: true\n        cran_url: {url}")
    config = config.replace("r-plain: {}", "r-plain: {}\n      r-toy: {r_packages: [dsstoya]}")
    write_config(tmp_path, {"c.yaml": config})
    make_project(
        tmp_path,
        {
            "recipes/toy.R": "set_result(list(says = dsstoya::dsstoya(),"
            ' b = as.character(packageVersion("dsstoyb"))))\n'
        },
    )
    build_base_image(load_catalog(tmp_path), "base-r", progress=lambda *args: None)  # cached: same as base-r
    images = ImageService(load_catalog(tmp_path))
    target = Target("r-toy", "docker-r")

    def run_toy() -> dict:
        op = operator(tmp_path, "recipes/toy.R", code_env="r-toy")
        return op.execute(fake_context(dag_id=f"toy-{uuid.uuid4().hex[:6]}"))["result"]

    assert images.build(envs=["r-toy"]).ok
    first = images.ledger.pair("r-toy", "docker-r").current
    lock = images.planner.lock_of(target).r_text
    assert lock.splitlines()[0] == "dsstoyb==0.1.0" and lock.splitlines()[-1] == "dsstoya==1.0.0", lock
    assert any(line.startswith("jsonlite==1.") for line in lock.splitlines()), (
        "the base's jsonlite, as installed"
    )
    assert run_toy() == {"says": "a uses b 0.1.0", "b": "0.1.0"}

    _publish(repo, "dsstoyb", "0.2.0", 'dsstoyb <- function() "b 0.2.0"\n')
    rebuilt = images.build(envs=["r-toy"], force=True)
    assert rebuilt.ok, rebuilt.failed
    assert run_toy()["b"] == "0.1.0", "the locked version, from the mirror's Archive/"

    refreshed = images.build(envs=["r-toy"], refresh=True)
    assert refreshed.switched == [target], refreshed
    current = images.ledger.pair("r-toy", "docker-r").current
    assert current is not None and first is not None
    assert current.build_hash != first.build_hash and current.r_lock_sha256 != first.r_lock_sha256
    assert run_toy() == {"says": "a uses b 0.2.0", "b": "0.2.0"}


def test_an_r_kernel_runs_in_its_container_with_the_r_runtime_and_leaves_nothing(
    r_config, docker_client, tmp_path, monkeypatch
):
    """`notebook kernels install` writes an R kernelspec beside the Python one for an env with R packages;
    a jupyter_client session runs R in the image, non-root, writing to a managed folder through
    dss_recipe.R's output_dir(); shutting the kernel down removes its container."""
    from jupyter_client.manager import start_new_kernel

    from dss_airflow.config.loader import load_catalog
    from dss_airflow.images.service import ImageService
    from dss_airflow.notebook_kernels import install
    from dss_airflow.spec import KERNEL_LABEL

    catalog = load_catalog(r_config)
    assert ImageService(catalog).build(envs=["r-nb"]).ok
    # A folder the launcher creates is handed to the container's user; one the worker's user owns already
    # would be read-only to the kernel (README, Notebooks).
    names = install(catalog, folders=["scratch"], prefix=str(tmp_path))
    assert names == ["dss-demo-r-nb-docker-r", "dss-demo-r-nb-docker-r-r"], names
    monkeypatch.setenv("JUPYTER_PATH", str(tmp_path / "share" / "jupyter"))
    manager, client = start_new_kernel(kernel_name="dss-demo-r-nb-docker-r-r", startup_timeout=120)
    try:
        outputs: list[str] = []
        code = (
            'writeLines("written by R", file.path(output_dir("scratch"), "from-r-kernel.txt"))\n'
            'cat(R.version$major, Sys.getenv("DSS_CODE_ENV"), system("id -u", intern = TRUE))'
        )
        reply = client.execute_interactive(
            code,
            timeout=120,
            output_hook=lambda m: outputs.append(m["content"]["text"]) if m["msg_type"] == "stream" else None,
        )
        assert reply["content"]["status"] == "ok", reply["content"]
        major, env, uid = "".join(outputs).split()
        assert (major, env) == ("4", "r-nb") and int(uid) != 0
        assert (r_config / "data" / "scratch" / "from-r-kernel.txt").read_text() == "written by R\n"
    finally:
        client.stop_channels()
        manager.shutdown_kernel(now=False)
    deadline = time.monotonic() + 30
    while docker_client.containers.list(all=True, filters={"label": KERNEL_LABEL}):
        assert time.monotonic() < deadline, "the kernel's container outlived its shutdown"
        time.sleep(0.5)
