"""The image ledger's storage, against the real engines: SQLite (one machine) and a private PostgreSQL 15
cluster (several workers). The same contract runs on both; processes are spawned to play other workers.
"""

from __future__ import annotations

import dataclasses
import json
import multiprocessing
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from dss_airflow.cli import main
from dss_airflow.errors import DSSAirflowError, StateStoreError
from dss_airflow.images.ledger import LOG_KEEP_BYTES, ImageRecord, Ledger, PairState, switch_current
from tests.helpers import BASE_CONFIG, write_config

CONN_ID = "dss_state_test"
SPAWN = multiprocessing.get_context("spawn")


def record(build_hash: str) -> ImageRecord:
    return ImageRecord(
        image=f"sha256:{build_hash}", tag=f"dss-code-envs:e-{build_hash}", build_hash=build_hash,
        spec_hash="s", lock_sha256="l", base_digest="b",
    )  # fmt: skip


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def store(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Configures the default ledger: SQLite under $DSS_AIRFLOW_STATE, or a fresh PostgreSQL database
    named by the Airflow connection dss_state_test (AIRFLOW_CONN_DSS_STATE_TEST), as a deployment would."""
    if request.param == "postgres":
        cluster = request.getfixturevalue("postgres_server")
        database = cluster.create_database(f"t_{uuid.uuid4().hex[:12]}")
        monkeypatch.setenv("AIRFLOW_CONN_DSS_STATE_TEST", cluster.uri(database=database))
        monkeypatch.setenv("DSS_AIRFLOW_STATE_CONN_ID", CONN_ID)
    return str(request.param)


@pytest.fixture
def ledger(store: str) -> Ledger:
    return Ledger.default()


def test_the_configured_store_is_the_one_opened(ledger, store):
    assert ledger.db.engine.dialect.name == ("postgresql" if store == "postgres" else "sqlite")
    if store == "postgres":
        assert ledger.db.place.conn_id == CONN_ID


# ------------------------------------------------------------------------------------------ records
def test_round_trip_and_an_aborted_update_writes_nothing(ledger):
    with ledger.update("pandas") as pairs:
        switch_current(pairs.setdefault("docker", PairState()), record("h1"))
    with ledger.update("pandas") as pairs:
        pairs["docker"].status = "failed"
        pairs["docker"].last_error = "boom"
    state = ledger.pair("pandas", "docker")
    assert state.current == record("h1") and state.status == "failed" and state.last_error == "boom"
    assert ledger.pair("pandas", "other") == PairState()

    def abort_half_way() -> None:
        with ledger.update("pandas") as pairs:
            pairs["docker"].status = "ok"
            pairs["k8s"] = PairState(status="ok")
            raise RuntimeError("half-way")

    with pytest.raises(RuntimeError, match="half-way"):
        abort_half_way()
    assert ledger.read("pandas") == {"docker": state}, "nothing of the aborted update is visible"
    assert ledger.envs() == ["pandas"]


def test_a_pair_dropped_in_an_update_is_deleted(ledger):
    ledger.switch("pandas", "docker", record("h1"), log_name="a.log")
    ledger.switch("pandas", "k8s", record("h1"), log_name="a.log")
    with ledger.update("pandas") as pairs:
        del pairs["k8s"]
    assert sorted(ledger.read("pandas")) == ["docker"]


def test_switch_returns_only_images_no_pair_still_uses(ledger):
    for build_hash in ("h1", "h2", "h3", "h4"):
        assert ledger.switch("pandas", "docker", record(build_hash), log_name="b.log") == []
    ledger.switch("pandas", "other", record("h1"), log_name="b.log")
    assert ledger.switch("pandas", "docker", record("h5"), log_name="b.log") == [], (
        "h1 left docker's previous images, but the other config still runs it"
    )
    assert ledger.switch("pandas", "docker", record("h6"), log_name="b.log") == [record("h2")]
    state = ledger.pair("pandas", "docker")
    assert [r.build_hash for r in state.previous] == ["h5", "h4", "h3"]
    assert state.last_log == "b.log"


def test_failure_keeps_the_current_image_and_rollback_swaps_it(ledger):
    ledger.switch("pandas", "docker", record("h1"), log_name="1.log")
    ledger.switch("pandas", "docker", record("h2"), log_name="2.log")
    ledger.record_failure("pandas", "docker", "smoke test failed", "3.log")
    state = ledger.pair("pandas", "docker")
    assert (state.current, state.status, state.last_error) == (record("h2"), "failed", "smoke test failed")
    assert state.last_log == "3.log"
    assert ledger.rollback("pandas") == {"docker": record("h1")}
    state = ledger.pair("pandas", "docker")
    assert (state.current, state.previous, state.status) == (record("h1"), [record("h2")], "rolled back")
    assert state.last_error is None
    with pytest.raises(DSSAirflowError, match="pandas/k8s: no previous image to roll back to"):
        ledger.rollback("pandas", ["k8s"])


def test_a_reader_sees_the_old_state_while_a_writer_holds_the_env(ledger):
    ledger.switch("pandas", "docker", record("h1"), log_name=None)
    seen: list[PairState] = []
    with ledger.update("pandas") as pairs:
        switch_current(pairs["docker"], record("h2"))
        reader = threading.Thread(target=lambda: seen.append(ledger.pair("pandas", "docker")))
        reader.start()
        reader.join(timeout=20)
        assert not reader.is_alive(), "a reader does not wait for the writer"
    assert seen[0].current == record("h1"), "the uncommitted switch is invisible"
    assert ledger.pair("pandas", "docker").current == record("h2")


# ------------------------------------------------------------------------------------ locks and logs
def test_package_locks_are_stored_by_spec_hash(ledger):
    assert ledger.lock_text("abc") is None
    ledger.store_lock("abc", "six==1.16.0\n")
    assert ledger.lock_text("abc") == "six==1.16.0\n"
    ledger.store_lock("abc", "six==1.17.0\n")  # a refresh re-resolves
    assert ledger.lock_text("abc") == "six==1.17.0\n"


def test_resolve_lock_reuses_a_lock_another_host_stored(ledger, monkeypatch):
    from dss_airflow.images import identity

    key = identity.spec_hash("3.11", ["six"])
    ledger.store_lock(key, "six==1.16.0\n")

    def no_uv(*args: Any, **kwargs: Any) -> str:
        raise AssertionError("a stored lock is not resolved again")

    monkeypatch.setattr(identity, "_uv_compile", no_uv)
    lock = identity.resolve_lock(["six"], python="3.11", store=ledger)
    assert (lock.spec_hash, lock.text) == (key, "six==1.16.0\n")
    monkeypatch.setattr(identity, "_uv_compile", lambda *a, **k: "six==1.17.0\n")
    assert identity.resolve_lock(["six"], python="3.11", store=ledger, refresh=True).text == "six==1.17.0\n"
    assert ledger.lock_text(key) == "six==1.17.0\n", "the refreshed lock replaces the stored one"


def test_a_build_log_is_stored_when_the_build_ends_even_when_it_fails(ledger):
    with ledger.build_log("ok.log") as path:
        path.write_text("step 1\nstep 2\n")
    assert ledger.log("ok.log") == "step 1\nstep 2\n"
    assert not path.exists(), "the local file was a scratch copy"
    with ledger.build_log("ok.log"):
        pass  # the image existed: nothing built, nothing written
    assert ledger.log("ok.log") == "step 1\nstep 2\n", "a reuse keeps the log of the build"

    def fail_building() -> None:
        with ledger.build_log("bad.log") as path:
            path.write_text("ERROR: no matching distribution\x00\n")
            raise RuntimeError("build failed")

    with pytest.raises(RuntimeError, match="build failed"):
        fail_building()
    assert ledger.log("bad.log") == "ERROR: no matching distribution\n", "stored, without the NUL"
    assert ledger.log("never.log") is None


def test_a_long_log_keeps_its_end(ledger):
    text = "".join(f"line {n}\n" for n in range(60_000)) + "ERROR: the reason\n"
    ledger.store_log("big.log", text)
    stored = ledger.log("big.log")
    assert stored is not None and stored.endswith("ERROR: the reason\n")
    assert stored.startswith("[... first ") and "bytes of the log dropped" in stored.splitlines()[0]
    assert len(stored.split("\n", 1)[1].encode()) <= LOG_KEEP_BYTES


# ---------------------------------------------------------------------------------- several workers
def _increment(loops: int, ready: Any) -> None:
    ledger = Ledger.default()
    ready.wait(timeout=60)
    for _ in range(loops):
        with ledger.update("counted") as pairs:
            state = pairs.setdefault("docker", PairState())
            count = int(state.last_error or "0")
            time.sleep(0.001)  # widen the window a lost update would need
            state.last_error = str(count + 1)


def test_two_processes_read_modify_write_one_env_without_losing_an_update(ledger):
    loops = 40
    ready = SPAWN.Barrier(2)
    workers = [SPAWN.Process(target=_increment, args=(loops, ready)) for _ in range(2)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(timeout=180)
    assert [w.exitcode for w in workers] == [0, 0]
    assert ledger.pair("counted", "docker").last_error == str(2 * loops)


def _hold_build_lock(journal: str, rounds: int, ready: Any) -> None:
    ledger = Ledger.default()
    ready.wait(timeout=60)
    for _ in range(rounds):
        with ledger.build_lock("pandas"):
            with open(journal, "a") as handle:
                handle.write(f"enter {multiprocessing.current_process().pid}\n")
            time.sleep(0.2)
            with open(journal, "a") as handle:
                handle.write(f"leave {multiprocessing.current_process().pid}\n")


def test_two_builders_of_one_env_take_turns(ledger, tmp_path):
    journal = tmp_path / "journal.txt"
    ready = SPAWN.Barrier(2)
    workers = [SPAWN.Process(target=_hold_build_lock, args=(str(journal), 3, ready)) for _ in range(2)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(timeout=120)
    assert [w.exitcode for w in workers] == [0, 0]
    events = [line.split() for line in journal.read_text().splitlines()]
    assert len(events) == 12 and {pid for _, pid in events} == {str(w.pid) for w in workers}
    for enter, leave in zip(events[::2], events[1::2], strict=True):
        assert (enter[0], leave[0], enter[1]) == ("enter", "leave", leave[1]), (
            f"overlapping holders: {events}"
        )


def test_another_lock_name_does_not_wait(ledger):
    done = threading.Event()

    def build_numpy() -> None:
        with ledger.build_lock("numpy"):
            done.set()

    with ledger.build_lock("pandas"):
        other = threading.Thread(target=build_numpy)
        other.start()
        assert done.wait(timeout=20), "builders of other envs run at once"
    other.join(timeout=20)


def test_a_failed_build_releases_the_build_lock(ledger):
    def fail_building() -> None:
        with ledger.build_lock("pandas"):
            raise RuntimeError("build failed")

    with pytest.raises(RuntimeError, match="build failed"):
        fail_building()
    if ledger.db.is_sqlite:
        import fcntl

        assert ledger.db.place.directory is not None
        with open(ledger.db.place.directory / "build-pandas.lock") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)  # raises BlockingIOError while held
        return
    with ledger.db.engine.connect() as conn:
        held = conn.execute(sa.text("SELECT count(*) FROM pg_locks WHERE locktype = 'advisory'")).scalar()
    assert held == 0, "no pooled connection keeps the advisory lock"


# ------------------------------------------------------------------------------------- engine cache
def test_opening_the_ledger_again_in_a_process_makes_no_schema_round_trip(ledger):
    statements: list[str] = []

    def seen(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        statements.append(statement)

    sa.event.listen(ledger.db.engine, "before_cursor_execute", seen)
    try:
        again = Ledger.default()
        assert again.db.engine is ledger.db.engine, "one engine per URL per process"
        again.pair("pandas", "docker")
    finally:
        sa.event.remove(ledger.db.engine, "before_cursor_execute", seen)
    assert statements and not any("CREATE" in s or "dss_schema_version" in s for s in statements)


# ---------------------------------------------------------------------------------------- migration
def _write_json_ledger(root: Path) -> None:
    (root / "images").mkdir(parents=True)
    (root / "locks").mkdir()
    (root / "logs").mkdir()
    (root / "logs" / "pandas-h2.log").write_text("built h2\n")
    (root / "locks" / "spec1.txt").write_text("pandas==2.2.3\n")
    configs = {
        "docker": {
            "current": dataclasses.asdict(record("h2")),
            "previous": [dataclasses.asdict(record("h1"))],
            "status": "ok",
            "last_log": str(root / "logs" / "pandas-h2.log"),
        }
    }
    (root / "images" / "pandas.json").write_text(json.dumps({"env": "pandas", "configs": configs}))


def _read_pair(queue: Any) -> None:
    queue.put(Ledger.default().pair("pandas", "docker").current)


def test_the_json_ledger_is_imported_once_and_kept(store, monkeypatch, caplog):
    import os

    root = Path(os.environ["DSS_AIRFLOW_STATE"])
    _write_json_ledger(root)
    files_before = {p: p.read_bytes() for p in root.rglob("*") if p.is_file()}
    with caplog.at_level("INFO", logger="dss_airflow.images.ledger"):
        ledger = Ledger.default()
    assert "imported the JSON image ledger" in caplog.text
    state = ledger.pair("pandas", "docker")
    assert (state.current, state.previous) == (record("h2"), [record("h1")])
    assert state.last_log == "pandas-h2.log" and ledger.log("pandas-h2.log") == "built h2\n"
    assert ledger.lock_text("spec1") == "pandas==2.2.3\n"
    assert {p: p.read_bytes() for p in files_before} == files_before, "the JSON files are left as they were"
    ledger.switch("pandas", "docker", record("h3"), log_name=None)
    queue = SPAWN.Queue()
    other = SPAWN.Process(target=_read_pair, args=(queue,))  # a new process opens the ledger anew
    other.start()
    assert queue.get(timeout=60) == record("h3"), "a non-empty ledger is not imported into again"
    other.join(timeout=30)


# ----------------------------------------------------------------------------------------------- CLI
def test_images_status_and_log_read_the_ledger_from_any_host(store, tmp_path, monkeypatch, capsys):
    config_dir = write_config(tmp_path / "config", {"dss.yaml": BASE_CONFIG})
    builder = Ledger.default()
    with builder.build_log("plain-h1.log") as path:
        path.write_text("--- build of dss-code-envs:plain-h1\ninstalled 0 packages\n")
    builder.switch("plain", "docker-small", record("h1"), log_name="plain-h1.log")
    builder.record_failure("plain", "k8s", "push failed", None)
    if store == "postgres":  # another worker: its own empty state_dir, the same connection
        monkeypatch.setenv("DSS_AIRFLOW_STATE", str(tmp_path / "other-host"))
    assert main(["images", "status", "plain", "--config-dir", str(config_dir)]) == 0
    out = capsys.readouterr().out
    assert "plain/docker-small: ok; current sha256:h1; 0 previous; log plain-h1.log" in out
    assert "plain/k8s: failed; current -; 0 previous; last error: push failed" in out
    assert main(["images", "log", "plain", "--config", "docker-small", "--config-dir", str(config_dir)]) == 0
    out = capsys.readouterr().out
    assert out == (
        "=== plain/docker-small: ok, log plain-h1.log\n"
        "--- build of dss-code-envs:plain-h1\ninstalled 0 packages\n"
    )
    assert main(["images", "log", "plain", "--config", "k8s", "--config-dir", str(config_dir)]) == 1
    assert "plain/k8s: no build log stored (failed)" in capsys.readouterr().err
    assert main(["images", "log", "plian", "--config-dir", str(config_dir)]) == 1
    assert "unknown code env 'plian'" in capsys.readouterr().err


def test_a_task_finds_its_image_in_the_configured_store(store, tmp_path):
    from dss_airflow.config.loader import load_catalog
    from dss_airflow.config.resolve import resolve_execution
    from dss_airflow.images.lookup import image_for

    catalog = load_catalog(write_config(tmp_path / "config", {"dss.yaml": BASE_CONFIG}))
    resolved = resolve_execution(catalog, project="demo", execution_config="k8s", code_env="plain")
    with pytest.raises(DSSAirflowError, match="dss-airflow images build plain --config k8s"):
        image_for(catalog, resolved)
    Ledger.default().switch("plain", "k8s", record("h1"), log_name=None)
    assert image_for(catalog, resolved).image == "sha256:h1"


# ------------------------------------------------------------------------------------------- errors
@pytest.mark.postgres
def test_a_wrong_password_names_the_connection_and_host_but_no_password(postgres_server, monkeypatch):
    wrong = "not-the-password-" + uuid.uuid4().hex[:6]
    monkeypatch.setenv("AIRFLOW_CONN_DSS_STATE_TEST", postgres_server.uri(password=wrong))
    monkeypatch.setenv("DSS_AIRFLOW_STATE_CONN_ID", CONN_ID)
    with pytest.raises(StateStoreError) as caught:
        Ledger.default()
    message = str(caught.value)
    assert f"Airflow connection {CONN_ID!r}" in message and "127.0.0.1:18432" in message
    assert "password authentication failed" in message and "Fix the login or password" in message
    assert wrong not in message and postgres_server.password not in message
    assert caught.value.conn_id == CONN_ID


@pytest.mark.postgres
def test_an_unreachable_server_names_the_address_and_the_fix(postgres_server, monkeypatch):
    monkeypatch.setenv("AIRFLOW_CONN_DSS_STATE_TEST", postgres_server.uri(port=18433))  # nothing listens
    monkeypatch.setenv("DSS_AIRFLOW_STATE_CONN_ID", CONN_ID)
    with pytest.raises(
        StateStoreError, match=r"127\.0\.0\.1:18433.*Check that PostgreSQL runs there"
    ) as caught:
        Ledger.default()
    assert postgres_server.password not in str(caught.value)


def test_an_undefined_connection_says_how_to_define_it(monkeypatch):
    monkeypatch.setenv("DSS_AIRFLOW_STATE_CONN_ID", "dss_missing_state")
    monkeypatch.delenv("AIRFLOW_CONN_DSS_MISSING_STATE", raising=False)
    with pytest.raises(StateStoreError, match="'dss_missing_state'.*is not defined") as caught:
        Ledger.default()
    assert "airflow connections add dss_missing_state" in str(caught.value)
    assert "unset state_conn_id" in str(caught.value)


def test_a_connection_that_is_not_postgres_is_refused(monkeypatch):
    monkeypatch.setenv("AIRFLOW_CONN_DSS_STATE_TEST", "mysql://u:p@127.0.0.1:18432/db")
    monkeypatch.setenv("DSS_AIRFLOW_STATE_CONN_ID", CONN_ID)
    with pytest.raises(StateStoreError, match="of type 'mysql': it must be a PostgreSQL connection"):
        Ledger.default()


@pytest.mark.postgres
def test_the_password_is_never_logged(postgres_server, monkeypatch, caplog):
    database = postgres_server.create_database(f"t_{uuid.uuid4().hex[:12]}")
    monkeypatch.setenv("AIRFLOW_CONN_DSS_STATE_TEST", postgres_server.uri(database=database))
    monkeypatch.setenv("DSS_AIRFLOW_STATE_CONN_ID", CONN_ID)
    with caplog.at_level("DEBUG"):
        Ledger.default().pair("pandas", "docker")
    assert f"127.0.0.1:18432/{database}" in caplog.text, "the URL is logged, with the password hidden"
    assert postgres_server.password not in caplog.text


def test_a_new_process_finds_a_ready_store_without_ddl_or_a_write_lock(ledger, monkeypatch):
    """Every task process opens the ledger: once the schema exists, opening it is a read (with SQLite's
    BEGIN IMMEDIATE, eight tasks starting at once would queue on the write lock)."""
    from dss_airflow.images import statedb

    monkeypatch.setattr(statedb, "_ENGINES", {})  # what a fresh process has
    statements: list[str] = []

    def seen(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        statements.append(statement)

    sa.event.listen(sa.engine.Engine, "before_cursor_execute", seen)
    try:
        Ledger.default().pair("pandas", "docker")
    finally:
        sa.event.remove(sa.engine.Engine, "before_cursor_execute", seen)
    assert statements, "sanity: the statements were seen"
    ddl_or_lock = ("CREATE", "BEGIN IMMEDIATE", "pg_advisory", "INSERT")
    assert not [s for s in statements if any(word in s for word in ddl_or_lock)], statements
