"""Notebook tasks: a project notebook executed with papermill in its code env (``dss_notebook.py``).

The code env needs notebook support (``notebook: true``). The executed notebook (and its HTML export) is
the one output, named after its managed folder, so the notebook writes ``dss_recipe.output_dir(folder)``
in a task as in ``dss-airflow notebook serve``; it is promoted only after a success.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import PurePosixPath
from typing import TYPE_CHECKING, Any

from dss_airflow.config.resolve import NOTEBOOK, is_templated, require_notebook_support, resolve_recipe_path
from dss_airflow.errors import ConfigError
from dss_airflow.spec import Entrypoint
from dss_airflow.staging import split_ref, validate_folder_refs
from dss_airflow.tasks.base import Placement, TaskKind, TaskPlan

if TYPE_CHECKING:
    from collections.abc import Sequence

    from dss_airflow.backends.base import TaskLog
    from dss_airflow.config.catalog import Catalog
    from dss_airflow.config.resolve import ResolvedExecution
    from dss_airflow.staging import FolderRefs
    from dss_airflow.tasks.base import Ran

#: The runtime module every notebook task runs (``dss_airflow/runtime/dss_notebook.py``).
NOTEBOOK_ENTRYPOINT = Entrypoint(PurePosixPath("dss_notebook.py"), builtin=True)
#: The only library a containerized notebook can use: the project's ``lib/`` (mounted, never baked in).
PROJECT_LIBRARY = "project"


@dataclass(frozen=True)
class NotebookTask(TaskKind):
    """``notebook`` executed with ``parameters``, its executed copy and HTML promoted into ``output``."""

    kind = "notebook"

    placement: Placement
    notebook: str
    output: Any
    parameters: Any = field(default_factory=dict)
    inputs: FolderRefs = None
    html: bool = True
    libraries: Sequence[str] = (PROJECT_LIBRARY,)

    def check(self, catalog: Catalog) -> ResolvedExecution | None:
        check_libraries(self.libraries)
        if not is_templated(self.parameters):
            check_parameters(self.parameters)
        if self.placement.templated or is_templated(self.notebook):
            return None
        resolved = self.resolve(catalog)
        self.resolve_notebook(resolved)
        if not (is_templated(self.inputs) or is_templated(self.output)):
            validate_folder_refs(catalog, self.inputs, self._outputs())
        return resolved

    def resolve(self, catalog: Catalog) -> ResolvedExecution:
        """As for recipes, and the code env must have notebook support (checked at parse and run time)."""
        resolved = self.placement.resolve(catalog)
        require_notebook_support(catalog, resolved.code_env_name, what="a notebook task")
        return resolved

    def resolve_notebook(self, resolved: ResolvedExecution) -> None:
        """The notebook must be a file of the project (path traversal refused)."""
        resolve_recipe_path(resolved.project_root, self.notebook, NOTEBOOK)

    def _outputs(self) -> dict[str, str]:
        """One output, named after its folder."""
        if not isinstance(self.output, str):
            raise ConfigError(
                "a notebook task has one output",
                field="output",
                value=self.output,
                fix="pass output='folder' or 'folder/sub/dir' (a managed folder)",
            )
        folder, _ = split_ref(self.output, "output")
        return {folder: self.output}

    def plan(self, catalog: Catalog, resolved: ResolvedExecution, ti: Any) -> TaskPlan:
        """The output folder and the engine's parameters (rendered templates are checked here)."""
        check_parameters(self.parameters)
        self.resolve_notebook(resolved)
        outputs = self._outputs()
        params = {
            "notebook": self.notebook,
            "parameters": dict(self.parameters),
            "output": next(iter(outputs)),
            "html": self.html,
            "libraries": list(self.libraries),
        }
        label = f"{self.kind} {self.notebook}"
        return TaskPlan(label, NOTEBOOK_ENTRYPOINT, self.inputs, outputs, params)

    def outcome(self, ran: Ran, log: TaskLog) -> dict[str, Any]:
        """Paths of the promoted notebook and HTML, the cell count and the notebook's own result."""
        common = ran.xcom()
        engine: dict[str, Any] = dict(common.get("result") or {})
        (output,) = ran.spec.outputs
        files = list(ran.run.promoted.get(output.name, []))

        def promoted_file(name: str | None) -> str | None:
            path = str(output.host_destination / name) if name else None
            return path if path in files else None

        return {
            "status": common["status"],
            "notebook": self.notebook,
            "output_notebook": promoted_file(engine.get("output_notebook")),
            "html": promoted_file(engine.get("html")),
            "files": files,
            "cells": engine.get("cells"),
            "result": engine.get("result"),
            "warnings": common["warnings"],
            "duration_s": common["duration_s"],
            "code_env": common["code_env"],
            "execution_config": common["execution_config"],
            "image": common["image"],
        }


def check_libraries(libraries: Sequence[str]) -> None:
    """Only the project's lib/ reaches a containerized notebook: plugin code is not in the image."""
    for entry in libraries:
        if entry != PROJECT_LIBRARY:
            raise ConfigError(
                "plugin libraries are not available in containerized notebooks (DSS limitation)",
                field="libraries",
                value=entry,
                fix="move the code into the project's lib/ directory and use libraries=['project'] "
                "(the default)",
            )


def check_parameters(parameters: Any) -> None:
    """papermill writes ``name = value`` lines: names must be identifiers and values JSON."""
    if not isinstance(parameters, Mapping):
        raise ConfigError(
            "notebook parameters must be a mapping",
            field="parameters",
            value=parameters,
            fix="pass parameters={'name': value, ...}",
        )
    for name in parameters:
        if not (isinstance(name, str) and name.isidentifier()):
            raise ConfigError(
                "a notebook parameter name must be a Python identifier",
                field="parameters",
                value=name,
                fix="use names such as 'region' or 'min_orders'",
            )
    try:
        json.dumps(dict(parameters))
    except (TypeError, ValueError) as exc:
        raise ConfigError(
            f"notebook parameters must be JSON values: {exc}",
            field="parameters",
            fix="pass strings, numbers, booleans, None, lists and dicts",
        ) from exc
