"""Every exception of the in-env runtime, in one module. Standard library only, any Python >= 3.8.

The worker-side package has its own ``dss_airflow/errors.py``; these are raised inside code envs and reach
the worker only as text in the run's result ("<class name>: <message>"), so each message stands alone.
"""


class ModelInputError(ValueError):
    """A mistake in the data or the model definition that the user must fix; the message says how."""


class NotebookSupportMissing(RuntimeError):
    """The code env lacks papermill/ipykernel: it was not declared with ``notebook: true``."""


class NotebookCellError(RuntimeError):
    """A cell raised; the cell, its source and the traceback were printed just before."""


class RecipeFailed(RuntimeError):
    """A recipe in another language (R) failed; its own error and traceback were printed just before."""


class Terminated(BaseException):
    """SIGTERM (docker stop, on_kill): the recipe is interrupted and the run reported as failed."""
