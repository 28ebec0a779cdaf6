"""Durable build state of code-env images, shared by the CLI, the sensor and the operators.

One JSON record per code env (``images/<env>.json``) holds, for each execution or spark config, the
*current* image (what tasks run), the previous ones (for rollback), the last build's status, error and log
file. Writers take a per-env file lock and replace the record atomically (temp file + rename), so a
reader — a task starting while a rebuild runs — sees either the old record or the new one, never half of
one. The state transitions (switch, failure, rollback) and which superseded images may go are here too;
removing an image is the builder's business.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from dss_airflow.errors import DSSAirflowError
from dss_airflow.images.identity import BuildInputs, Lock

if TYPE_CHECKING:
    from collections.abc import Iterable, Iterator, Sequence
    from pathlib import Path

#: How many superseded images are kept for `dss-airflow images rollback`; older ones are removed.
KEEP_PREVIOUS = 3


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
    """The build state directory: records, locks of resolved package lists, build logs."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.records = root / "images"
        self.locks = root / "locks"
        self.logs = root / "logs"

    def _record_path(self, env: str) -> Path:
        return self.records / f"{env}.json"

    def read(self, env: str) -> dict[str, PairState]:
        """All pairs of an env (no lock: records are replaced atomically)."""
        try:
            data = json.loads(self._record_path(env).read_text(encoding="utf-8"))
        except FileNotFoundError:
            return {}
        return {config: PairState.from_json(item) for config, item in data.get("configs", {}).items()}

    def pair(self, env: str, config: str) -> PairState:
        return self.read(env).get(config, PairState())

    @contextlib.contextmanager
    def update(self, env: str) -> Iterator[dict[str, PairState]]:
        """Read-modify-write of an env's record under its lock; written atomically on exit."""
        self.records.mkdir(parents=True, exist_ok=True)
        with open(self.records / f".{env}.lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            pairs = self.read(env)
            yield pairs
            payload = {
                "env": env,
                "configs": {name: _pair_json(state) for name, state in sorted(pairs.items())},
            }
            path = self._record_path(env)
            tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
            tmp.write_text(json.dumps(payload, indent=2, sort_keys=True), encoding="utf-8")
            os.replace(tmp, path)

    @contextlib.contextmanager
    def build_lock(self, env: str) -> Iterator[None]:
        """Serialises builders of one env (two rebuild runs, the CLI and a DAG): the second waits, then
        finds the image built and reuses it."""
        self.records.mkdir(parents=True, exist_ok=True)
        with open(self.records / f".build-{env}.lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            yield

    def envs(self) -> list[str]:
        return sorted(p.stem for p in self.records.glob("*.json")) if self.records.is_dir() else []

    # ------------------------------------------------------------------------------ transitions
    def switch(self, env: str, config: str, record: ImageRecord, *, log_file: Path) -> list[ImageRecord]:
        """Make ``record`` the pair's current image (the previous ones kept for rollback); returns the
        superseded images that no pair of the env uses any more, which the caller may remove."""
        with self.update(env) as pairs:
            state = pairs.setdefault(config, PairState())
            dropped = switch_current(state, record)
            state.last_log = str(log_file)
        return unused(pairs, dropped)

    def record_failure(self, env: str, config: str, error: str, log_file: Path | None) -> None:
        """A failed resolution, build, smoke test or push: the current image stays."""
        with self.update(env) as pairs:
            state = pairs.setdefault(config, PairState())
            state.status, state.last_error, state.updated_at = "failed", error, now()
            if log_file is not None:
                state.last_log = str(log_file)

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
