"""Runs one recipe inside a code env (container or local venv). Standard library only.

Usage: ``python runner.py CONTEXT_JSON``, or ``python runner.py -`` to read the context from the
``DSS_CONTEXT_JSON`` environment variable (Kubernetes pods). The context names the recipe, its language,
the input paths, the staging directories of its outputs, its params and where to write the result. The runner:

* runs the recipe in a fresh, empty working directory and warns about any file the recipe leaves there
  (in a container that file is lost: outputs belong in managed folders);
* lists what the recipe wrote to each output staging directory;
* measures what the run used (``meter.py``: peak memory, CPU seconds, wall time, CPU throttling) and
  puts it in the result under ``resources``;
* writes a JSON result atomically (temp file + rename), ``status`` "success" or "failed".

The operator on the worker promotes staged outputs only after a success, so a failed run leaves no
partial file in a managed folder. When the worker cannot see the folders (Kubernetes PVCs), the context
has ``"promote": [[staging_dir, destination_dir], ...]`` and the runner itself moves every staged file
into place (``os.replace``) after a success, or only removes the staging directories after a failure.
With ``"print_result": true`` the result also ends stdout as one line (a Spark driver's result reaches the
worker through its log).

Run as a script, the runner first loads its own directory as the package ``dss_runtime``: the runtime's
modules import each other relatively (the same files are ``dss_airflow.runtime`` on the worker), and the
directory itself moves to the end of sys.path, so none of its files (errors.py, model/...) shadows a
project's or a code env's module of the same name.
"""

import importlib.util
import json
import os
import runpy
import shutil
import signal
import sys
import time
import traceback
from typing import Any, Dict, List, Optional

RESULT_VERSION = 1
RESULT_LINE_PREFIX = "[dss-airflow] result-json: "
PACKAGE = "dss_runtime"
RUNTIME_DIR = os.path.dirname(os.path.abspath(__file__))


def register_runtime_package() -> None:
    """Load this directory as the package ``dss_runtime`` (once per process)."""
    if PACKAGE in sys.modules:
        return
    spec = importlib.util.spec_from_file_location(
        PACKAGE, os.path.join(RUNTIME_DIR, "__init__.py"), submodule_search_locations=[RUNTIME_DIR]
    )
    if spec is None or spec.loader is None:
        raise ImportError("cannot load %s as the package %s" % (RUNTIME_DIR, PACKAGE))
    package = importlib.util.module_from_spec(spec)
    sys.modules[PACKAGE] = package
    spec.loader.exec_module(package)


def _runtime_dir_last() -> None:
    """A script's directory comes first on sys.path, where the runtime's files would shadow the env's
    modules; kept last, child processes that re-run the recipe (multiprocessing spawn) still find
    ``dss_recipe``."""
    here = os.path.realpath(RUNTIME_DIR)
    sys.path[:] = [entry for entry in sys.path if os.path.realpath(entry) != here] + [RUNTIME_DIR]


if __name__ == "__main__" and not __package__:  # PEP 366: relative imports in a script of a package
    register_runtime_package()
    __package__ = PACKAGE
    _runtime_dir_last()

from . import dss_recipe  # noqa: E402 - the package is registered above
from .errors import RecipeFailed, Terminated  # noqa: E402
from .meter import start_meter  # noqa: E402


def _write_json_atomically(path: str, payload: Dict[str, Any]) -> None:
    tmp = "%s.tmp-%d" % (path, os.getpid())  # same directory, so the rename below is atomic
    with open(tmp, "w", encoding="utf-8") as handle:
        json.dump(payload, handle, indent=2, sort_keys=True, default=str)
    os.replace(tmp, path)


def _list_files(root: str) -> List[str]:
    found = []
    for directory, _dirs, files in os.walk(root):
        for name in files:
            found.append(os.path.relpath(os.path.join(directory, name), root))
    return sorted(found)


def _builtin_module(recipe: str) -> Optional[str]:
    """The module name of a recipe that is a file of the runtime (dss_model.py...), else None."""
    directory, name = os.path.split(os.path.realpath(recipe))
    if directory != os.path.realpath(RUNTIME_DIR) or not name.endswith(".py"):
        return None
    return "%s.%s" % (__package__, name[: -len(".py")])


