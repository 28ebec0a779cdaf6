"""DSSNotebookOperator: execute a project notebook with papermill in its code env, where its execution
config says, and put the executed notebook (and its HTML export) in a managed folder.

A notebook task is a recipe run whose code is the runtime's ``dss_notebook.py`` (as model tasks run
``dss_model.py``), so it goes through exactly the same path as recipes: resolution (task > project >
global), the code env's image, any backend (local venv, Docker, Kubernetes pod), and outputs staged then
promoted only after a success: a failing cell leaves the managed folder untouched. The code env needs
notebook support (``notebook: true``); a notebook's files written to its working directory are lost, as
in DSS containerized notebooks, so it writes into ``dss_recipe.output_dir(<output folder>)``.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import PurePosixPath
from typing import TYPE_CHECKING, Any

from dss_airflow.config.loader import get_catalog
from dss_airflow.config.resolve import (
    NOTEBOOK,
    ResolvedExecution,
    is_templated,
    require_notebook_support,
    resolve_recipe_path,
)
from dss_airflow.errors import ConfigError
from dss_airflow.operators.recipe import DSSContainerRecipeOperator
from dss_airflow.staging import split_ref, validate_folder_refs

if TYPE_CHECKING:
    from collections.abc import Sequence

    from dss_airflow.config.catalog import Catalog
    from dss_airflow.spec import ContainerSpec, Entrypoint, RecipeRun
    from dss_airflow.staging import FolderRefs

#: The runtime module every notebook task runs (``dss_airflow/runtime/dss_notebook.py``).
NOTEBOOK_ENTRYPOINT = PurePosixPath("dss_notebook.py")
#: The only library a containerized notebook can use: the project's ``lib/`` (mounted, never baked in).
PROJECT_LIBRARY = "project"


class DSSNotebookOperator(DSSContainerRecipeOperator):
    """Execute ``notebook`` (a ``.ipynb`` of the project) with ``parameters`` in ``code_env``.

    :param notebook: path relative to the project root, e.g. ``notebooks/report.ipynb`` (templated)
    :param output: managed folder (``"reports"``) or a directory inside one (``"reports/{{ ds }}"``) that
        receives ``<stem>.ipynb`` (executed, with outputs) and ``<stem>.html``; the notebook writes its own
        files into ``dss_recipe.output_dir("<folder>")``. Promoted atomically after a success (templated;
        kept as ``output_folder``: ``output`` is the task's XComArg)
    :param parameters: injected by papermill after the cell tagged ``parameters``; JSON values, names that
        are Python identifiers; also ``dss_recipe.params()`` in the notebook (templated)
    :param inputs: managed folders (or files in them) the notebook reads with ``dss_recipe.input_path``
        (templated)
    :param html: also export the executed notebook to HTML
    :param libraries: ``["project"]`` (default) puts the project's ``lib/`` on the kernel's path, ``[]``
        does not; plugin libraries are refused (not available in containers, as in DSS)
    :param code_env: a code env with ``notebook: true`` (templated); execution_config, project, cluster and
        config_dir as for DSSContainerRecipeOperator
    :return: (XCom) ``{"status", "notebook", "output_notebook", "html", "files", "cells", "result",
        "duration_s", "code_env", "execution_config", "image"}`` with the promoted files' paths
    """

    template_fields: Sequence[str] = (
        "notebook",
        "parameters",
        "output_folder",
        "inputs",
        "code_env",
        "execution_config",
        "cluster",
    )
    template_fields_renderers = {"parameters": "json"}
    ui_color = "#f37726"
    task_kind = "notebook"

    def __init__(
        self,
        *,
        notebook: str,
        output: str,
        parameters: Mapping[str, Any] | None = None,
        inputs: FolderRefs = None,
        html: bool = True,
        libraries: Sequence[str] | None = None,
        code_env: str | None = None,
        execution_config: str | None = None,
        project: str | None = None,
        cluster: str | None = None,
        config_dir: str | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(
            recipe=notebook,
            code_env=code_env,
            execution_config=execution_config,
            project=project,
            cluster=cluster,
            inputs=inputs,
            config_dir=config_dir,
            **kwargs,
        )
        self.notebook = notebook
        self.output_folder = output  # ``self.output`` is BaseOperator's XComArg of this task
        self.parameters = {} if parameters is None else parameters  # checked below and once rendered
        self.html = html
        libraries = [PROJECT_LIBRARY] if libraries is None else libraries
        self.libraries = [libraries] if isinstance(libraries, str) else list(libraries)
        self._validate_notebook_at_parse_time()

    # ------------------------------------------------------------------------------ parse time
    def _validate_at_parse_time(self) -> None:
        """Replaced by :meth:`_validate_notebook_at_parse_time`, which runs once our attributes exist."""

    def _validate_notebook_at_parse_time(self) -> None:
        check_libraries(self.libraries)
        if not is_templated(self.parameters):
            check_parameters(self.parameters)
        fields = (self.notebook, self.code_env, self.execution_config, self.project, self.cluster)
        if any(is_templated(value) for value in fields):
            return
        catalog = get_catalog(self.config_dir)
        self._entrypoint(self._resolution(catalog))
        if not (is_templated(self.inputs) or is_templated(self.output_folder)):
            validate_folder_refs(catalog, self.inputs, self._outputs())

    def _resolution(self, catalog: Catalog) -> ResolvedExecution:
        """As for recipes, and the code env must have notebook support (checked at parse and run time)."""
        resolved = super()._resolution(catalog)
        require_notebook_support(catalog, resolved.code_env_name, what="a notebook task")
        return resolved

    def _entrypoint(self, resolved: ResolvedExecution) -> Entrypoint:
        """The runtime's notebook engine; the notebook itself is checked against path traversal."""
        resolve_recipe_path(resolved.project_root, self.notebook, NOTEBOOK)
        return NOTEBOOK_ENTRYPOINT, "python", True

    def _outputs(self) -> dict[str, str]:
        """One output, named after its folder, so the notebook writes ``dss_recipe.output_dir(folder)``
        in a task as in ``dss-airflow notebook serve`` (where each mounted folder is named so)."""
        if not isinstance(self.output_folder, str):
            raise ConfigError(
                "a notebook task has one output",
                field="output",
                value=self.output_folder,
                fix="pass output='folder' or 'folder/sub/dir' (a managed folder)",
            )
        folder, _ = split_ref(self.output_folder, "output")
        return {folder: self.output_folder}

    # ------------------------------------------------------------------------------ run time
    def _prepare_run(self, catalog: Catalog, resolved: ResolvedExecution, ti: Any) -> None:
        """The output folder, and the runtime's parameters (rendered templates are checked here)."""
        check_parameters(self.parameters)
        self.recipe = self.notebook
        self.outputs = self._outputs()
        self.recipe_params = {
            "notebook": self.notebook,
            "parameters": dict(self.parameters),
            "output": next(iter(self.outputs)),
            "html": self.html,
            "libraries": self.libraries,
        }

    def _outcome(
        self,
        resolved: ResolvedExecution,
        run: RecipeRun,
        spec: ContainerSpec,
        result: dict[str, Any],
        promoted: dict[str, list[str]],
    ) -> dict[str, Any]:
        """Paths of the promoted notebook and HTML, the cell count and the notebook's own result."""
        outcome = super()._outcome(resolved, run, spec, result, promoted)
        engine: dict[str, Any] = outcome.get("result") or {}
        (output,) = run.outputs
        files = promoted.get(output.name, [])

        def promoted_file(name: str | None) -> str | None:
            path = str(output.host_destination / name) if name else None
            return path if path in files else None

        return {
            "status": outcome["status"],
            "notebook": self.notebook,
            "output_notebook": promoted_file(engine.get("output_notebook")),
            "html": promoted_file(engine.get("html")),
            "files": files,
            "cells": engine.get("cells"),
            "result": engine.get("result"),
            "warnings": outcome["warnings"],
            "duration_s": outcome["duration_s"],
            "code_env": outcome["code_env"],
            "execution_config": outcome["execution_config"],
            "image": outcome["image"],
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
