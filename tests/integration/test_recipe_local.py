"""The local backend for real: a uv-built virtualenv with a package, cached, and the run-time checks."""

from __future__ import annotations

import os
import time

import pytest

from dss_airflow.backends.local import READY_MARKER, LocalBackend
from dss_airflow.errors import ExecutionError, PermissionDeniedError
from dss_airflow.operators.recipe import DSSContainerRecipeOperator
from tests.helpers import BASE_CONFIG, execute_in_background, fake_context, make_project, write_config


@pytest.fixture
def config_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("DSS_AIRFLOW_CACHE", str(tmp_path / "cache"))
    write_config(
        tmp_path,
        {"c.yaml": BASE_CONFIG, "six.yaml": "code_envs:\n  with-six:\n    packages: ['six==1.16.0']\n"},
    )
    make_project(
        tmp_path,
        {
            "recipes/six_version.py": "import six, sys, dss_recipe\n"
            "dss_recipe.set_result({'six': six.__version__, 'prefix': sys.prefix})\n",
            "recipes/sleeps.py": "import time\ntime.sleep(60)\n",
            "recipes/fails.py": "import dss_recipe\n"
            "(dss_recipe.output_dir('out') / 'partial.csv').write_text('x')\nraise SystemExit(3)\n",
        },
    )
    return tmp_path


def test_local_env_is_built_with_its_packages_and_reused(config_dir):
    op = DSSContainerRecipeOperator(
        task_id="t",
        recipe="recipes/six_version.py",
        code_env="with-six",
        execution_config="local",
        config_dir=str(config_dir),
    )
    first = op.execute(fake_context())
    assert first["result"]["six"] == "1.16.0"
    venvs = [p for p in (config_dir / "cache" / "venvs").glob("with-six-*") if p.is_dir()]
    assert len(venvs) == 1 and (venvs[0] / READY_MARKER).is_file()
    assert first["result"]["prefix"] == str(venvs[0])
    second = op.execute(fake_context(run_id="run2"))
    assert second["result"]["prefix"] == str(venvs[0]), "same package list, same virtualenv"


def test_local_failure_leaves_no_partial_output(config_dir):
    op = DSSContainerRecipeOperator(
        task_id="t",
        recipe="recipes/fails.py",
        execution_config="local",
        outputs=["out"],
        config_dir=str(config_dir),
    )
    with pytest.raises(
        ExecutionError,
        match=r"recipe recipes/fails.py failed on local \(local\): recipe called sys.exit\(3\)",
    ):
        op.execute(fake_context())
    assert list((config_dir / "data" / "out").rglob("*")) == []


def test_forbidden_config_is_refused_at_parse_time(config_dir):
    with pytest.raises(PermissionDeniedError, match="may not use execution config 'docker-restricted'"):
        DSSContainerRecipeOperator(
            task_id="t",
            recipe="recipes/sleeps.py",
            execution_config="docker-restricted",
            config_dir=str(config_dir),
        )


def test_forbidden_config_from_a_run_conf_is_refused_at_run_time(config_dir):
    op = DSSContainerRecipeOperator(
        task_id="t",
        recipe="recipes/sleeps.py",
        execution_config="{{ params.execution_config }}",
        config_dir=str(config_dir),
    )
    op.execution_config = "docker-restricted"  # what rendering the template with a UI run conf produces
    with pytest.raises(PermissionDeniedError, match="restricted to groups ml-team"):
        op.execute(fake_context())


def test_on_kill_stops_the_local_recipe_process_group(config_dir):
    op = DSSContainerRecipeOperator(
        task_id="t",
        recipe="recipes/sleeps.py",
        execution_config="local",
        outputs=["out"],
        config_dir=str(config_dir),
    )
    thread, errors = execute_in_background(op, fake_context())
    deadline = time.monotonic() + 60
    while not isinstance(op._backend, LocalBackend) or op._backend._process is None:
        assert time.monotonic() < deadline, "the recipe process never started"
        time.sleep(0.05)
    process = op._backend._process
    assert process is not None, "the recipe process started"
    op.on_kill()
    thread.join(timeout=30)
    assert not thread.is_alive()
    assert errors and isinstance(errors[0], ExecutionError)
    assert process.poll() is not None, "no orphan process"
    assert list((config_dir / "data" / "out").rglob("*")) == []


def test_an_r_recipe_runs_on_the_worker_with_the_r_runtime(config_dir):
    """R from Debian's packages on the worker (scripts/ensure-r.sh): the same context as a Python recipe."""
    import shutil

    if shutil.which("Rscript") is None:
        message = "no Rscript on this worker: run scripts/ensure-r.sh"
        pytest.fail(message) if os.environ.get("CI") == "true" else pytest.skip(message)
    make_project(
        config_dir,
        {
            "recipes/model.R": """
                p <- params()
                writeLines(sprintf("alpha=%s", p$alpha), file.path(output_dir("out"), "seen.txt"))
                set_result(list(alpha = p$alpha * 2, env = Sys.getenv("DSS_OUTPUT_OUT") == output_dir("out")))
            """,
            "recipes/broken.R": """
                writeLines("x", file.path(output_dir("out"), "partial.txt"))
                undefined_fn(1)
            """,
        },
    )

    def run(recipe: str) -> dict:
        return DSSContainerRecipeOperator(
            task_id="r",
            recipe=recipe,
            execution_config="local",
            outputs=["out"],
            recipe_params={"alpha": 0.5},
            config_dir=str(config_dir),
        ).execute(fake_context())

    result = run("recipes/model.R")
    assert result["result"] == {"alpha": 1.0, "env": True}
    assert (config_dir / "data" / "out" / "seen.txt").read_text() == "alpha=0.5\n"
    assert result["outputs"] == {"out": [str(config_dir / "data" / "out" / "seen.txt")]}
    with pytest.raises(ExecutionError, match='R error: could not find function "undefined_fn"'):
        run("recipes/broken.R")
    assert not (config_dir / "data" / "out" / "partial.txt").exists(), "nothing promoted after an R error"
