"""Durable build state of code-env images, shared by the CLI, the sensor, the operators and every worker.

For each (code env, execution or spark config) pair the ledger holds the *current* image (what tasks
run), the previous ones (for rollback), the last build's status, error and log; next to them, the
resolved package lists by spec hash and the build logs by name. It lives in a database
(:mod:`~dss_airflow.images.statedb`): a SQLite file under ``state_dir`` on one machine, or PostgreSQL
through the Airflow connection ``state_conn_id`` when several workers build and run images. Writers hold
the env's row lock for their read-modify-write, so a reader — a task starting while a rebuild runs — sees
the old state or the new one, never half of one; builders of one env take turns through a build lock that
also works across hosts. The state transitions (switch, failure, rollback) and which superseded images
may go are here too; removing an image is the builder's business.
"""

from __future__ import annotations

import contextlib
import json
import logging
import tempfile
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa

from dss_airflow.errors import DSSAirflowError
from dss_airflow.images import statedb
from dss_airflow.images.identity import BuildInputs, Lock

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable, Iterator, Sequence

    from dss_airflow.images.statedb import StateDB

log = logging.getLogger(__name__)

#: How many superseded images are kept for `dss-airflow images rollback`; older ones are removed.
KEEP_PREVIOUS = 3
#: How much of a build log is kept: its end, where the error is.
LOG_KEEP_BYTES = 256 * 1024


@dataclass(frozen=True)
class ImageRecord:
    """One built code-env image and what it was built from."""

    image: str  # what containers run: repository@sha256:... when pushed, else the content-hash tag
    tag: str
    build_hash: str
    spec_hash: str
    lock_sha256: str
    base_digest: str
    resources_mode: str = "none"
    resources_digest: str | None = None
    r_packages: tuple[str, ...] = ()
    template_version: int = 1
    runtime_digest: str | None = None
    r_lock_sha256: str | None = None
    python: str = "/opt/dss/env/bin/python"
    image_id: str = ""
    built_at: str = ""

    def inputs(self) -> BuildInputs:
        return BuildInputs(
            base_digest=self.base_digest,
            lock_sha256=self.lock_sha256,
            r_packages=tuple(self.r_packages),
            resources_mode=self.resources_mode,
            resources_digest=self.resources_digest,
            template_version=self.template_version,
            runtime_digest=self.runtime_digest,
            r_lock_sha256=self.r_lock_sha256,
        )

    @classmethod
    def built_from(
        cls, inputs: BuildInputs, lock: Lock, *, image: str, tag: str, image_id: str = ""
    ) -> ImageRecord:
        """The record of an image built from ``inputs`` (the one place a record is made from a build)."""
        return cls(
            image=image,
            tag=tag,
            image_id=image_id,
            build_hash=inputs.build_hash(),
            spec_hash=lock.spec_hash,
            lock_sha256=lock.sha256,
            base_digest=inputs.base_digest,
            resources_mode=inputs.resources_mode,
            resources_digest=inputs.resources_digest,
            r_packages=inputs.r_packages,
            template_version=inputs.template_version,
            runtime_digest=inputs.runtime_digest,
            r_lock_sha256=inputs.r_lock_sha256,
            built_at=now(),
        )

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> ImageRecord:
        known = {k: v for k, v in data.items() if k in cls.__dataclass_fields__}
        known["r_packages"] = tuple(known.get("r_packages", ()))
        return cls(**known)


@dataclass
class PairState:
    """State of one (code env, execution config) pair."""

    current: ImageRecord | None = None
    previous: list[ImageRecord] = field(default_factory=list)
    status: str = "never built"  # "ok" | "failed" | "never built" | "rolled back"
    last_error: str | None = None
    last_log: str | None = None
    updated_at: str | None = None

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> PairState:
        return cls(
            current=ImageRecord.from_json(data["current"]) if data.get("current") else None,
            previous=[ImageRecord.from_json(item) for item in data.get("previous", [])],
            status=data.get("status", "never built"),
            last_error=data.get("last_error"),
            last_log=data.get("last_log"),
            updated_at=data.get("updated_at"),
        )


def now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


