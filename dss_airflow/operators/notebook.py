"""DSSNotebookOperator: execute a project notebook with papermill in its code env, where its execution
config says, and put the executed notebook (and its HTML export) in a managed folder."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from dss_airflow.operators.base import RESOLVED_FIELD, DSSTaskOperator
from dss_airflow.staging import copy_refs
from dss_airflow.tasks.notebook import PROJECT_LIBRARY, NotebookTask

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence

    from dss_airflow.staging import FolderRefs


class DSSNotebookOperator(DSSTaskOperator):
    """Execute ``notebook`` (a ``.ipynb`` of the project) with ``parameters`` in ``code_env``.

    A failing cell fails the task and leaves the managed folder untouched; files the notebook writes to
    its working directory are lost (as in DSS containerized notebooks): it writes into
    ``dss_recipe.output_dir("<output folder>")``.

    :param notebook: path relative to the project root, e.g. ``notebooks/report.ipynb`` (templated)
    :param output: managed folder (``"reports"``) or a directory inside one (``"reports/{{ ds }}"``) that
        receives ``<stem>.ipynb`` (executed, with outputs) and ``<stem>.html``; promoted atomically after a
        success (templated; kept as ``output_folder``: ``output`` is the task's XComArg)
    :param parameters: injected by papermill after the cell tagged ``parameters``; JSON values, names that
        are Python identifiers; also ``dss_recipe.params()`` in the notebook (templated)
    :param inputs: managed folders (or files in them) read with ``dss_recipe.input_path`` (templated)
    :param html: also export the executed notebook to HTML
    :param libraries: ``["project"]`` (default) puts the project's ``lib/`` on the kernel's path, ``[]``
        does not; plugin libraries are refused (not available in containers, as in DSS)
    :param code_env: a code env with ``notebook: true`` (templated); ``execution_config``, ``project``,
        ``cluster``, ``config_dir``: see :class:`~dss_airflow.operators.base.DSSTaskOperator`
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
        RESOLVED_FIELD,
    )
    template_fields_renderers = {**DSSTaskOperator.template_fields_renderers, "parameters": "json"}
    ui_color = "#f37726"

    def __init__(
        self,
        *,
        notebook: str,
        output: str,
        parameters: Mapping[str, Any] | None = None,
        inputs: FolderRefs = None,
        html: bool = True,
        libraries: Sequence[str] | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.notebook = notebook
        self.output_folder = output  # ``self.output`` is BaseOperator's XComArg of this task
        self.parameters = {} if parameters is None else parameters  # checked by the task kind
        self.inputs = copy_refs(inputs)
        self.html = html
        libraries = [PROJECT_LIBRARY] if libraries is None else libraries
        self.libraries = [libraries] if isinstance(libraries, str) else list(libraries)
        self.check_at_parse_time()

    def task(self) -> NotebookTask:
        return NotebookTask(
            self.placement(),
            notebook=self.notebook,
            output=self.output_folder,
            parameters=self.parameters,
            inputs=self.inputs,
            html=self.html,
            libraries=tuple(self.libraries),
        )
