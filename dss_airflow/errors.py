"""Exception root of dss_airflow.

Every error the package raises derives from :class:`DSSAirflowError`, so a DAG author or an admin script can
catch one class. Configuration errors carry enough context to fix the YAML without reading our code: the
file, the field path, the offending value, the fix and the closest valid name.
"""

from __future__ import annotations

import difflib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from collections.abc import Iterable
    from pathlib import Path


class DSSAirflowError(Exception):
    """Root of every error dss_airflow raises."""


def closest_name(value: str, candidates: Iterable[str]) -> str | None:
    """The candidate a typo most likely meant, or None when nothing is close."""
    matches = difflib.get_close_matches(value, sorted(candidates), n=1, cutoff=0.6)
    return matches[0] if matches else None


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


class ImageNotBuiltError(DSSAirflowError):
    """No image exists yet for a (code env, execution config) pair."""


class ExecutionError(DSSAirflowError):
    """A recipe or container failed at run time; ``logs`` holds the tail of its output."""

    def __init__(self, message: str, *, logs: list[str] | None = None, exit_code: int | None = None) -> None:
        super().__init__(message)
        self.logs = logs or []
        self.exit_code = exit_code
