"""Owners of what a try creates, and the sweeps that remove what dead tries left (no Docker here)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time

import pytest

from dss_airflow.backends.docker import KILLED, exit_cause
from dss_airflow.config.models import DockerExecutionConfig
from dss_airflow.leftovers import OWNER_FILE, liveness, mark_owner, owner_token, sweep_directories


def dead_token() -> str:
    """The owner token of a process that has exited (its pid now names nothing, or something else)."""
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    token = owner_token(child.pid)
    child.kill()
    child.wait()
    return token


def test_an_owner_is_alive_dead_or_unknown():
    assert liveness(owner_token()) == "alive"
    assert liveness(dead_token()) == "dead"
    host, boot, pid, start = owner_token().split("/")
    assert liveness(f"{host}/{boot}/{pid}/{int(start) + 1}") == "dead", "a reused pid is not the owner"
    assert liveness(f"{host}/otherboot/{pid}/{start}") == "dead", "a reboot ended every owner"
    assert liveness(f"not-{socket.gethostname()}/{boot}/{pid}/{start}") == "unknown"
    assert liveness(None) == "unknown"


def test_sweep_removes_dead_owners_now_and_unknown_ones_only_when_old(tmp_path):
    alive, dead, foreign, unowned = (tmp_path / name for name in ("alive", "dead", "foreign", "unowned"))
    for directory in (alive, dead, foreign, unowned):
        directory.mkdir()
    mark_owner(alive)
    (dead / OWNER_FILE).write_text(dead_token())
    (foreign / OWNER_FILE).write_text("elsewhere/boot/1/1")
    everything = [alive, dead, foreign, unowned]
    assert sweep_directories(everything) == [dead]
    assert sweep_directories(everything, foreign_after_s=3600) == [], "untouched for less than an hour"
    old = time.time() - 7200
    os.utime(foreign, (old, old))
    assert sweep_directories([alive, foreign, unowned], foreign_after_s=3600, dry_run=True) == [foreign]
    assert foreign.exists(), "a dry run removes nothing"
    assert sweep_directories([alive, foreign], foreign_after_s=3600) == [foreign]
    assert alive.exists() and not foreign.exists() and not dead.exists()


@pytest.mark.parametrize(
    ("state", "killed", "expected"),
    [
        (
            {"OOMKilled": True, "ExitCode": 137},
            False,
            "ran out of memory (limit 64m of execution config 'x')",
        ),
        ({"OOMKilled": False, "ExitCode": 137}, False, "killed from outside this task (SIGKILL"),
        ({"ExitCode": 143}, False, "stopped from outside this task (SIGTERM: docker stop"),
        ({"ExitCode": 143}, True, KILLED),
        ({"ExitCode": 1}, False, None),
        (None, False, None),
    ],
)
def test_each_exit_cause_gets_its_own_sentence(state, killed, expected):
    config = DockerExecutionConfig(type="docker", base_image="b", resources={"memory": "64m"})
    cause = exit_cause(state, killed, config, "x")
    assert cause == expected if expected in (None, KILLED) else expected in (cause or "")
