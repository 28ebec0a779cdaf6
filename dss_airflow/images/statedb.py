"""The database under the image ledger: a SQLite file on one machine, PostgreSQL for several workers.

This is the plumbing of :mod:`~dss_airflow.images.ledger`: the tables, one engine per URL and process
(tables created on its first use only, since tasks open the ledger when they start), transactions whose
writers are serialised per env, the build lock that works across hosts, and errors that name the
connection and the fix instead of a driver traceback. Passwords stay in the Airflow connection: URLs are
only ever shown with the password hidden.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import logging
import os
import threading
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa
import sqlalchemy.exc
from sqlalchemy import event
from sqlalchemy.dialects import postgresql, sqlite

from dss_airflow.errors import StateStoreError

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator
    from pathlib import Path

log = logging.getLogger(__name__)

#: Bump with a migration in ``_initialise`` when the tables change.
SCHEMA_VERSION = 1
SQLITE_FILE = "ledger.sqlite"
#: Seconds a SQLite writer waits for another one (a switch is a few milliseconds of work).
SQLITE_BUSY_SECONDS = 60
#: Seconds to wait for a PostgreSQL server before saying it is unreachable (the connection may set its own).
CONNECT_TIMEOUT_SECONDS = 10
#: Connection extras passed on to libpq; others (Airflow hook options) are not connection parameters.
LIBPQ_EXTRAS = (
    "sslmode",
    "sslcert",
    "sslkey",
    "sslrootcert",
    "connect_timeout",
    "application_name",
    "target_session_attrs",
)

metadata = sa.MetaData()
schema_version = sa.Table(
    "dss_schema_version",
    metadata,
    sa.Column("component", sa.String(64), primary_key=True),
    sa.Column("version", sa.Integer, nullable=False),
)
#: One row per code env: the row writers lock, so an env's read-modify-write is atomic.
envs = sa.Table("dss_image_envs", metadata, sa.Column("env", sa.String(255), primary_key=True))
#: One row per (code env, config): the pair's state as JSON (current, previous, status, last log).
pairs = sa.Table(
    "dss_image_pairs",
    metadata,
    sa.Column("env", sa.String(255), primary_key=True),
    sa.Column("config", sa.String(255), primary_key=True),
    sa.Column("state", sa.Text, nullable=False),
)
package_locks = sa.Table(
    "dss_package_locks",
    metadata,
    sa.Column("spec_hash", sa.String(128), primary_key=True),
    sa.Column("text", sa.Text, nullable=False),
)
build_logs = sa.Table(
    "dss_build_logs",
    metadata,
    sa.Column("name", sa.String(255), primary_key=True),
    sa.Column("text", sa.Text, nullable=False),
    sa.Column("stored_at", sa.String(40), nullable=False),
)

_ENGINES: dict[tuple[int, str], sa.Engine] = {}
_ENGINES_LOCK = threading.Lock()


@dataclass(frozen=True)
class Place:
    """Which store this is, for messages: never its password."""

    where: str
    conn_id: str | None = None
    directory: Path | None = None  # SQLite: the database's directory (the build locks are files there)


@dataclass(frozen=True)
class StateDB:
    """An initialised engine and where it points."""

    engine: sa.Engine
    place: Place

    @property
    def is_sqlite(self) -> bool:
        return self.engine.dialect.name == "sqlite"

    @contextlib.contextmanager
    def transaction(self, *, write: bool = False) -> Iterator[sa.Connection]:
        """One transaction; ``write`` takes SQLite's write lock up front (``BEGIN IMMEDIATE``), so two
        writers queue instead of one failing when it upgrades its read lock."""
        with (
            _explained(self.place),
            self.engine.connect() as conn,
            conn.execution_options(dss_write=write).begin(),
        ):
            yield conn

    @contextlib.contextmanager
    def build_lock(self, name: str) -> Iterator[None]:
        """Held while one builder works on ``name``: a file lock next to a SQLite file, a PostgreSQL
        session advisory lock otherwise (released with its connection if the builder dies)."""
        if self.is_sqlite:
            assert self.place.directory is not None
            with open(self.place.directory / f"build-{name}.lock", "w") as handle:
                fcntl.flock(handle, fcntl.LOCK_EX)
                yield
            return
        key = advisory_key(f"dss_airflow build {name}")
        with _explained(self.place):
            conn = self.engine.connect().execution_options(isolation_level="AUTOCOMMIT")
        try:
            with _explained(self.place):
                conn.execute(sa.text("SELECT pg_advisory_lock(:key)"), {"key": key})
            yield
        finally:  # the connection goes back to the pool: it must not keep the lock
            try:
                conn.execute(sa.text("SELECT pg_advisory_unlock(:key)"), {"key": key})
            except sqlalchemy.exc.DBAPIError:
                conn.invalidate()  # a closed session holds no lock
            conn.close()


def advisory_key(name: str) -> int:
    """A signed 64-bit key for ``pg_advisory_lock``: the same on every host and Python."""
    return int.from_bytes(hashlib.sha256(name.encode()).digest()[:8], "big", signed=True)


def upsert(conn: sa.Connection, table: sa.Table, values: dict[str, Any]) -> None:
    """Insert a row or replace the non-key columns of the existing one."""
    dialect_insert = postgresql.insert if conn.dialect.name == "postgresql" else sqlite.insert
    keys = [column.name for column in table.primary_key.columns]
    statement = dialect_insert(table).values(values)
    updates = {name: value for name, value in values.items() if name not in keys}
    conn.execute(
        statement.on_conflict_do_update(index_elements=keys, set_=updates)
        if updates
        else statement.on_conflict_do_nothing(index_elements=keys)
    )


# -------------------------------------------------------------------------------------------- opening
def sqlite_db(directory: Path, first_use: Callable[[sa.Connection], None]) -> StateDB:
    """The single-machine store: ``<directory>/ledger.sqlite`` (WAL: readers never wait for a writer)."""
    path = directory / SQLITE_FILE
    place = Place(f"SQLite file {path}", directory=directory)
    with _explained(place):
        directory.mkdir(parents=True, exist_ok=True)
    return _opened(sa.URL.create("sqlite+pysqlite", database=str(path)), place, first_use)


def postgres_db(conn_id: str, first_use: Callable[[sa.Connection], None]) -> StateDB:
    """The shared store: the PostgreSQL database of Airflow connection ``conn_id``."""
    url = postgres_url(conn_id)
    where = f"Airflow connection {conn_id!r} (PostgreSQL at {url.host}:{url.port or 5432}/{url.database})"
    return _opened(url, Place(where, conn_id=conn_id), first_use)


def postgres_url(conn_id: str) -> sa.URL:
    """The SQLAlchemy URL of an Airflow connection (Task SDK in tasks; env vars or the metadata DB
    elsewhere), for psycopg2."""
    from airflow.sdk import BaseHook
    from airflow.sdk.exceptions import AirflowNotFoundException

    try:
        conn = BaseHook.get_connection(conn_id)
    except AirflowNotFoundException as exc:
        raise StateStoreError(
            f"the build-state connection {conn_id!r} ([dss_airflow] state_conn_id or "
            f"$DSS_AIRFLOW_STATE_CONN_ID) is not defined. Add it, e.g. `airflow connections add {conn_id} "
            "--conn-uri postgresql://USER:PASSWORD@HOST:5432/DATABASE` (or a secrets backend, or "
            f"AIRFLOW_CONN_{conn_id.upper()}), or unset state_conn_id to keep the state in SQLite under "
            "state_dir on one machine",
            conn_id=conn_id,
        ) from exc
    if conn.conn_type not in ("postgres", "postgresql"):
        raise StateStoreError(
            f"the build-state connection {conn_id!r} is of type {conn.conn_type!r}: it must be a "
            "PostgreSQL connection (conn type 'postgres')",
            conn_id=conn_id,
        )
    extras = conn.extra_dejson
    query = {key: str(extras[key]) for key in LIBPQ_EXTRAS if key in extras}
    query.setdefault("connect_timeout", str(CONNECT_TIMEOUT_SECONDS))
    return sa.URL.create(
        "postgresql+psycopg2",
        username=conn.login or None,
        password=conn.password or None,
        host=conn.host or None,
        port=conn.port or None,
        database=conn.schema or None,
        query=query,
    )


def _opened(url: sa.URL, place: Place, first_use: Callable[[sa.Connection], None]) -> StateDB:
    """The process's engine for ``url``, created and initialised on first use (a fork gets its own)."""
    key = (os.getpid(), url.render_as_string(hide_password=False))
    with _ENGINES_LOCK:
        engine = _ENGINES.get(key)
        if engine is not None:
            return StateDB(engine, place)
        log.debug("opening the image ledger at %s", url.render_as_string(hide_password=True))
        db = StateDB(_create_engine(url), place)
        try:
            with db.transaction() as conn:  # a read: every process but the first finds the store ready
                ready = _is_ready(conn)
            if not ready:
                with db.transaction(write=True) as conn:
                    _initialise(conn, place.where)
                    first_use(conn)
        except BaseException:
            db.engine.dispose()
            raise
        _ENGINES[key] = db.engine
        return db


