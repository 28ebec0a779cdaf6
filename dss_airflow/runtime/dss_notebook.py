"""In-container notebook engine of DSSNotebookOperator: execute a project notebook with papermill in the
code env's own kernel, export it to HTML, and stream cell progress and outputs into the task log.

Standard library only at module level (papermill and nbconvert are imported where they are used), so the
file loads in any code env and a code env without notebook support fails with a message saying so.
Run by runner.py as a builtin recipe; its params, set by the operator, are:

* ``notebook``: path relative to the project root; ``parameters``: injected by papermill after the cell
  tagged ``parameters``; ``output``: the output (a managed folder) receiving ``<stem>.ipynb`` and, with
  ``html``, ``<stem>.html``; ``libraries``: ``["project"]`` puts the project's ``lib/`` on the kernel's path.

The kernel is a separate process, so what it needs goes through a private kernelspec (this interpreter,
``PYTHONPATH`` with the runtime and the project's lib, ``DSS_CONTEXT`` with the notebook's parameters as
``dss_recipe.params()``). A failing cell is printed with its number, source and traceback, and the run
fails: the staged notebook is then discarded, so nothing partial reaches the managed folder.
"""

import json
import logging
import os
import re
import sys
from typing import Any, Dict, List, Optional

from . import dss_recipe
from .errors import NotebookCellError, NotebookSupportMissing

LOG_PREFIX = "[dss-notebook]"
KERNEL_NAME = "python3"
R_KERNEL_NAME = "ir"  # IRkernel's name: R notebooks saved from Jupyter carry it
_CELL_START = re.compile(r"^Executing Cell (\d+)-*$")
_CELL_END = re.compile(r"^Ending Cell \d+-*$")
_ANSI = re.compile("\x1b\\[(K|.*?m)")


def _log(message: str) -> None:
    print("%s %s" % (LOG_PREFIX, message), flush=True)


def _read_json(path: str) -> Dict[str, Any]:
    with open(path, encoding="utf-8") as handle:
        data: Dict[str, Any] = json.load(handle)
        return data


def _write_json(path: str, payload: Any) -> None:
    with open(path, "w", encoding="utf-8") as handle:
        json.dump(payload, handle)


class _CellProgress(logging.Filter):
    """Turns papermill's "Executing Cell 3-----" into "Executing cell 3 of 7" and drops "Ending Cell"."""

    def __init__(self, total: int) -> None:
        super().__init__()
        self.total = total

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        started = _CELL_START.match(message)
        if started:
            message = "%s Executing cell %s of %d" % (LOG_PREFIX, started.group(1), self.total)
        elif _CELL_END.match(message):
            return False
        record.msg, record.args = message.rstrip("\n"), None
        return True


def _stream_papermill_log(total: int) -> None:
    """papermill's log (cell starts, cell outputs) to stdout, which is the task log."""
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(logging.Formatter("%(message)s"))
    handler.addFilter(_CellProgress(total))
    logger = logging.getLogger("papermill")
    logger.handlers = [handler]
    logger.setLevel(logging.INFO)
    logger.propagate = False


def _private_dir(context: Dict[str, Any]) -> str:
    """``jupyter/`` in the run's private directory (the parent of its working directory)."""
    return os.path.join(os.path.dirname(os.path.abspath(context["workdir"])), "jupyter")


def _kernel_language(notebook: str) -> str:
    """ "R" for a notebook saved with an R kernel (IRkernel: ``ir``), else "python"."""
    spec = _read_json(notebook).get("metadata", {}).get("kernelspec", {})
    return "R" if spec.get("language", "").lower() == "r" or spec.get("name") == R_KERNEL_NAME else "python"


def r_profile(runtime_dir: str) -> str:
    """The R profile (``R_PROFILE_USER``) that attaches dss_recipe.R's functions to an R kernel."""
    return "local({ source(%s, local = TRUE); attach(.dss_recipe, name = 'dss_recipe') })\n" % json.dumps(
        os.path.join(runtime_dir, "dss_recipe.R")
    )


def r_kernel_argv(connection_file: str) -> List[str]:
    """IRkernel on a connection file."""
    return ["R", "--slave", "-e", "IRkernel::main()", "--args", connection_file]


