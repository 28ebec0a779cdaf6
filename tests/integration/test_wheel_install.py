"""The wheel built from this checkout is a working provider: it carries the runtime files the recipes,
models and smoke tests run, installs with the locked versions into a fresh virtualenv, and runs a recipe
from there (from the installed package, not from this checkout).

The install reuses the uv cache that scripts/bootstrap.sh filled, so it downloads nothing the lock holds.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import zipfile
from pathlib import Path

import pytest

from dss_airflow.runtime import runtime_files
from tests.helpers import BASE_CONFIG, make_project, write_config

pytestmark = pytest.mark.wheel

ROOT = Path(__file__).resolve().parents[2]

# Run by the fresh virtualenv's python (-I: neither this checkout nor PYTHONPATH on its path): one recipe
# task executed as the tests run operators, its XCom and where dss_airflow came from written to argv[3].
RUN_RECIPE = """
import importlib.util, json, sys

spec = importlib.util.spec_from_file_location("test_helpers", sys.argv[1])
helpers = importlib.util.module_from_spec(spec)
spec.loader.exec_module(helpers)

from airflow.sdk.bases.operator import ExecutorSafeguard

ExecutorSafeguard.test_mode = True  # execute() called directly, as in tests/conftest.py

import dss_airflow
from dss_airflow import DSSContainerRecipeOperator

operator = DSSContainerRecipeOperator(
    task_id="hello",
    recipe="recipes/hello.py",
    execution_config="local",
    outputs=["out"],
    recipe_params={"name": "wheel"},
    config_dir=sys.argv[2],
)
xcom = operator.execute(helpers.fake_context())
with open(sys.argv[3], "w") as report:
    json.dump({"dss_airflow": dss_airflow.__file__, "xcom": xcom}, report)
"""

HELLO_RECIPE = """
import dss_recipe

name = dss_recipe.params()["name"]
(dss_recipe.output_dir("out") / "hello.txt").write_text("hello " + name + "\\n")
dss_recipe.set_result({"name": name, "runtime": dss_recipe.__file__})
"""


def uv(*args: str | Path, cwd: Path = ROOT) -> None:
    from uv import find_uv_bin

    completed = subprocess.run(
        [str(find_uv_bin()), *map(str, args)], cwd=cwd, capture_output=True, text=True, check=False
    )
    assert completed.returncode == 0, f"uv {' '.join(map(str, args))}:\n{completed.stderr[-3000:]}"


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The wheel as a release would build it: an sdist first, the wheel from the unpacked sdist (so a file
    the sdist forgets is missing from the wheel too, and nothing stale in build/ slips in)."""
    dist = tmp_path_factory.mktemp("dist")
    uv("build", "--quiet", "--out-dir", dist, ROOT)
    (built,) = dist.glob("dss_airflow-*.whl")
    return built


def test_wheel_carries_the_package_and_its_runtime_files(wheel):
    names = set(zipfile.ZipFile(wheel).namelist())
    runtime = {f"dss_airflow/runtime/{relative}" for relative in runtime_files()}
    assert {
        "dss_airflow/runtime/dss_recipe.R",
        "dss_airflow/runtime/smoke.py",
        "dss_airflow/runtime/model/train.py",
    } <= runtime, "sanity: runtime_files() lists the R runtime, the smoke test and the model package"
    sources = {
        path.relative_to(ROOT).as_posix()
        for path in (ROOT / "dss_airflow").rglob("*.py")
        if "__pycache__" not in path.parts
    }
    assert (runtime | sources | {"dss_airflow/py.typed"}) - names == set()
    entry_points = next(name for name in names if name.endswith(".dist-info/entry_points.txt"))
    declared = zipfile.ZipFile(wheel).read(entry_points).decode()
    assert "provider_info = dss_airflow:get_provider_info" in declared


def test_a_recipe_runs_from_the_installed_wheel(wheel, tmp_path):
    """Installed as README's "from the wheel built here" says: the lock exported as constraints."""
    venv = tmp_path / "venv"
    constraints = tmp_path / "constraints.txt"
    uv("export", "--frozen", "--no-emit-project", "--no-hashes", "--quiet", "--output-file", constraints)
    uv("venv", "--quiet", "--python", sys.executable, venv)
    uv("pip", "install", "--quiet", "--python", venv / "bin" / "python", "--constraint", constraints, wheel)

    config_dir = write_config(tmp_path / "config", {"dss.yaml": BASE_CONFIG})
    make_project(config_dir, {"recipes/hello.py": HELLO_RECIPE})
    script = tmp_path / "run_recipe.py"
    script.write_text(textwrap.dedent(RUN_RECIPE), encoding="utf-8")
    report = tmp_path / "report.json"
    completed = subprocess.run(
        [venv / "bin" / "python", "-I", script, ROOT / "tests" / "helpers.py", config_dir, report],
        cwd=tmp_path,
        env={**_environment(), "AIRFLOW_HOME": str(tmp_path / "airflow")},
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert completed.returncode == 0, completed.stdout[-3000:] + completed.stderr[-3000:]

    ran = json.loads(report.read_text(encoding="utf-8"))
    site_packages = venv / "lib" / "python3.11" / "site-packages"
    assert Path(ran["dss_airflow"]).is_relative_to(site_packages), "the wheel, not this checkout"
    assert Path(ran["xcom"]["result"]["runtime"]).is_relative_to(site_packages / "dss_airflow" / "runtime")
    assert ran["xcom"]["result"]["name"] == "wheel"
    assert (config_dir / "data" / "out" / "hello.txt").read_text(encoding="utf-8") == "hello wheel\n"


def _environment() -> dict[str, str]:
    """This process's variables (the test's DSS_AIRFLOW_* cache and state) without Airflow's own."""
    return {name: value for name, value in os.environ.items() if not name.startswith("AIRFLOW")}