def _create_engine(url: sa.URL) -> sa.Engine:
    if url.get_backend_name() != "sqlite":
        return sa.create_engine(url, pool_pre_ping=True, pool_size=2, max_overflow=8)
    engine = sa.create_engine(url, connect_args={"timeout": SQLITE_BUSY_SECONDS, "check_same_thread": False})

    @event.listens_for(engine, "connect")
    def _sqlite_connect(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.isolation_level = None  # we emit BEGIN ourselves (below)
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_SECONDS * 1000}")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _sqlite_begin(conn: sa.Connection) -> None:
        write = conn.get_execution_options().get("dss_write", False)
        conn.exec_driver_sql("BEGIN IMMEDIATE" if write else "BEGIN")

    return engine


def _is_ready(conn: sa.Connection) -> bool:
    """Every table exists and the schema version is one this release reads (no write lock taken)."""
    if not set(metadata.tables) <= set(sa.inspect(conn).get_table_names()):
        return False
    found = conn.execute(
        sa.select(schema_version.c.version).where(schema_version.c.component == "ledger")
    ).scalar()
    return found is not None and found <= SCHEMA_VERSION


def _initialise(conn: sa.Connection, where: str) -> None:
    """Tables (idempotent, also when several workers start at once) and the schema version."""
    if conn.dialect.name == "postgresql":  # concurrent CREATE TABLE IF NOT EXISTS can still collide
        conn.execute(sa.text("SELECT pg_advisory_xact_lock(:key)"), {"key": advisory_key("dss_airflow ddl")})
    for table in metadata.sorted_tables:
        conn.execute(sa.schema.CreateTable(table, if_not_exists=True))
    found = conn.execute(
        sa.select(schema_version.c.version).where(schema_version.c.component == "ledger")
    ).scalar()
    if found is None:
        conn.execute(sa.insert(schema_version).values(component="ledger", version=SCHEMA_VERSION))
    elif found > SCHEMA_VERSION:
        raise StateStoreError(
            f"the image ledger in {where} has schema version {found}, newer than this dss_airflow's "
            f"({SCHEMA_VERSION}): upgrade dss_airflow on this host"
        )


