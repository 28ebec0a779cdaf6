"""Notebook support of a code env (``notebook: true``): the packages it adds and the check that it is on.

The packages flow through :meth:`Catalog.requirements`, so the lock, the image hash, local virtualenvs and
the change sensor see them with no other change. Pins resolved with ``uv pip compile`` for Python 3.11.
"""

from __future__ import annotations

from dss_airflow.config.requirements import requirement_name

#: What a code env with ``notebook: true`` gets on top of its own packages. papermill executes notebooks
#: for DSSNotebookOperator, ipykernel is the kernel, nbconvert exports HTML, jupyterlab is what
#: ``dss-airflow notebook serve`` runs; matplotlib makes ipykernel's inline plots work.
NOTEBOOK_PACKAGES = (
    "papermill==2.7.0",
    "ipykernel==7.4.0",
    "nbconvert==7.17.2",
    "jupyterlab==4.6.6",
    "matplotlib==3.11.2",
)


def with_notebook_packages(lines: list[str]) -> list[str]:
    """``lines`` plus the notebook packages it does not already name: the env's own pins win."""
    listed = {requirement_name(line) for line in lines}
    extra = [pin for pin in NOTEBOOK_PACKAGES if requirement_name(pin) not in listed]
    return [*lines, *extra]
