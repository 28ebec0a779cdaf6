"""Pure text of a code-env image build: the install script run in a builder container, and the commit.

A code-env image is its base image plus one layer: a virtualenv at ``/opt/dss/env`` installed from the
lock with uv, the lock itself, and the env's resources. The build runs in a throw-away container of the
base image with the uv binary and a persistent uv cache *mounted*, then the container is committed: build
tools and caches never enter the image, and a rebuild after one package change downloads one package.
"""

from __future__ import annotations

import shlex
from typing import TYPE_CHECKING

from dss_airflow.spec import RUNTIME_DIR

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence

ENV_PREFIX = "/opt/dss/env"
ENV_PYTHON = f"{ENV_PREFIX}/bin/python"
RESOURCES_DIR = "/opt/dss/resources"
LOCK_IN_IMAGE = "/opt/dss/requirements.lock"
BUILD_DIR = "/opt/dss-build"  # mounted only while building
UV_IN_BUILDER = f"{BUILD_DIR}/uv"
CACHE_IN_BUILDER = f"{BUILD_DIR}/cache"
CONTEXT_IN_BUILDER = f"{BUILD_DIR}/ctx"
RUNTIME_IN_BUILDER = f"{BUILD_DIR}/runtime"
#: In images with R packages: their names (what the smoke test loads) and installed versions.
R_PACKAGES_FILE = "/opt/dss/r-packages.txt"
R_LOCK_FILE = "/opt/dss/r-packages.lock"
#: The R lock's name in the build context.
R_LOCK_IN_CONTEXT = "r-packages.lock"


def _header() -> list[str]:
    return [
        "set -eu",
        # Bytecode is compiled at build time: the non-root user cannot write __pycache__ at run time, so
        # without it every task would recompile every module it imports (1.2 s for `import pandas`).
        f"export UV_CACHE_DIR={CACHE_IN_BUILDER} UV_LINK_MODE=copy UV_COMPILE_BYTECODE=1",
        "export UV_PYTHON_DOWNLOADS=never UV_NO_PROGRESS=1",
    ]


def _install_lock(index: str) -> list[str]:
    return [
        # The lock is the full closure, so --no-deps: nothing is resolved at build time; pins already
        # satisfied are skipped, which is what makes an incremental update cheap.
        f"{UV_IN_BUILDER} pip install --python {ENV_PYTHON} --no-deps"
        f" -r {CONTEXT_IN_BUILDER}/requirements.lock{index}",
        f"cp {CONTEXT_IN_BUILDER}/requirements.lock {LOCK_IN_IMAGE}",
    ]


def install_script(
    *,
    base_python: str,
    resources_mode: str = "none",
    init_script_name: str | None = None,
    r_names: Sequence[str] = (),
    index_url: str | None = None,
    cran_url: str | None = None,
) -> str:
    """Full build, on the base image: the script the builder container runs (as root), values quoted."""
    index = f" --index-url {shlex.quote(index_url)}" if index_url else ""
    lines = [
        *_header(),
        # --seed puts pip in the env: users expect it, and the smoke test runs `pip check`.
        f"{UV_IN_BUILDER} venv --seed --python {shlex.quote(base_python)} {ENV_PREFIX}{index}",
        *_install_lock(index),
        # Baked for pods, which cannot mount the worker's copy (Docker and local runs mount it over this).
        f"mkdir -p {RUNTIME_DIR} && tar -C {RUNTIME_IN_BUILDER} --exclude=__pycache__ -cf - ."
        f" | tar -C {RUNTIME_DIR} -xf -",
        f"chmod -R a+rX {RUNTIME_DIR}",
    ]
    if r_names:
        lines += r_install_lines(r_names, cran_url)
    if resources_mode == "copy":
        lines.append(f"cp -a {CONTEXT_IN_BUILDER}/resources {RESOURCES_DIR}")
    elif resources_mode == "init_script":
        if not init_script_name:
            raise ValueError("init_script mode needs the script's file name")
        runner = ENV_PYTHON if init_script_name.endswith(".py") else "sh"
        script = f"{CONTEXT_IN_BUILDER}/{shlex.quote(init_script_name)}"
        lines += [
            f"mkdir -p {RESOURCES_DIR}",
            f"cd {RESOURCES_DIR} && DSS_RESOURCES_DIR={RESOURCES_DIR} {runner} {script}",
        ]
    if resources_mode != "none":
        lines.append(f"chmod -R a+rX {RESOURCES_DIR}")
    return "\n".join(lines) + "\n"