@contextlib.contextmanager
def _explained(place: Place) -> Iterator[None]:
    """Database failures as one error naming the store, its address and the fix (no password)."""
    try:
        yield
    except (sqlalchemy.exc.OperationalError, sqlalchemy.exc.InterfaceError, OSError) as exc:
        orig = getattr(exc, "orig", None) or exc
        reason = (str(orig).strip().splitlines() or [type(orig).__name__])[0]
        raise StateStoreError(
            f"cannot use the image ledger in {place.where}: {reason}. {_fix(place, reason)}",
            conn_id=place.conn_id,
        ) from exc


def _fix(place: Place, reason: str) -> str:
    if place.conn_id is None:
        return f"Check that {place.directory} is on a local disk and that this user may write there"
    if "password authentication failed" in reason or "no password supplied" in reason:
        return (
            f"Fix the login or password of Airflow connection {place.conn_id!r} "
            f"(`airflow connections get {place.conn_id}` shows it without the password)"
        )
    if "does not exist" in reason:
        return f"Create that role or database, or fix the login or schema of connection {place.conn_id!r}"
    return (
        f"Check that PostgreSQL runs there and accepts connections from this host (listen_addresses, "
        f"pg_hba.conf, firewall), or fix the host and port of Airflow connection {place.conn_id!r}"
    )