def _kernel_environment(
    context: Dict[str, Any], params: Dict[str, Any], language: str = "python"
) -> Dict[str, str]:
    """Write a private Jupyter home for this run and return the variables that select it.

    Our kernelspec (``python3``, or ``ir`` for R notebooks) wins over any user or system one
    (``JUPYTER_PATH`` comes first), and Jupyter and IPython write their runtime files there, not in the
    working directory or the home. An R kernel gets dss_recipe.R attached by its profile.
    """
    private = _private_dir(context)
    kernel_context = dict(context, params=params.get("parameters") or {})
    kernel_context["result_file"] = os.path.join(private, "result.json")
    os.makedirs(private, exist_ok=True)
    _write_json(os.path.join(private, "context.json"), kernel_context)
    runtime = os.path.dirname(os.path.abspath(__file__))
    env = {"DSS_CONTEXT": os.path.join(private, "context.json")}
    if language == "R":
        profile = os.path.join(private, "dss_profile.R")
        with open(profile, "w", encoding="utf-8") as handle:
            handle.write(r_profile(runtime))
        name = R_KERNEL_NAME
        argv = r_kernel_argv("{connection_file}")
        env["R_PROFILE_USER"] = profile
    else:
        path = [runtime]  # the kernel imports dss_recipe.py from here
        if "project" in params.get("libraries", ["project"]):
            path += context.get("python_path", [])
        if os.environ.get("PYTHONPATH"):
            path.append(os.environ["PYTHONPATH"])
        name = KERNEL_NAME
        argv = [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"]
        env["PYTHONPATH"] = os.pathsep.join(path)
    kernel_dir = os.path.join(private, "kernels", name)
    os.makedirs(kernel_dir, exist_ok=True)
    display = "%s (code env %s)" % (
        "R" if language == "R" else "Python 3",
        os.environ.get("DSS_CODE_ENV", "?"),
    )
    kernelspec = {"argv": argv, "display_name": display, "language": language, "env": env}
    _write_json(os.path.join(kernel_dir, "kernel.json"), kernelspec)
    return {
        "JUPYTER_PATH": private,
        "JUPYTER_CONFIG_DIR": os.path.join(private, "config"),
        "JUPYTER_RUNTIME_DIR": os.path.join(private, "runtime"),
        "IPYTHONDIR": os.path.join(private, "ipython"),
    }


def _kernel_transport(context: Dict[str, Any], language: str = "python") -> Any:
    """Kernel channels on unix sockets in the private directory: no TCP port on a shared worker's
    loopback (ipykernel warns about unencrypted TCP), nothing written to the working directory. IRkernel
    speaks TCP only: R kernels listen on loopback, in the task's container."""
    from traitlets.config import Config

    if language == "R":
        return Config({"KernelManager": {"transport": "tcp", "ip": "127.0.0.1"}})
    sockets = os.path.join(_private_dir(context), "kernel")
    return Config({"KernelManager": {"transport": "ipc", "ip": sockets}})


def _notebook_result(context: Dict[str, Any]) -> Optional[Any]:
    """What the notebook passed to ``dss_recipe.set_result`` (written next to its own result file)."""
    path = os.path.join(_private_dir(context), "user_result.json")
    return _read_json(path) if os.path.exists(path) else None


def _cell_count(notebook: str, parameters: Dict[str, Any]) -> int:
    """Cells papermill will run: the notebook's, plus the cell it injects for the parameters."""
    import nbformat

    cells = nbformat.read(notebook, as_version=4).cells
    injected = any("injected-parameters" in cell.get("metadata", {}).get("tags", []) for cell in cells)
    return len(cells) + (1 if parameters and not injected else 0)


def _report_cell_error(error: Any, total: int) -> str:
    """Print the failing cell (number, source, traceback) and return a one-line summary."""
    summary = "cell %d of %d failed: %s: %s" % (error.cell_index + 1, total, error.ename, error.evalue)
    _log("ERROR " + summary + " (In [%s])" % error.exec_count)
    _log("source of the failing cell:")
    for line in str(error.source).splitlines():
        print("    " + line, flush=True)
    _log("traceback:")
    for line in _ANSI.sub("", "\n".join(error.traceback)).splitlines():
        print("    " + line, flush=True)
    return summary


def _import_papermill() -> Any:
    try:
        import ipykernel  # noqa: F401 - the kernel papermill starts
        import papermill
    except ImportError as exc:
        env = os.environ.get("DSS_CODE_ENV", "?")
        raise NotebookSupportMissing(
            "code env %r has no notebook support (%s): set 'notebook: true' under code_envs.%s and rebuild "
            "its image (dss-airflow images build %s)" % (env, exc, env, env)
        ) from None
    return papermill


def _export_html(executed: str) -> str:
    from nbconvert import HTMLExporter

    body, _resources = HTMLExporter().from_filename(executed)
    target = os.path.splitext(executed)[0] + ".html"
    with open(target, "w", encoding="utf-8") as handle:
        handle.write(body)
    return target


def execute(context: Dict[str, Any], params: Dict[str, Any]) -> Dict[str, Any]:
    """Run the notebook into the output's staging directory; returns the task's result."""
    papermill = _import_papermill()
    from papermill.exceptions import PapermillExecutionError

    project_dir = os.path.dirname(context["python_path"][0])  # python_path is <project>/lib
    notebook = os.path.join(project_dir, params["notebook"])
    out_dir = context["outputs"][params["output"]]
    executed = os.path.join(out_dir, os.path.splitext(os.path.basename(notebook))[0] + ".ipynb")
    parameters: Dict[str, Any] = params.get("parameters") or {}
    language = _kernel_language(notebook)
    os.environ.update(_kernel_environment(context, params, language))
    total = _cell_count(notebook, parameters)
    _stream_papermill_log(total)
    _log("executing %s (%d cells) with parameters %s" % (params["notebook"], total, json.dumps(parameters)))
    try:
        papermill.execute_notebook(
            notebook,
            executed,
            parameters=parameters,
            kernel_name=R_KERNEL_NAME if language == "R" else KERNEL_NAME,
            language=language,
            log_output=True,
            progress_bar=False,
            cwd=context["workdir"],
            config=_kernel_transport(context, language),
        )
    except PapermillExecutionError as error:
        raise NotebookCellError(_report_cell_error(error, total)) from None
    html = _export_html(executed) if params.get("html", True) else None
    _log(
        "executed %d cells; wrote %s" % (total, ", ".join(os.path.basename(p) for p in (executed, html) if p))
    )
    return {
        "notebook": params["notebook"],
        "output_notebook": os.path.basename(executed),
        "html": os.path.basename(html) if html else None,
        "cells": total,
        "result": _notebook_result(context),
    }


def main() -> None:
    """Recipe entry point (runner.py): the context is the file named by ``DSS_CONTEXT``."""
    context = _read_json(os.environ["DSS_CONTEXT"])
    dss_recipe.set_result(execute(context, dss_recipe.params()))


if __name__ == "__main__":
    main()
