"""Every exception dss_airflow raises on the Airflow side, under one root.

Every error derives from :class:`DSSAirflowError`, so a DAG author or an admin script can catch one class.
Configuration errors carry enough context to fix the YAML without reading our code: the file, the field
path, the offending value, the fix and the closest valid name. Errors about something that ran (a task, a
build) keep the tail of its output in one attribute, ``logs``.

(The code that runs *inside* code envs, ``dss_airflow/runtime``, is a separate standard-library program for
any Python of the env; its own few exceptions live in ``runtime/errors.py``.)
"""

from __future__ import annotations

import difflib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from collections.abc import Iterable, Sequence
    from pathlib import Path


class DSSAirflowError(Exception):
    """Root of every error dss_airflow raises."""


def closest_name(value: str, candidates: Iterable[str]) -> str | None:
    """The candidate a typo most likely meant, or None when nothing is close."""
    matches = difflib.get_close_matches(value, sorted(candidates), n=1, cutoff=0.6)
    return matches[0] if matches else None


# --------------------------------------------------------------------------------------- config
class ConfigError(DSSAirflowError):
    """A bad value in the YAML config, an operator argument or a run conf.

    The message reads ``<file>:<line>: <field path>: <problem> (got <value>). <fix> Did you mean '<x>'?``
    and each part is also kept as an attribute for programs (CLI, tests, UI).
    """

    def __init__(
        self,
        problem: str,
        *,
        file: Path | str | None = None,
        line: int | None = None,
        field: str | None = None,
        value: Any = None,
        fix: str | None = None,
        suggestion: str | None = None,
        show_value: bool = True,
    ) -> None:
        self.problem = problem
        self.file = str(file) if file is not None else None
        self.line = line
        self.field = field
        self.value = value
        self.fix = fix
        self.suggestion = suggestion
        self.show_value = show_value
        super().__init__(self._render())

    def _render(self) -> str:
        where = ""
        if self.file:
            where = f"{self.file}:{self.line}: " if self.line else f"{self.file}: "
        text = where + (f"{self.field}: " if self.field else "") + self.problem
        if self.show_value and self.value is not None:
            text += f" (got {self.value!r})"
        text += "."
        if self.fix:
            fix = self.fix.rstrip(".")
            text += f" {fix[:1].upper()}{fix[1:]}."
        if self.suggestion:
            text += f" Did you mean {self.suggestion!r}?"
        return text


class InvalidConfigError(ConfigError):
    """Several problems found in one config directory; ``errors`` lists them one by one."""

    def __init__(self, config_dir: Path, errors: list[ConfigError]) -> None:
        self.errors = errors
        self.config_dir = config_dir
        lines = "\n".join(f"  - {error}" for error in errors)
        DSSAirflowError.__init__(self, f"{len(errors)} problem(s) in config directory {config_dir}:\n{lines}")


class UnknownNameError(ConfigError):
    """A name (execution config, code env, managed folder, project) that the catalog does not define."""

    def __init__(
        self,
        kind: str,
        name: str,
        known: Iterable[str],
        *,
        field: str | None = None,
        file: Path | str | None = None,
        line: int | None = None,
    ) -> None:
        known = sorted(known)
        listing = ", ".join(repr(k) for k in known) if known else "none are defined"
        super().__init__(
            f"unknown {kind} {name!r}",
            field=field,
            file=file,
            line=line,
            fix=f"Use one of: {listing}",
            suggestion=closest_name(name, known),
            show_value=False,
        )
        self.kind = kind
        self.name = name


class PermissionDeniedError(ConfigError):
    """A project is not allowed to use an execution config (DSS's ERR_CONTAINER_CONF_NO_USAGE_PERMISSION)."""


# ------------------------------------------------------------------------------------------ runs
class ExecutionError(DSSAirflowError):
    """A recipe or container failed at run time; ``logs`` holds the tail of its output."""

    def __init__(
        self,
        message: str,
        *,
        logs: Sequence[str] | None = None,
        exit_code: int | None = None,
        cause: str | None = None,
        out_of_memory: bool = False,
    ) -> None:
        super().__init__(message)
        self.logs = list(logs or [])
        self.exit_code = exit_code
        #: Why it ended, when something outside the recipe ended it (out of memory, killed, stopped,
        #: removed, daemon lost): the task's error then says this, not what the recipe saw (SIGTERM).
        self.cause = cause
        #: The engine killed it for exceeding its memory limit (recorded with its resource usage).
        self.out_of_memory = out_of_memory


