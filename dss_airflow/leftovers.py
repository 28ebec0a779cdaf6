"""What dead tries leave behind — containers, staging and run directories — found and removed.

A task process killed with SIGKILL (OOM killer, node loss, ``kill -9``) never reaches its clean-up, and
a Docker daemon that dies mid-task keeps the container. Each try therefore marks what it creates with its
*owner*: ``host/boot/pid/start`` of the task process (a label on containers, a ``.dss-owner`` file in
run and staging directories). A sweep removes what belongs to an owner that is gone:

* on this host, an owner whose process no longer exists (or is another process with the same pid) is
  dead: its containers are removed even when still running, its directories at once;
* on another host the owner cannot be checked: only containers that exited more than
  :data:`EXITED_GRACE_S` ago, and (``dss-airflow gc``) directories older than ``foreign_after_s``.

Sweeps run where they cost little — each task sweeps the run directories of its host, its output
folders' staging and its own DAG/task's containers (one filtered Docker call) before it starts — and
``dss-airflow gc`` (or the rebuild DAG) sweeps everything, for tasks that never run again. A running try
is never touched: its owner is alive, or on another host and not old enough.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import shutil
import socket
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from dss_airflow.spec import LABEL_PREFIX

if TYPE_CHECKING:
    from collections.abc import Iterable, Mapping

log = logging.getLogger(__name__)

OWNER_LABEL = f"{LABEL_PREFIX}.owner"
OWNER_FILE = ".dss-owner"
#: A container of an unknown owner that exited this long ago is no try's any more (a live try removes
#: its container seconds after it exits).
EXITED_GRACE_S = 300
Liveness = Literal["alive", "dead", "unknown"]


@functools.cache
def _boot_id() -> str:
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text(encoding="ascii").strip()[:8]
    except OSError:
        return "noboot"


def _start_ticks(pid: int) -> str | None:
    """The process's start time (clock ticks since boot): tells a pid apart from a later reuse of it."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text(encoding="ascii", errors="replace")
    except OSError:
        return None
    return stat.rsplit(")", 1)[1].split()[19]  # field 22; the command name may contain spaces


def owner_token(pid: int | None = None) -> str:
    """``host/boot/pid/start`` of this process (the task that creates a container or a directory)."""
    pid = pid or os.getpid()
    return f"{socket.gethostname()}/{_boot_id()}/{pid}/{_start_ticks(pid) or '?'}"


def liveness(token: str | None) -> Liveness:
    """Whether the owner still runs: only checkable on its own host."""
    if not token:
        return "unknown"
    host, boot, pid, start = (token.split("/") + ["", "", "", ""])[:4]
    if host != socket.gethostname():
        return "unknown"
    if boot != _boot_id() or not pid.isdigit():
        return "dead"
    return "alive" if _start_ticks(int(pid)) == start else "dead"


def mark_owner(directory: Path) -> None:
    """Record this process as the owner of a run or staging directory it just created."""
    (directory / OWNER_FILE).write_text(owner_token(), encoding="ascii")


def _directory_owner(directory: Path) -> str | None:
    try:
        return (directory / OWNER_FILE).read_text(encoding="ascii").strip()
    except OSError:
        return None


def sweep_directories(
    candidates: Iterable[Path], *, foreign_after_s: float | None = None, dry_run: bool = False
) -> list[Path]:
    """Remove the run/staging directories whose owner is dead (or, with ``foreign_after_s``, unknown and
    untouched that long); returns what was (or would be) removed."""
    removed = []
    now = time.time()
    for directory in candidates:
        state = liveness(_directory_owner(directory))
        if state == "alive":
            continue
        if state == "unknown":
            try:
                age = now - directory.stat().st_mtime
            except OSError:
                continue
            if foreign_after_s is None or age < foreign_after_s:
                continue
        removed.append(directory)
        if not dry_run:
            shutil.rmtree(directory, ignore_errors=True)
            with contextlib.suppress(OSError):  # an in-folder ``.dss-staging`` (pods, earlier releases)
                directory.parent.rmdir()
    for directory in removed:
        log.warning("Removed %s, left by a try that is gone", directory)
    return removed


def _exited_long_ago(client: Any, container_id: str) -> bool:
    finished = client.inspect_container(container_id)["State"].get("FinishedAt", "")
    try:
        ended = datetime.fromisoformat(finished[:26].rstrip("Z") + "+00:00")
    except ValueError:
        return False
    return ended.year > 1 and (datetime.now(UTC) - ended).total_seconds() > EXITED_GRACE_S


#: Labels of one task instance (the try number apart): Airflow starts try N+1 only after try N ended.
TASK_INSTANCE_LABELS = tuple(f"{LABEL_PREFIX}.{key}" for key in ("dag_id", "task_id", "run_id", "map_index"))
TRY_LABEL = f"{LABEL_PREFIX}.try_number"


def _earlier_try(labels: Mapping[str, str], current: Mapping[str, str] | None) -> bool:
    if current is None or any(labels.get(key) != current.get(key) for key in TASK_INSTANCE_LABELS):
        return False
    mine, theirs = current.get(TRY_LABEL, ""), labels.get(TRY_LABEL, "")
    return mine.isdigit() and theirs.isdigit() and int(theirs) < int(mine)


def sweep_containers(
    client: Any,
    labels: Iterable[str],
    *,
    current: Mapping[str, str] | None = None,
    dry_run: bool = False,
) -> list[str]:
    """Remove the containers matching ``labels`` (``key=value`` or ``key``) that no live try owns; with
    ``current`` (a try's own labels), also any container of an earlier try of that task instance."""
    removed = []
    for container in client.containers(all=True, filters={"label": list(labels)}):
        container_labels = container.get("Labels") or {}
        state = (
            "dead" if _earlier_try(container_labels, current) else liveness(container_labels.get(OWNER_LABEL))
        )
        if state == "alive":
            continue
        if state == "unknown" and (
            container.get("State") in ("running", "restarting", "paused")
            or not _exited_long_ago(client, container["Id"])
        ):
            continue
        names = ", ".join(name.lstrip("/") for name in container.get("Names", [])) or container["Id"][:12]
        removed.append(names)
        if not dry_run:
            with contextlib.suppress(Exception):  # gone meanwhile
                client.remove_container(container["Id"], force=True)
        log.warning("Removed container %s (%s), left by a try that is gone", names, container.get("Status"))
    return removed