class Ledger:
    """The build state: pairs' records, resolved package locks and build logs, in one database."""

    def __init__(self, db: StateDB) -> None:
        self.db = db

    @classmethod
    def default(cls) -> Ledger:
        """The configured ledger, the one every caller uses: PostgreSQL through ``state_conn_id`` when
        set (several workers), else SQLite under ``state_dir`` (one machine)."""
        from dss_airflow.settings import state_conn_id, state_dir

        conn_id = state_conn_id()
        return cls.shared(conn_id, state_dir()) if conn_id else cls.local(state_dir())

    @classmethod
    def local(cls, directory: Path) -> Ledger:
        """SQLite in ``directory`` (imports the JSON ledger found there, once)."""
        return cls(statedb.sqlite_db(directory, first_use=_json_importer(directory)))

    @classmethod
    def shared(cls, conn_id: str, legacy_dir: Path) -> Ledger:
        """PostgreSQL of Airflow connection ``conn_id`` (imports the JSON ledger of ``legacy_dir`` into an
        empty database, once)."""
        return cls(statedb.postgres_db(conn_id, first_use=_json_importer(legacy_dir)))

    # ---------------------------------------------------------------------------------- records
    def read(self, env: str) -> dict[str, PairState]:
        """All pairs of an env, as committed (a reader never waits for a writer, nor sees half of one)."""
        with self.db.transaction() as conn:
            return _read_pairs(conn, env)

    def pair(self, env: str, config: str) -> PairState:
        with self.db.transaction() as conn:
            found = conn.execute(
                sa.select(statedb.pairs.c.state).where(
                    statedb.pairs.c.env == env, statedb.pairs.c.config == config
                )
            ).scalar()
        return PairState.from_json(json.loads(found)) if found is not None else PairState()

    @contextlib.contextmanager
    def update(self, env: str) -> Iterator[dict[str, PairState]]:
        """Read-modify-write of an env's pairs while holding its row lock; committed on exit, all or
        nothing (an exception in the block writes nothing)."""
        with self.db.transaction(write=True) as conn:
            statedb.upsert(conn, statedb.envs, {"env": env})
            conn.execute(sa.select(statedb.envs.c.env).where(statedb.envs.c.env == env).with_for_update())
            pairs = _read_pairs(conn, env)
            before = {config: _pair_text(state) for config, state in pairs.items()}
            yield pairs
            for config in before.keys() - pairs.keys():
                conn.execute(
                    sa.delete(statedb.pairs).where(
                        statedb.pairs.c.env == env, statedb.pairs.c.config == config
                    )
                )
            for config, state in pairs.items():
                text = _pair_text(state)
                if before.get(config) != text:
                    statedb.upsert(conn, statedb.pairs, {"env": env, "config": config, "state": text})

    @contextlib.contextmanager
    def build_lock(self, env: str) -> Iterator[None]:
        """Serialises builders of one env (two rebuild runs, the CLI and a DAG, on any hosts sharing the
        ledger): the second waits, then finds the image built and reuses it."""
        with self.db.build_lock(env):
            yield

    def envs(self) -> list[str]:
        with self.db.transaction() as conn:
            return list(conn.execute(sa.select(statedb.envs.c.env).order_by(statedb.envs.c.env)).scalars())

    # ------------------------------------------------------------------------------- locks, logs
    def lock_text(self, spec_hash: str) -> str | None:
        """The resolved package list stored for a spec, or None when it was never resolved."""
        with self.db.transaction() as conn:
            return conn.execute(
                sa.select(statedb.package_locks.c.text).where(statedb.package_locks.c.spec_hash == spec_hash)
            ).scalar()

    def store_lock(self, spec_hash: str, text: str) -> None:
        with self.db.transaction(write=True) as conn:
            statedb.upsert(conn, statedb.package_locks, {"spec_hash": spec_hash, "text": text})

    def log(self, name: str) -> str | None:
        """A stored build log (a pair's ``last_log`` names one), or None."""
        with self.db.transaction() as conn:
            return conn.execute(
                sa.select(statedb.build_logs.c.text).where(statedb.build_logs.c.name == name)
            ).scalar()

    def store_log(self, name: str, text: str) -> None:
        """Keep a build log, its last ``LOG_KEEP_BYTES`` when longer (the end says what failed)."""
        with self.db.transaction(write=True) as conn:
            statedb.upsert(
                conn, statedb.build_logs, {"name": name, "text": log_tail(text), "stored_at": now()}
            )

    @contextlib.contextmanager
    def build_log(self, name: str) -> Iterator[Path]:
        """A local file for a builder to write while it runs, stored as log ``name`` when the build ends,
        success or failure, so that every host can read it. Nothing written (an existing image reused)
        keeps the log stored under that name before."""
        with tempfile.TemporaryDirectory(prefix="dss-build-log-") as scratch:
            path = Path(scratch) / name
            try:
                yield path
            finally:
                if path.exists():
                    self.store_log(name, path.read_text(encoding="utf-8", errors="replace"))

    # ------------------------------------------------------------------------------ transitions
    def switch(
        self, env: str, config: str, record: ImageRecord, *, log_name: str | None
    ) -> list[ImageRecord]:
        """Make ``record`` the pair's current image (the previous ones kept for rollback); returns the
        superseded images that no pair of the env uses any more, which the caller may remove."""
        with self.update(env) as pairs:
            state = pairs.setdefault(config, PairState())
            dropped = switch_current(state, record)
            state.last_log = log_name
        return unused(pairs, dropped)

    def record_failure(self, env: str, config: str, error: str, log_name: str | None) -> None:
        """A failed resolution, build, smoke test or push: the current image stays."""
        with self.update(env) as pairs:
            state = pairs.setdefault(config, PairState())
            state.status, state.last_error, state.updated_at = "failed", error, now()
            if log_name is not None:
                state.last_log = log_name

    def rollback(self, env: str, configs: Iterable[str] | None = None) -> dict[str, ImageRecord]:
        """Make the most recent previous image current again (the current one becomes previous)."""
        done: dict[str, ImageRecord] = {}
        with self.update(env) as pairs:
            for config in list(configs) if configs is not None else sorted(pairs):
                state = pairs.get(config)
                if state is None or not state.previous:
                    raise DSSAirflowError(f"{env}/{config}: no previous image to roll back to")
                target_record = state.previous.pop(0)
                if state.current is not None:
                    state.previous.insert(0, state.current)
                state.current = replace(target_record)
                state.status, state.last_error, state.updated_at = "rolled back", None, now()
                done[config] = target_record
        return done


