"""Connections and variables a task declares (``connections=["warehouse"]``), delivered to its recipe.

The operator holds only names, checked for shape when the DAG is parsed (not for existence: a connection
may be added later). On the worker, when the task runs and before anything starts, the values are read
from Airflow (``Connection.get``/``Variable.get``: the metadata database, ``AIRFLOW_CONN_*`` /
``AIRFLOW_VAR_*`` or a secrets backend), registered with Airflow's secrets masker, and travel to the task as
one JSON file that ``dss_recipe.connection(name)`` / ``variable(name)`` read. A missing one is a
:class:`~dss_airflow.errors.MissingSecretError` naming it and how to add it.

Never an environment variable (``docker inspect``, ``/proc/*/environ``, the pod spec), argv, a label, a
template field, the runner's context or XCom: each backend delivers the file its own way
(``ContainerSpec.secrets``): local, 0600 in the run directory (removed, or swept, with it); Docker, put into
the created container's own filesystem before it starts (never on the worker's disk), owned by the
container's user, 0400, gone with the container; Kubernetes, a Secret mounted read-only, owned by the pod
and deleted after it.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from dss_airflow.errors import ConfigError, MissingSecretError

if TYPE_CHECKING:
    from collections.abc import Iterable, Mapping

#: Airflow's own shape for connection ids and variable keys (``airflow.models.base.validate_key``).
_NAME = re.compile(r"^[A-Za-z0-9_.-]{1,250}$")
#: The fields of a connection as the recipe sees them.
CONNECTION_FIELDS = ("conn_type", "host", "login", "password", "schema", "port", "extra")


def _declared(names: str | Iterable[str] | None, field_name: str) -> tuple[str, ...]:
    if names is None:
        return ()
    listed = [names] if isinstance(names, str) else list(names)
    for name in listed:
        if not isinstance(name, str) or not _NAME.match(name):
            raise ConfigError(
                "not an Airflow connection id or variable key",
                field=field_name,
                value=name,
                fix=f"name them as Airflow does (letters, digits, '_', '.', '-'), e.g. {field_name}="
                "['warehouse']; names are not templated: the values are read from Airflow when the task runs",
            )
    return tuple(dict.fromkeys(listed))


@dataclass(frozen=True)
class SecretRefs:
    """The names a task declared; safe to show anywhere (labels, logs, the UI)."""

    connections: tuple[str, ...] = ()
    variables: tuple[str, ...] = ()

    @classmethod
    def declared(
        cls, connections: str | Iterable[str] | None, variables: str | Iterable[str] | None
    ) -> SecretRefs:
        """The operator's ``connections``/``variables``, checked for shape (parse time)."""
        return cls(_declared(connections, "connections"), _declared(variables, "variables"))

    def __bool__(self) -> bool:
        return bool(self.connections or self.variables)


#: A task that declares none.
NO_SECRETS = SecretRefs()


@dataclass(frozen=True, repr=False)
class TaskSecrets:
    """The values of a task's declared connections and variables. Its repr shows the names only, so a
    spec or run printed in a log or a traceback never shows a value."""

    connections: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    variables: Mapping[str, str] = field(default_factory=dict)

    def __repr__(self) -> str:
        return f"TaskSecrets(connections={sorted(self.connections)}, variables={sorted(self.variables)})"

    @classmethod
    def placeholder(cls, refs: SecretRefs) -> TaskSecrets:
        """Empty values under the declared names (``dss-airflow k8s render``: the shape, never a value)."""
        empty = dict.fromkeys(CONNECTION_FIELDS)
        return cls(
            {name: {**empty, "extra": {}} for name in refs.connections}, dict.fromkeys(refs.variables, "")
        )

    def file_content(self) -> bytes:
        """The JSON file the runtime reads (``dss_recipe.connection``, ``variable``)."""
        payload = {"connections": dict(self.connections), "variables": dict(self.variables)}
        return json.dumps(payload, sort_keys=True, default=str).encode()


def connection_record(conn: Any) -> dict[str, Any]:
    """An Airflow connection as the recipe sees it (``extra`` parsed into a dict)."""
    return {
        "conn_type": conn.conn_type,
        "host": conn.host,
        "login": conn.login,
        "password": conn.password,
        "schema": conn.schema,
        "port": conn.port,
        "extra": conn.extra_dejson,
    }


def fetch_secrets(refs: SecretRefs, task_id: str) -> TaskSecrets | None:
    """The declared values, read from Airflow on the worker and masked in the task's log from now on
    (passwords, variable values, extras under secret-sounding keys); every missing name in one
    :class:`MissingSecretError`, before anything starts."""
    if not refs:
        return None
    from airflow.sdk import Connection, Variable
    from airflow.sdk.exceptions import AirflowNotFoundException, AirflowRuntimeError, ErrorType
    from airflow.sdk.log import mask_secret

    connections: dict[str, dict[str, Any]] = {}
    variables: dict[str, str] = {}
    missing_connections: list[str] = []
    missing_variables: list[str] = []
    for name in refs.connections:
        try:
            connections[name] = connection_record(Connection.get(name))
        except AirflowNotFoundException:
            missing_connections.append(name)
    for name in refs.variables:
        try:
            variables[name] = str(Variable.get(name))
        except AirflowRuntimeError as exc:
            if exc.error.error != ErrorType.VARIABLE_NOT_FOUND:
                raise
            missing_variables.append(name)
    if missing_connections or missing_variables:
        raise MissingSecretError(task_id, missing_connections, missing_variables)
    for record in connections.values():
        if record["password"]:
            mask_secret(record["password"])
        mask_secret(record["extra"])  # as Airflow does: the values of keys that sound secret (token, ...)
    for value in variables.values():
        mask_secret(value)  # declared to be delivered as a secret: masked whatever its key
    return TaskSecrets(connections, variables)


def redacted(value: Any) -> Any:
    """``value`` (an XCom, an error) with every masked secret in its strings replaced by ``***`` — by
    Airflow's masker, which knows the task's secrets once :func:`fetch_secrets` ran. Only values are
    rewritten: keys that merely sound sensitive ("password_sha256") stay as the recipe wrote them."""
    from airflow.sdk._shared.secrets_masker import redact

    if isinstance(value, str):
        return redact(value)
    if isinstance(value, dict):
        return {key: redacted(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [redacted(item) for item in value]
    return value
