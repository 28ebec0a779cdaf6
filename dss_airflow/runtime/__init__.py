"""Code that runs inside the code env (container or venv): standard library only, any Python >= 3.8.

On the worker this directory is ``dss_airflow.runtime``; in containers and local venvs the runner loads it
as the package ``dss_runtime`` (so its modules import each other relatively and never clash with a
project's own modules). :func:`runtime_files` is what images carry and what their hash covers.
"""

import os
from typing import Dict

RUNTIME_ROOT = os.path.dirname(os.path.abspath(__file__))


def runtime_files() -> Dict[str, str]:
    """{path relative to the runtime directory (posix): absolute path} of every source file, sorted."""
    found = {}
    for directory, dirs, files in os.walk(RUNTIME_ROOT):
        dirs[:] = sorted(d for d in dirs if d != "__pycache__")
        for name in files:
            if name.endswith((".py", ".R")):
                path = os.path.join(directory, name)
                found[os.path.relpath(path, RUNTIME_ROOT).replace(os.sep, "/")] = path
    return dict(sorted(found.items()))