def _run_python(context: Dict[str, Any]) -> None:
    """Run the recipe as ``__main__``: a runtime file as a module of this package (its relative imports
    need one), a project's file by path. ``import dss_recipe`` gives the package's module, so recipe and
    runtime share one context and one Spark session."""
    for extra in context.get("python_path", []):
        if extra not in sys.path:
            sys.path.insert(0, extra)
    sys.modules["dss_recipe"] = dss_recipe
    sys.argv = [context["recipe"]]
    builtin = _builtin_module(context["recipe"])
    if builtin is None:
        runpy.run_path(context["recipe"], run_name="__main__")
    else:
        runpy.run_module(builtin, run_name="__main__", alter_sys=True)


def _run_r(context: Dict[str, Any]) -> None:
    """``Rscript dss_recipe.R RECIPE ERROR_FILE``: the R runtime sources the recipe with input_path(),
    output_dir(), params() and set_result(); an R error comes back as its message (the traceback is in
    the log). The paths and params are also in ``DSS_INPUT_<NAME>``/``DSS_OUTPUT_<NAME>``/``DSS_PARAMS_JSON``
    for scripts that do without the runtime."""
    import subprocess  # only R recipes need it; keeps the runner's start-up small

    env = dict(os.environ)
    for name, path in context["inputs"].items():
        env["DSS_INPUT_" + name.upper().replace("-", "_")] = path
    for name, path in context["outputs"].items():
        env["DSS_OUTPUT_" + name.upper().replace("-", "_")] = path
    env["DSS_PARAMS_JSON"] = json.dumps(context.get("params", {}))
    error_file = os.path.join(os.path.dirname(context["result_file"]), "r_error.json")
    command = ["Rscript", "--no-save", "--no-restore", os.path.join(RUNTIME_DIR, "dss_recipe.R")]
    try:
        completed = subprocess.run(command + [context["recipe"], error_file], env=env, check=False)
    except FileNotFoundError:
        raise RecipeFailed(
            "R is not installed where this recipe runs (no Rscript on PATH): give its execution config a "
            "base image with `r: true`, or install R (r-base-core, r-cran-jsonlite) on the worker for "
            "local runs"
        ) from None
    if completed.returncode == 0:
        return
    message = "R recipe exited with code %d" % completed.returncode
    if os.path.exists(error_file):
        with open(error_file, encoding="utf-8") as handle:
            detail = json.load(handle)
        os.unlink(error_file)
        frames = detail.get("traceback") or []
        message = "R error: %s" % detail.get("message", "")
        if frames:
            message += " (in %s)" % frames[-1]
    raise RecipeFailed(message)


def _remove_staging(pairs: List[List[str]]) -> None:
    """Remove staging directories, then their run directory and ``.dss-staging`` once empty."""
    for staging, _destination in pairs:
        shutil.rmtree(staging, ignore_errors=True)
        parent = os.path.dirname(staging.rstrip("/"))
        for directory in (parent, os.path.dirname(parent)):
            try:
                os.rmdir(directory)
            except OSError:
                break


def _promote(pairs: List[List[str]]) -> Dict[str, List[str]]:
    """Move every staged file to its destination (atomic per file); returns destination -> files."""
    promoted: Dict[str, List[str]] = {}
    for staging, destination in pairs:
        files = []
        for relative in _list_files(staging):
            source = os.path.join(staging, relative)
            if os.path.islink(source):
                print("[dss-airflow] WARNING: symbolic link %s not promoted" % source, flush=True)
                continue
            target = os.path.join(destination, relative)
            os.makedirs(os.path.dirname(target), exist_ok=True)
            os.replace(source, target)
            files.append(target)
        promoted[destination] = files
    return promoted


def _load_context(argument: str) -> Dict[str, Any]:
    if argument == "-":
        text = os.environ.get("DSS_CONTEXT_JSON")
        if not text:
            raise SystemExit("runner.py -: the DSS_CONTEXT_JSON environment variable is missing or empty")
        data: Dict[str, Any] = json.loads(text)
        return data
    with open(argument, encoding="utf-8") as handle:
        loaded: Dict[str, Any] = json.load(handle)
        return loaded


def _context_file(argument: str, context: Dict[str, Any]) -> str:
    """The context as a file for dss_recipe: the given file, or one written next to the workdir."""
    if argument != "-":
        return argument
    run_dir = os.path.dirname(os.path.abspath(context["workdir"]))
    os.makedirs(run_dir, exist_ok=True)
    path = os.path.join(run_dir, "context.json")
    with open(path, "w", encoding="utf-8") as handle:
        json.dump(context, handle)
    return path


