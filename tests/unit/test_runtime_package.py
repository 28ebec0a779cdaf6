"""The runtime as code envs load it: runner.py registers its own directory as the package dss_runtime, so
the runtime's modules import each other relatively wherever the directory lives and whatever it is called,
with no dss_airflow installed (``python -S``, no PYTHON* variables: the standard library only)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

from dss_airflow.runtime import RUNTIME_ROOT, dss_notebook

PROBE = '''
"""A builtin of the copied runtime: run as a module of dss_runtime, so relative imports work."""
import sys

from . import dss_recipe
from .errors import ModelInputError

dss_recipe.set_result({
    "package": __package__,
    "errors_module": ModelInputError.__module__,
    "one_dss_recipe": sys.modules["dss_recipe"] is dss_recipe,
})
'''

PROJECT_RECIPE = """
import os
import sys

import dss_recipe
import dss_runtime.errors
import errors  # the project's lib/errors.py, never the runtime's errors.py

runtime_dir = os.path.dirname(dss_runtime.errors.__file__)
dss_recipe.set_result({
    "one_dss_recipe": dss_recipe is sys.modules["dss_runtime.dss_recipe"],
    "runtime_dir": runtime_dir,
    "project_errors": errors.ORIGIN,
    "dss_airflow_loaded": any(name.split(".")[0] == "dss_airflow" for name in sys.modules),
    "runtime_on_sys_path": [i - len(sys.path) for i, entry in enumerate(sys.path) if entry == runtime_dir],
})
"""


def copied_runtime(tmp_path: Path) -> Path:
    """The runtime under a directory name that is no package's (it cannot be dss_airflow.runtime)."""
    copy = tmp_path / "opt" / "somewhere-else"
    shutil.copytree(RUNTIME_ROOT, copy, ignore=shutil.ignore_patterns("__pycache__"))
    (copy / "probe.py").write_text(PROBE)
    return copy


def run_in_bare_env(tmp_path: Path, runtime: Path, recipe: Path, **context_extra) -> dict:
    """``python -S runner.py`` (no site-packages, the runtime first on sys.path as for any script);
    returns the result file."""
    context = {
        "recipe": str(recipe),
        "recipe_name": recipe.name,
        "language": "python",
        "inputs": {},
        "outputs": {},
        "params": {},
        "python_path": [],
        "workdir": str(tmp_path / "run" / "cwd"),
        "result_file": str(tmp_path / "run" / "return.json"),
        **context_extra,
    }
    context_file = tmp_path / "context.json"
    context_file.write_text(json.dumps(context))
    completed = subprocess.run(
        [sys.executable, "-S", str(runtime / "runner.py"), str(context_file)],
        env={name: value for name, value in os.environ.items() if not name.startswith("PYTHON")},
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
        cwd=tmp_path,
    )
    assert completed.returncode in (0, 1), completed.stderr
    result: dict = json.loads(Path(context["result_file"]).read_text())
    return result


def test_a_builtin_imports_its_siblings_relatively_through_dss_runtime(tmp_path: Path):
    runtime = copied_runtime(tmp_path)

    result = run_in_bare_env(tmp_path, runtime, runtime / "probe.py")

    assert result["status"] == "success", result
    assert result["result"] == {
        "package": "dss_runtime",
        "errors_module": "dss_runtime.errors",
        "one_dss_recipe": True,
    }


def test_a_project_recipe_sees_one_dss_recipe_and_its_own_lib_first(tmp_path: Path):
    runtime = copied_runtime(tmp_path)
    lib = tmp_path / "project" / "lib"
    lib.mkdir(parents=True)
    (lib / "errors.py").write_text("ORIGIN = 'project'\n")
    recipe = tmp_path / "project" / "recipes" / "uses_runtime.py"
    recipe.parent.mkdir()
    recipe.write_text(PROJECT_RECIPE)

    result = run_in_bare_env(tmp_path, runtime, recipe, python_path=[str(lib)])

    assert result["status"] == "success", result
    assert result["result"] == {
        "one_dss_recipe": True,
        "runtime_dir": str(runtime),
        "project_errors": "project",
        "dss_airflow_loaded": False,
        "runtime_on_sys_path": [-1],  # once, last: it shadows no installed module
    }


def test_the_model_entry_point_loads_the_whole_engine_with_the_standard_library_only(tmp_path: Path):
    """<runtime>/dss_model.py, as the operator names it: every model module loads without sklearn or
    pandas (site-packages are off), and a bad action is a ModelInputError from dss_runtime.errors."""
    runtime = copied_runtime(tmp_path)

    result = run_in_bare_env(tmp_path, runtime, runtime / "dss_model.py", params={"action": "trian"})

    assert result["status"] == "failed"
    assert result["error"].startswith("ModelInputError: params: action 'trian' is not one of train, ")
    assert "Did you mean 'train'?" in result["error"]


def test_the_notebook_kernel_imports_dss_recipe_from_its_pythonpath(tmp_path: Path):
    """The kernel is not started by the runner: dss_recipe.py must import as a top-level module."""
    context = {"workdir": str(tmp_path / "run" / "cwd"), "python_path": [], "params": {}}
    dss_notebook._kernel_environment(context, {"parameters": {"x": 1}, "libraries": []})
    kernelspec = json.loads(
        (tmp_path / "run" / "jupyter" / "kernels" / "python3" / "kernel.json").read_text()
    )
    code = textwrap.dedent(
        """
        import json, sys
        import dss_recipe
        print(json.dumps({"params": dss_recipe.params(), "file": dss_recipe.__file__}))
        """
    )

    completed = subprocess.run(
        [sys.executable, "-S", "-c", code],
        env={**os.environ, **kernelspec["env"]},
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
        cwd=tmp_path,
    )

    seen = json.loads(completed.stdout)
    assert seen == {"params": {"x": 1}, "file": os.path.join(RUNTIME_ROOT, "dss_recipe.py")}