def r_install_lines(names: Sequence[str], cran_url: str | None) -> list[str]:
    """Install the R lock (``r-packages.lock`` in the context, see :mod:`~dss_airflow.images.rlock`)
    exactly: apt pins from the distribution, or each locked version from the CRAN mirror (current or
    archived), checked after install. The lock and the names (what the smoke test ``library()``s) are
    recorded in the image."""
    lock = f"{CONTEXT_IN_BUILDER}/{R_LOCK_IN_CONTEXT}"
    record = [f"cp {lock} {R_LOCK_FILE}", f"printf '%s\\n' {' '.join(names)} > {R_PACKAGES_FILE}"]
    if cran_url:
        return [f"Rscript -e {shlex.quote(_cran_install(lock, cran_url))}", *record]
    return [
        "apt-get update -qq",
        "if ! DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends"
        f" $(cat {lock}); then",
        '  echo "dss-airflow: the locked R packages could not be installed (above). If apt says a version'
        " was not found, the distribution has moved on: re-resolve the lock with"
        ' \\`dss-airflow images build --refresh\\`" >&2',
        "  exit 3",
        "fi",
        "rm -rf /var/lib/apt/lists/*",
        *record,
    ]


def _cran_install(lock: str, cran_url: str) -> str:
    """R: install each locked ``name==version`` not installed at that version, in the lock's order
    (dependencies first), from the mirror's current packages or its Archive/, and check the result."""
    return f"""
repo <- "{cran_url}"
fetch <- function(p, v) {{
  file <- file.path(tempdir(), sprintf("%s_%s.tar.gz", p, v))
  urls <- c(sprintf("%s/src/contrib/%s_%s.tar.gz", repo, p, v),
            sprintf("%s/src/contrib/Archive/%s/%s_%s.tar.gz", repo, p, p, v))
  for (url in urls) {{
    ok <- tryCatch(download.file(url, file, quiet = TRUE) == 0, error = function(e) FALSE,
                   warning = function(w) FALSE)
    if (ok) return(file)
  }}
  stop(sprintf("R package %s %s is neither current nor archived at %s: re-resolve the lock with ",
               p, v, repo), "`dss-airflow images build --refresh`", call. = FALSE)
}}
for (line in readLines("{lock}")) {{
  pin <- strsplit(line, "==", fixed = TRUE)[[1]]
  have <- installed.packages()[, "Version"]
  if (!is.na(have[pin[1]]) && have[[pin[1]]] == pin[2]) next
  install.packages(fetch(pin[1], pin[2]), repos = NULL, type = "source")
  got <- tryCatch(as.character(packageVersion(pin[1])), error = function(e) "nothing")
  if (got != pin[2]) stop(sprintf("installing R package %s %s gave %s", pin[1], pin[2], got), call. = FALSE)
}}
"""


def update_script(*, removed: Sequence[str], index_url: str | None = None) -> str:
    """Incremental build, on the env's previous image: drop what left the lock, install what changed.

    Used only when base digest, resources, R packages and template are unchanged, so the result has the
    same content as a full build of the new lock, in one small layer.
    """
    index = f" --index-url {shlex.quote(index_url)}" if index_url else ""
    lines = _header()
    if removed:
        names = " ".join(shlex.quote(name) for name in sorted(removed))
        lines.append(f"{UV_IN_BUILDER} pip uninstall --python {ENV_PYTHON} {names}")
    lines += _install_lock(index)
    return "\n".join(lines) + "\n"


def commit_changes(
    *,
    env_name: str,
    labels: Mapping[str, str],
    user: str,
    workdir: str,
    with_resources: bool,
) -> list[str]:
    """Dockerfile instructions applied by ``docker commit``: runtime env, labels, and the non-root user."""
    env = [
        f"ENV PATH={ENV_PREFIX}/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
        f"ENV VIRTUAL_ENV={ENV_PREFIX}",
        f"ENV DSS_CODE_ENV={env_name}",
    ]
    if with_resources:
        env.append(f"ENV DSS_RESOURCES_DIR={RESOURCES_DIR}")
    label_args = " ".join(f'{key}="{value}"' for key, value in sorted(labels.items()))
    return [*env, f"LABEL {label_args}", f"USER {user}", f"WORKDIR {workdir}", f'CMD ["{ENV_PYTHON}"]']