class DaemonUnreachableError(ExecutionError):
    """A Docker daemon that cannot be used at all: unreachable, TLS refused, bad certificates.

    Raised before anything runs (a task's container, a build), with the execution config (None for the
    build daemon), the host, the reason and the fix, so the planner (which marks only that daemon's pairs
    "unknown") and the backends report it the same way.
    """

    def __init__(self, config: str | None, host: str, reason: str, *, fix: str) -> None:
        self.config = config
        self.host = host
        self.reason = reason
        self.fix = fix
        whose = f"execution config {config!r}" if config else "the build daemon"
        super().__init__(f"Docker daemon {host} of {whose} is unusable: {reason}. {fix}")


def _undefined_in_airflow(kind: str, names: Sequence[str], command: str, env_prefix: str) -> str:
    """One sentence of MissingSecretError: the names, and how to define the first of them."""
    if not names:
        return ""
    example = names[0]
    return (
        f"{kind} {', '.join(repr(name) for name in names)}, which Airflow does not define: add each before "
        f"the task runs, e.g. `{command.format(example)}` (or {env_prefix}{example.upper()} on the workers, "
        "or a secrets backend)"
    )


class MissingSecretError(DSSAirflowError):
    """A task declares connections or variables that Airflow does not define: raised on the worker before
    anything starts, naming the task, each missing name and how to add it."""

    def __init__(self, task_id: str, connections: Sequence[str], variables: Sequence[str]) -> None:
        self.task_id = task_id
        self.connections = list(connections)
        self.variables = list(variables)
        add_connection = (
            "airflow connections add {} --conn-uri 'postgresql://LOGIN:PASSWORD@HOST:5432/SCHEMA'"
        )
        set_variable = "airflow variables set {} VALUE"
        problems = [
            _undefined_in_airflow("connection(s)", self.connections, add_connection, "AIRFLOW_CONN_"),
            _undefined_in_airflow("variable(s)", self.variables, set_variable, "AIRFLOW_VAR_"),
        ]
        problems = [problem for problem in problems if problem]
        super().__init__(f"task {task_id!r} declares " + "; and ".join(problems) + ". Nothing was started.")


class EnvBuildError(DSSAirflowError):
    """uv could not create or populate a code env's local virtualenv."""


# ---------------------------------------------------------------------------------------- images
class ImageNotBuiltError(DSSAirflowError):
    """No image exists yet for a (code env, execution config) pair."""


class LockError(DSSAirflowError):
    """uv could not resolve a package list (unknown package, conflicting pins, no wheel for the platform)."""


class ImageBuildError(DSSAirflowError):
    """A base or code-env image could not be built, smoke-tested or pushed; the previous image stays.

    ``summary`` is the one-line reason, ``logs`` the tail of the failing tool's output (appended to the
    message when ``show_logs``), ``log_file`` the builder's local log while it ran (the ledger then keeps
    its content under the pair's ``last_log``: ``dss-airflow images log``).
    """

    def __init__(
        self,
        message: str,
        *,
        logs: Sequence[str] = (),
        log_file: Path | None = None,
        show_logs: bool = False,
    ) -> None:
        self.summary = message
        self.logs = list(logs)
        self.log_file = log_file
        if show_logs and self.logs:
            message = f"{message}\n--- last {len(self.logs)} lines of output ---\n" + "\n".join(self.logs)
        super().__init__(message)


class StateStoreError(DSSAirflowError):
    """The image ledger's database cannot be used: an undefined ``state_conn_id``, a server that is down or
    refuses us, a wrong password. The message names the connection, host:port and the fix, never the
    password; ``conn_id`` is None for the single-machine SQLite file."""

    def __init__(self, message: str, *, conn_id: str | None = None) -> None:
        super().__init__(message)
        self.conn_id = conn_id


class BootstrapUnavailableError(ImageBuildError):
    """This machine cannot bootstrap at all (not root, no debootstrap, no engine, no mirror): an environment
    problem to fix or skip on, as opposed to a build that broke."""


class MirrorNotFoundError(BootstrapUnavailableError, RuntimeError):
    """No usable http(s) Debian mirror in the apt sources."""