def _finish_outputs(result: Dict[str, Any], pairs: List[List[str]]) -> None:
    """Promote after a success (a failed move fails the run), then remove the staging directories."""
    if result["status"] == "success":
        try:
            _promote(pairs)
        except OSError as exc:
            traceback.print_exc()
            result.update(status="failed", error="promoting the outputs failed: %s" % exc)
    _remove_staging(pairs)


def _run_recipe(context: Dict[str, Any]) -> Dict[str, Any]:
    """Run the recipe in its language; the result's failure fields (none after a success)."""
    try:
        if context["language"] == "python":
            _run_python(context)
        else:
            _run_r(context)
    except Terminated:  # on_kill, docker stop, a daemon or node shutdown: the backend knows which
        return {"status": "failed", "error": "terminated by SIGTERM"}
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
        if code != 0:
            return {"status": "failed", "error": "recipe called sys.exit(%s)" % exc.code}
    except RecipeFailed as exc:  # its own error was printed: no Python traceback of the runner
        return {"status": "failed", "error": str(exc)}
    except BaseException as exc:  # noqa: BLE001 - every failure must become a result
        traceback.print_exc()
        return {"status": "failed", "error": "%s: %s" % (type(exc).__name__, exc)}
    return {}


def _on_sigterm(signum: int, frame: Any) -> None:
    raise Terminated()


def main(argv: List[str]) -> int:
    if len(argv) != 2:
        sys.stderr.write("usage: runner.py CONTEXT_JSON | -  (- reads $DSS_CONTEXT_JSON)\n")
        return 2
    context = _load_context(argv[1])
    promote_pairs: List[List[str]] = context.get("promote", [])
    os.environ["DSS_CONTEXT"] = _context_file(argv[1], context)
    for staging, _destination in promote_pairs:
        os.makedirs(staging, exist_ok=True)  # the worker cannot create them in a PVC
    # In a container the runner is PID 1, which ignores SIGTERM unless it installs a handler: without
    # this, `docker stop` (on_kill) would wait its whole grace period before SIGKILL.
    signal.signal(signal.SIGTERM, _on_sigterm)
    workdir = context["workdir"]
    os.makedirs(workdir, exist_ok=True)
    os.chdir(workdir)
    started = time.time()
    meter = start_meter(context)
    result: Dict[str, Any] = {"version": RESULT_VERSION, "recipe": context["recipe_name"], "warnings": []}
    print("[dss-airflow] running %s (%s)" % (context["recipe_name"], context["language"]), flush=True)
    result.update(_run_recipe(context))
    result.setdefault("status", "success")
    result["duration_s"] = round(time.time() - started, 3)
    resources = meter.finish() if meter is not None else None
    if resources is not None:
        result["resources"] = resources
    result["outputs"] = {name: _list_files(path) for name, path in context["outputs"].items()}
    left_behind = _list_files(workdir)
    if left_behind:
        warning = (
            "the recipe wrote %s to its working directory; in a container that is lost when the task "
            "ends. Write outputs with dss_recipe.output_dir(NAME) instead." % ", ".join(left_behind[:10])
        )
        result["warnings"].append(warning)
        print("[dss-airflow] WARNING: " + warning, flush=True)
    user_result = os.path.join(os.path.dirname(context["result_file"]), "user_result.json")
    if os.path.exists(user_result):
        with open(user_result, encoding="utf-8") as handle:
            result["result"] = json.load(handle)
        os.unlink(user_result)
    if promote_pairs:
        _finish_outputs(result, promote_pairs)
    _write_json_atomically(context["result_file"], result)
    print(
        "[dss-airflow] recipe %s: %s in %.2fs"
        % (context["recipe_name"], result["status"], result["duration_s"]),
        flush=True,
    )
    if context.get("print_result"):
        compact = json.dumps(result, sort_keys=True, separators=(",", ":"), default=str)
        print(RESULT_LINE_PREFIX + compact, flush=True)
    return _exit_code(result)


def _exit_code(result: Dict[str, Any]) -> int:
    if result.get("error") == "terminated by SIGTERM":
        return 128 + signal.SIGTERM  # as a shell reports it: the backend tells a stop from a failure
    return 0 if result["status"] == "success" else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv))
