"""Local backend: the task runs as a subprocess of the worker, in a virtualenv built from its code env.

This is the embedded default for machines with no container engine. Virtualenvs are built with uv and
cached by a hash of (python version, package list), so a second task on the same env starts at once; a
lock makes concurrent tasks wait for one build instead of racing, and a ready marker means an interrupted
build is redone rather than used half-installed.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import logging
import os
import shutil
import signal
import subprocess
from collections import deque
from typing import TYPE_CHECKING, Any

from dss_airflow.backends.base import WorkerBackend, usage_snapshot
from dss_airflow.errors import EnvBuildError, ExecutionError
from dss_airflow.spec import build_spec
from dss_airflow.usage import Usage, last_reading_text

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping, Sequence
    from pathlib import Path

    from airflow.sdk import Context

    from dss_airflow.backends.base import TaskLog
    from dss_airflow.config.catalog import Catalog
    from dss_airflow.config.resolve import ResolvedExecution
    from dss_airflow.spec import ContainerSpec, TaskRun

log = logging.getLogger(__name__)

READY_MARKER = ".dss-ready"
#: Worker variables a recipe legitimately needs; everything else (Airflow's own secrets) stays out.
PASSED_THROUGH = (
    "PATH", "LANG", "LC_ALL", "TZ", "TMPDIR", "HOME", "USER",
    "SSL_CERT_FILE", "SSL_CERT_DIR", "REQUESTS_CA_BUNDLE",
    "HTTP_PROXY", "HTTPS_PROXY", "NO_PROXY", "http_proxy", "https_proxy", "no_proxy",
)  # fmt: skip
LOG_TAIL = 50


#: Bump when the way local envs are built changes, so existing ones are rebuilt (2: bytecode compiled).
LOCAL_ENV_TEMPLATE = 2


def env_key(python: str, requirements: Sequence[str]) -> str:
    """Identity of a local env: the same python and package list share one virtualenv."""
    payload = json.dumps(
        {"python": python, "requirements": sorted(requirements), "template": LOCAL_ENV_TEMPLATE},
        sort_keys=True,
    )
    return hashlib.sha256(payload.encode()).hexdigest()[:16]


def _uv() -> str:
    from uv import find_uv_bin

    return str(find_uv_bin())


def _run_uv(args: list[str], what: str) -> None:
    env = {**os.environ, "UV_PYTHON_DOWNLOADS": "never", "UV_NO_PROGRESS": "1"}
    completed = subprocess.run([_uv(), *args], capture_output=True, text=True, env=env, check=False)
    for line in (completed.stdout + completed.stderr).splitlines():
        log.info("uv: %s", line)
    if completed.returncode != 0:
        tail = "\n".join((completed.stdout + completed.stderr).splitlines()[-20:])
        raise EnvBuildError(f"{what} failed (uv exit code {completed.returncode}):\n{tail}")


def ensure_venv(env_name: str, python: str, requirements: Sequence[str], cache_root: Path) -> Path:
    """The python executable of the env's virtualenv, building it once per (python, packages)."""
    venvs = cache_root / "venvs"
    venvs.mkdir(parents=True, exist_ok=True)
    key = env_key(python, requirements)
    target = venvs / f"{env_name}-{key}"
    executable = target / "bin" / "python"
    with open(venvs / f"{env_name}-{key}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if (target / READY_MARKER).is_file():
            return executable
        if target.exists():
            log.warning("Removing incomplete virtualenv %s (an earlier build was interrupted)", target)
            shutil.rmtree(target)
        log.info(
            "Building local env %r (python %s, %d packages) in %s",
            env_name,
            python,
            len(requirements),
            target,
        )
        _run_uv(
            ["venv", "--python", python, "--quiet", str(target)], f"creating the virtualenv of {env_name!r}"
        )
        if requirements:
            requirements_file = target / "requirements.txt"
            requirements_file.write_text("\n".join(requirements) + "\n", encoding="utf-8")
            _run_uv(
                # Bytecode compiled once here: tasks run with PYTHONDONTWRITEBYTECODE, so without it every
                # task would compile pandas or scikit-learn again on import (seconds per task).
                [
                    "pip",
                    "install",
                    "--compile-bytecode",
                    "--python",
                    str(executable),
                    "-r",
                    str(requirements_file),
                ],
                f"installing the packages of code env {env_name!r}",
            )
        (target / READY_MARKER).write_text(json.dumps({"requirements": list(requirements)}), encoding="utf-8")
    return executable


def venv_python(catalog: Catalog, resolved: ResolvedExecution) -> Path:
    """The python of the resolved code env's local virtualenv (built on first use)."""
    from dss_airflow.settings import cache_dir

    return ensure_venv(
        resolved.code_env_name,
        resolved.code_env.python,
        catalog.requirements(resolved.code_env_name),
        cache_dir(),
    )


def stream_process(
    argv: Sequence[str],
    *,
    env: Mapping[str, str],
    logger: TaskLog,
    cwd: str | None = None,
    started: Callable[[subprocess.Popen[str]], None] | None = None,
) -> tuple[int, list[str]]:
    """Run ``argv`` in its own process group, every output line to the task log; (exit code, log tail).

    ``started`` receives the process as soon as it exists, so ``on_kill`` (another thread) can stop it.
    """
    tail: deque[str] = deque(maxlen=LOG_TAIL)
    process = subprocess.Popen(
        list(argv),
        cwd=cwd,
        env=dict(env),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        bufsize=1,
        start_new_session=True,  # its own process group, so on_kill stops the recipe's children too
    )
    if started is not None:
        started(process)
    assert process.stdout is not None
    for line in process.stdout:
        tail.append(line.rstrip("\n"))
        logger.info("%s", tail[-1])
    return process.wait(), list(tail)


def stop_process_group(process: subprocess.Popen[str] | None, logger: TaskLog) -> None:
    """SIGTERM the process group, SIGKILL after 10 s."""
    if process is None or process.poll() is not None:
        return
    logger.info("Stopping process group %d", process.pid)
    try:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def worker_env(names: Sequence[str] = ()) -> dict[str, str]:
    """The worker's variables a task may see: PASSED_THROUGH and ``names``; Airflow's own stay out."""
    return {name: os.environ[name] for name in (*PASSED_THROUGH, *names) if name in os.environ}


class LocalBackend(WorkerBackend):
    """Runs the task as a subprocess of the worker, in the code env's virtualenv (built once, cached)."""

    layout = "host"

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._process: subprocess.Popen[str] | None = None

    def prepare(self, run: TaskRun) -> ContainerSpec:
        python = venv_python(self.catalog, self.resolved)
        return build_spec(run, layout="host", image=None, local_python=str(python))

    def execute(self, spec: ContainerSpec, context: Context) -> None:
        env = {**worker_env(), **spec.env}
        self.log.info("Running locally: %s", " ".join(spec.command))
        code, tail = stream_process(
            spec.command, env=env, logger=self.log, cwd=spec.workdir, started=self._started
        )
        if code == -signal.SIGKILL and not self._killed:  # no limit of ours: the host's OOM killer, or -9
            seen = Usage.from_reading(usage_snapshot(spec))
            reading = f"; {last_reading_text(seen)}" if seen else ""
            cause = f"the recipe process was killed (SIGKILL: the host's OOM killer, or kill -9{reading})"
            raise ExecutionError(cause, logs=tail, exit_code=code, cause=cause)
        if code != 0:
            raise ExecutionError(f"recipe process exited with code {code}", logs=tail, exit_code=code)

    def _started(self, process: subprocess.Popen[str]) -> None:
        self._process = process

    def kill(self) -> None:
        super().kill()
        stop_process_group(self._process, self.log)
