"""Real Airflow processes for tests and benchmarks: api-server, scheduler, dag-processor and Celery workers
(optionally inside a test host's network namespace), a Redis broker; everything stopped by pid.

Nothing here mocks Airflow: DAG runs are triggered with the ``airflow`` CLI and their states read from the
metadata database the scheduler writes.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from collections.abc import Iterator, Mapping, Sequence

VENV_BIN = Path(sys.executable).parent
FINISHED = {"success", "failed"}


def stop_process(process: subprocess.Popen[Any], *, grace: float = 20) -> None:
    """SIGTERM the process group (the process and the children it forked), then SIGKILL after ``grace``."""
    if process.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=10)


@contextlib.contextmanager
def redis_server(port: int, bind: Sequence[str], workdir: Path) -> Iterator[str]:
    """A private Redis (no persistence) listening on ``bind`` addresses; yields its first URL."""
    if shutil.which("redis-server") is None:
        raise RuntimeError("redis-server is missing: run scripts/ensure-test-hosts.sh")
    workdir.mkdir(parents=True, exist_ok=True)
    log = (workdir / "redis.log").open("wb")
    argv = ["redis-server", "--port", str(port), "--bind", *bind, "--protected-mode", "no"]
    argv += ["--save", "", "--appendonly", "no", "--dir", str(workdir)]
    process = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + 20
        while (
            subprocess.run(
                ["redis-cli", "-h", bind[0], "-p", str(port), "ping"],
                capture_output=True,
                text=True,
                check=False,
            ).stdout.strip()
            != "PONG"
        ):
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"redis did not start: {(workdir / 'redis.log').read_text()[-2000:]}")
            time.sleep(0.2)
        yield f"redis://{bind[0]}:{port}"
    finally:
        stop_process(process)
        log.close()


@dataclass
class AirflowCluster:
    """One Airflow deployment: its own AIRFLOW_HOME, metadata DB and processes."""

    home: Path
    env: dict[str, str]
    sql_alchemy_conn: str
    api_port: int
    processes: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    _engine: tuple[str, Any] | None = field(default=None, repr=False)

    @classmethod
    def create(
        cls,
        home: Path,
        *,
        dags_folder: Path,
        sql_alchemy_conn: str | None = None,
        executor: str = "LocalExecutor",
        api_port: int = 18080,
        api_host: str = "127.0.0.1",
        extra_env: Mapping[str, str] | None = None,
    ) -> AirflowCluster:
        home.mkdir(parents=True, exist_ok=True)
        conn = sql_alchemy_conn or f"sqlite:///{home / 'airflow.db'}"
        env = {
            **os.environ,
            "AIRFLOW_HOME": str(home),
            "AIRFLOW__CORE__DAGS_FOLDER": str(dags_folder),
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "AIRFLOW__CORE__EXECUTOR": executor,
            "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": "False",
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": conn,
            "AIRFLOW__API__HOST": api_host,
            "AIRFLOW__API__PORT": str(api_port),
            "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"http://127.0.0.1:{api_port}/execution/",
            "AIRFLOW__API_AUTH__JWT_SECRET": secrets.token_hex(16),
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS": "True",
            "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL": "5",
            "AIRFLOW__SCHEDULER__SCHEDULER_HEARTBEAT_SEC": "1",
            "AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT": str(api_port + 713),
            "PATH": f"{VENV_BIN}:{os.environ.get('PATH', '')}",
            **(extra_env or {}),
        }
        return cls(home=home, env=env, sql_alchemy_conn=conn, api_port=api_port)

    # ------------------------------------------------------------------------------ processes
    def airflow(self, *args: str, timeout: float = 600) -> subprocess.CompletedProcess[str]:
        """One ``airflow`` CLI command against this deployment (raises with its output on failure)."""
        run = subprocess.run(
            ["airflow", *args], env=self.env, capture_output=True, text=True, timeout=timeout, check=False
        )
        if run.returncode != 0:
            raise RuntimeError(
                f"airflow {' '.join(args)} failed:\n{run.stdout[-3000:]}\n{run.stderr[-3000:]}"
            )
        return run

    def start(
        self, name: str, *args: str, netns: str | None = None, env: Mapping[str, str] | None = None
    ) -> subprocess.Popen[bytes]:
        """Start ``airflow <args>`` in the background (inside network namespace ``netns`` if given)."""
        prefix = ["nsenter", f"--net=/var/run/netns/{netns}"] if netns else []
        log = (self.home / f"{name}.log").open("ab")
        process = subprocess.Popen(
            [*prefix, str(VENV_BIN / "airflow"), *args],
            env={**self.env, **(env or {})},
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group: stop_process reaches its children
        )
        log.close()
        self.processes[name] = process
        return process

    def start_core(self) -> None:
        """api-server, scheduler and dag-processor; returns once the API answers."""
        self.start("api-server", "api-server", "--port", str(self.api_port))
        self.start("scheduler", "scheduler")
        self.start("dag-processor", "dag-processor")
        self.wait_http(f"http://127.0.0.1:{self.api_port}/api/v2/monitor/health", timeout=180)

    def wait_http(self, url: str, *, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while True:
            self.check_alive()
            try:
                with urllib.request.urlopen(url, timeout=5) as response:
                    if response.status == 200:
                        return
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise TimeoutError(f"{url} did not answer in {timeout:.0f} s\n{self.tails()}")
            time.sleep(1)

    def check_alive(self) -> None:
        dead = {name: p.returncode for name, p in self.processes.items() if p.poll() is not None}
        if dead:
            raise RuntimeError(f"Airflow processes exited: {dead}\n{self.tails()}")

    def log(self, name: str) -> str:
        path = self.home / f"{name}.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def tails(self, lines: int = 40) -> str:
        """The end of each process's log, then of each task log that reports an error."""
        parts = [
            f"--- {name} ---\n" + "\n".join(self.log(name).splitlines()[-lines:]) for name in self.processes
        ]
        for task_log in sorted((self.home / "logs").glob("dag_id=*/run_id=*/task_id=*/attempt=*.log")):
            text = task_log.read_text(errors="replace")
            if '"level":"error"' in text:
                parts.append(f"--- {task_log.relative_to(self.home)} ---\n{text[-4000:]}")
        return "\n".join(parts)

    def stop(self) -> None:
        for process in reversed(list(self.processes.values())):
            stop_process(process)

    # ---------------------------------------------------------------------------- DAG runs
    def query(self, sql: str, **params: Any) -> list[tuple[Any, ...]]:
        """Read the metadata database the scheduler writes (the source of truth for run states)."""
        import sqlalchemy

        if self._engine is None or self._engine[0] != self.sql_alchemy_conn:  # one engine per URL
            engine = sqlalchemy.create_engine(self.sql_alchemy_conn, poolclass=sqlalchemy.pool.NullPool)
            self._engine = (self.sql_alchemy_conn, engine)
        with self._engine[1].connect() as connection:
            return [tuple(row) for row in connection.execute(sqlalchemy.text(sql), params)]

    def wait_parsed(self, dag_ids: Sequence[str], *, timeout: float = 180) -> None:
        deadline = time.monotonic() + timeout
        while True:
            self.check_alive()
            with contextlib.suppress(Exception):  # the table appears with the first parse
                found = {row[0] for row in self.query("SELECT dag_id FROM dag WHERE is_stale = false")}
                if set(dag_ids) <= found:
                    return
            if time.monotonic() > deadline:
                raise TimeoutError(f"DAGs {dag_ids} not parsed in {timeout:.0f} s\n{self.tails()}")
            time.sleep(1)

    def trigger(self, dag_id: str, conf: Mapping[str, Any] | None = None) -> str:
        run_id = f"test__{dag_id}__{secrets.token_hex(4)}"
        args = ["dags", "trigger", dag_id, "--run-id", run_id]
        if conf:
            args += ["--conf", json.dumps(conf)]
        self.airflow(*args)
        return run_id

    def wait_run(self, dag_id: str, run_id: str, *, timeout: float = 600) -> str:
        """The run's final state ("success" or "failed")."""
        deadline = time.monotonic() + timeout
        while True:
            self.check_alive()
            rows = self.query(
                "SELECT state FROM dag_run WHERE dag_id = :dag_id AND run_id = :run_id",
                dag_id=dag_id,
                run_id=run_id,
            )
            if rows and rows[0][0] in FINISHED:
                return str(rows[0][0])
            if time.monotonic() > deadline:
                raise TimeoutError(f"{dag_id}/{run_id} not finished in {timeout:.0f} s\n{self.tails()}")
            time.sleep(1)

    def task_log(self, dag_id: str, run_id: str, task_id: str, attempt: int = 1) -> str:
        """A task's log as the worker wrote it (JSON lines)."""
        path = self.home / "logs" / f"dag_id={dag_id}" / f"run_id={run_id}" / f"task_id={task_id}"
        log_file = path / f"attempt={attempt}.log"
        return log_file.read_text(errors="replace") if log_file.exists() else ""

    def task_instances(self, dag_id: str, run_id: str) -> dict[str, dict[str, Any]]:
        """task_id -> state, hostname, queue of a run's task instances."""
        rows = self.query(
            "SELECT task_id, state, hostname, queue FROM task_instance WHERE dag_id = :d AND run_id = :r",
            d=dag_id,
            r=run_id,
        )
        return {row[0]: {"state": row[1], "hostname": row[2], "queue": row[3]} for row in rows}
