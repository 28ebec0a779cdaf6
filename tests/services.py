"""Real services for tests, started as private processes: a PostgreSQL 15 cluster from Debian's binaries.

The cluster listens on 127.0.0.1:18432 only, keeps its socket and data in a temporary directory, and is
stopped by its postmaster pid (also when the session fails). As root, the server runs as the ``postgres``
OS user (PostgreSQL refuses to run as root).
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import signal
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import quote

if TYPE_CHECKING:
    from collections.abc import Iterator, Sequence

REPO_ROOT = Path(__file__).resolve().parents[1]
ENSURE_POSTGRES = REPO_ROOT / "scripts" / "ensure-postgres.sh"
PG_BIN = Path("/usr/lib/postgresql/15/bin")
PG_PORT = 18432


class ServiceUnavailable(Exception):  # noqa: N818 - reads as "the service is unavailable"
    """The service cannot be had on this machine (not a bug of the code under test)."""


@dataclass(frozen=True)
class PostgresCluster:
    """A running private cluster: a login role with a password and a database it owns."""

    host: str
    port: int
    user: str
    password: str
    database: str
    root: Path

    def uri(
        self,
        *,
        database: str | None = None,
        password: str | None = None,
        port: int | None = None,
        host: str | None = None,
    ) -> str:
        """The URI form of an Airflow connection to a database of the cluster (default: its own), through
        ``host`` when given (one of its listen addresses)."""
        secret = quote(self.password if password is None else password, safe="")
        where = f"{host or self.host}:{port or self.port}/{database or self.database}"
        return f"postgresql://{self.user}:{secret}@{where}"

    def create_database(self, name: str) -> str:
        """A new empty database owned by the login role (one per test keeps tests apart)."""
        self.psql(f"CREATE DATABASE {name} OWNER {self.user}")
        return name

    def psql(self, sql: str, *, database: str = "postgres") -> str:
        """Run SQL as the superuser over the cluster's unix socket."""
        socket_dir = str(self.root / "sockets")
        return _run(
            [str(PG_BIN / "psql"), "-X", "-q", "-At", "-v", "ON_ERROR_STOP=1", "-h", socket_dir,
             "-p", str(self.port), "-U", "postgres", "-d", database, "-c", sql],
        ).stdout  # fmt: skip


def postgres_missing() -> str | None:
    """Why no cluster can be started here (not root and no binaries), else None; as root the binaries are
    installed first (ServiceUnavailable when that fails: a broken machine, not a reason to skip)."""
    if (PG_BIN / "initdb").exists():
        return None
    if os.geteuid() != 0:
        return f"{PG_BIN}/initdb is missing and only root can install PostgreSQL ({ENSURE_POSTGRES.name})"
    proc = subprocess.run(["bash", str(ENSURE_POSTGRES)], capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise ServiceUnavailable(
            f"{ENSURE_POSTGRES.name} failed: {(proc.stderr or proc.stdout).strip()[-1500:]}"
        )
    return None


@contextlib.contextmanager
def postgres_cluster(
    port: int = PG_PORT, *, listen: Sequence[str] = ("127.0.0.1",), trusted_network: str | None = None
) -> Iterator[PostgresCluster]:
    """A fresh cluster for the duration of the block; stopped by pid and removed afterwards. ``listen``
    adds addresses (test hosts reach it through their veth); ``trusted_network`` (a CIDR) may log in
    with the password from there."""
    root = Path(tempfile.mkdtemp(prefix="dss-postgres-"))
    as_postgres = os.geteuid() == 0
    if as_postgres:
        shutil.chown(root, "postgres", "postgres")
    (root / "sockets").mkdir()
    if as_postgres:
        shutil.chown(root / "sockets", "postgres", "postgres")
    cluster = PostgresCluster(
        host="127.0.0.1",
        port=port,
        user="dss_state",
        password="test-" + secrets.token_hex(8),
        database="dss_state",
        root=root,
    )
    data = root / "data"
    try:
        _run(
            [str(PG_BIN / "initdb"), "-D", str(data), "-U", "postgres", "--auth-local=trust",
             "--auth-host=scram-sha-256", "--encoding=UTF8", "--no-sync"],
            as_postgres=as_postgres,
        )  # fmt: skip
        if trusted_network:
            with (data / "pg_hba.conf").open("a", encoding="utf-8") as hba:
                hba.write(f"host all all {trusted_network} scram-sha-256\n")
        options = (
            f"-c listen_addresses={','.join(listen)} -c port={port} "
            f"-c unix_socket_directories={root / 'sockets'} "
            "-c fsync=off -c synchronous_commit=off -c full_page_writes=off -c max_connections=300"
        )
        _run(
            [str(PG_BIN / "pg_ctl"), "start", "-D", str(data), "-w", "-t", "60",
             "-l", str(root / "server.log"), "-o", options],
            as_postgres=as_postgres,
        )  # fmt: skip
    except ServiceUnavailable as exc:
        log = root / "server.log"
        tail = log.read_text(errors="replace")[-2000:] if log.exists() else ""
        _stop(data)
        shutil.rmtree(root, ignore_errors=True)
        raise ServiceUnavailable(f"PostgreSQL did not start on 127.0.0.1:{port}: {exc}\n{tail}") from exc
    try:
        cluster.psql(f"CREATE ROLE {cluster.user} LOGIN PASSWORD '{cluster.password}'")
        cluster.psql(f"CREATE DATABASE {cluster.database} OWNER {cluster.user}")
        yield cluster
    finally:
        _stop(data)
        shutil.rmtree(root, ignore_errors=True)


def _stop(data: Path) -> None:
    """Kill the postmaster named in its pid file (immediate: nothing to keep) and wait for it to go."""
    pid_file = data / "postmaster.pid"
    try:
        pid = int(pid_file.read_text().splitlines()[0])
    except (OSError, ValueError, IndexError):
        return
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGQUIT)  # PostgreSQL's immediate shutdown
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.1)
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)


def _run(command: list[str], *, as_postgres: bool = False) -> subprocess.CompletedProcess[str]:
    if as_postgres:
        command = ["runuser", "-u", "postgres", "--", *command]
    proc = subprocess.run(command, capture_output=True, text=True, check=False, timeout=120, cwd="/")
    if proc.returncode != 0:
        output = (proc.stderr or proc.stdout).strip()[-1500:]
        raise ServiceUnavailable(f"{' '.join(command[:6])} ... exited {proc.returncode}: {output}")
    return proc