def log_tail(text: str, keep: int = LOG_KEEP_BYTES) -> str:
    """``text`` cut to its last ``keep`` bytes of UTF-8, saying so (and without NULs: PostgreSQL text)."""
    data = text.replace("\x00", "").encode("utf-8")
    if len(data) <= keep:
        return text.replace("\x00", "")
    kept = data[-keep:].decode("utf-8", errors="ignore")
    return f"[... first {len(data) - keep} bytes of the log dropped ...]\n{kept}"


def _read_pairs(conn: sa.Connection, env: str) -> dict[str, PairState]:
    rows = conn.execute(
        sa.select(statedb.pairs.c.config, statedb.pairs.c.state).where(statedb.pairs.c.env == env)
    )
    return {config: PairState.from_json(json.loads(text)) for config, text in rows}


def _pair_text(state: PairState) -> str:
    return json.dumps(_pair_json(state), sort_keys=True)


def _json_importer(directory: Path) -> Callable[[sa.Connection], None]:
    """Imports the JSON ledger of earlier releases (``images/<env>.json``, ``locks/``, ``logs/`` under
    ``directory``) into an empty database, once; the files are left as they were."""

    def import_json(conn: sa.Connection) -> None:
        records = sorted((directory / "images").glob("*.json"))
        if not records or conn.execute(sa.select(statedb.envs.c.env).limit(1)).first() is not None:
            return
        for path in records:
            try:
                data = json.loads(path.read_text(encoding="utf-8"))
            except (OSError, ValueError) as exc:
                log.warning("not imported: %s (%s)", path, exc)
                continue
            env = str(data.get("env") or path.stem)
            statedb.upsert(conn, statedb.envs, {"env": env})
            for config, item in data.get("configs", {}).items():
                state = PairState.from_json(item)
                if state.last_log:  # was a path on this host: now a stored log, by name
                    old_log = Path(state.last_log)
                    state.last_log = old_log.name
                    if old_log.is_file():
                        text = log_tail(old_log.read_text(encoding="utf-8", errors="replace"))
                        statedb.upsert(
                            conn, statedb.build_logs, {"name": old_log.name, "text": text, "stored_at": now()}
                        )
                statedb.upsert(
                    conn, statedb.pairs, {"env": env, "config": config, "state": _pair_text(state)}
                )
        locks = sorted((directory / "locks").glob("*.txt"))
        for path in locks:
            statedb.upsert(
                conn,
                statedb.package_locks,
                {"spec_hash": path.stem, "text": path.read_text(encoding="utf-8")},
            )
        log.info(
            "imported the JSON image ledger of %s (%d code envs, %d package locks) into the database; "
            "the JSON files are left as they were",
            directory,
            len(records),
            len(locks),
        )

    return import_json


def _pair_json(state: PairState) -> dict[str, Any]:
    return {
        "current": asdict(state.current) if state.current else None,
        "previous": [asdict(record) for record in state.previous],
        "status": state.status,
        "last_error": state.last_error,
        "last_log": state.last_log,
        "updated_at": state.updated_at,
    }


def switch_current(state: PairState, record: ImageRecord, keep: int = KEEP_PREVIOUS) -> list[ImageRecord]:
    """Make ``record`` current, push the old current onto ``previous``; returns the records dropped."""
    if state.current is not None and state.current.build_hash != record.build_hash:
        state.previous.insert(0, state.current)
    state.previous = [r for r in state.previous if r.build_hash != record.build_hash]
    state.current = record
    state.status, state.last_error, state.updated_at = "ok", None, now()
    dropped, state.previous = state.previous[keep:], state.previous[:keep]
    return dropped


def unused(pairs: dict[str, PairState], dropped: Sequence[ImageRecord]) -> list[ImageRecord]:
    """Of the ``dropped`` records, those no pair of the env still runs or keeps for rollback."""
    in_use = {
        record.tag
        for state in pairs.values()
        for record in ([state.current] if state.current else []) + state.previous
    }
    return [record for record in dropped if record.tag not in in_use]
