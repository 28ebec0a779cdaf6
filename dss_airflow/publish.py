"""Outputs published as one switch: a reader of a managed folder sees the whole old or the whole new output.

A run's staged files are not moved into the folder one by one (a reader listing it would see old and new
files mixed). The new version of the output directory is built next to it — the current files
hard-linked (no copy), the staged ones moved in — and exchanged with it in one ``renameat2
(RENAME_EXCHANGE)``: the directory's path names the old tree, then the new one, never a mix. Writers of
one managed folder take turns (a lock per folder, so nested outputs such as ``models`` and
``models/m/versions`` cannot interleave). The replaced tree is kept for :data:`RETIRE_AFTER_S` so a reader
still inside it (a container that mounted it, a process whose cwd or directory fd is in it) keeps a whole
version, then removed by a later publication.

What a reader may rely on: opening the output directory once (``cd``, a directory fd, a bind mount) gives
one whole version; a listing is always one version. A reader that re-resolves the path for each file
may cross one switch. Filesystems without RENAME_EXCHANGE (some network filesystems) fall back to two
renames, leaving the path missing for that instant (logged once).

Staging lives outside the folder (``<parent>/.dss-staging/<folder>/<run>/<output>``), so publishing the
folder itself never moves another run's staging.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import fcntl
import functools
import logging
import os
import secrets
import shutil
import time
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator
    from pathlib import Path

log = logging.getLogger(__name__)

STAGING_DIR = ".dss-staging"
#: How long a replaced version is kept for readers still inside it.
RETIRE_AFTER_S = 3600
_AT_FDCWD = -100
_RENAME_EXCHANGE = 2
_NEW, _OLD = ".dss-new-", ".dss-old-"


def staging_root(folder: Path) -> Path:
    """Where the runs writing into ``folder`` stage (and take turns): beside it, never inside it."""
    return folder.parent / STAGING_DIR / folder.name


@contextlib.contextmanager
def folder_lock(folder: Path) -> Iterator[None]:
    """Writers of one managed folder take turns (an flock beside the folder, as for its staging)."""
    root = staging_root(folder)
    root.mkdir(parents=True, exist_ok=True)
    with open(root / ".lock", "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        yield


@functools.cache
def _renameat2() -> Callable[..., int] | None:
    try:
        function: Any = ctypes.CDLL(None, use_errno=True).renameat2
    except (AttributeError, OSError):  # libc before 2.28, or not Linux
        return None
    function.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    function.restype = ctypes.c_int
    return function  # type: ignore[no-any-return]


def exchange(first: Path, second: Path) -> bool:
    """Swap two paths atomically; False when the filesystem (or libc) cannot."""
    renameat2 = _renameat2()
    if renameat2 is None:
        return False
    if renameat2(_AT_FDCWD, os.fsencode(first), _AT_FDCWD, os.fsencode(second), _RENAME_EXCHANGE) == 0:
        return True
    code = ctypes.get_errno()
    if code in (errno.EINVAL, errno.ENOSYS, errno.EXDEV, errno.ENOTSUP):
        return False
    raise OSError(code, os.strerror(code), str(second))


def _link_or_copy(source: str, destination: str) -> None:
    try:
        os.link(source, destination)
    except OSError:  # another filesystem, or links not allowed: a copy keeps the old tree intact too
        shutil.copy2(source, destination)


def _retire_old(destination: Path) -> None:
    """Remove replaced versions of ``destination`` that no reader should still be in."""
    cutoff = time.time() - RETIRE_AFTER_S
    for old in destination.parent.glob(f"{_OLD}{destination.name}-*"):
        with contextlib.suppress(OSError, ValueError):
            if float(old.name.rsplit("-", 1)[1]) < cutoff:
                shutil.rmtree(old)


def publish(staging: Path, destination: Path, folder: Path, *, label: str) -> list[str]:
    """Make ``destination`` the current files plus the staged ones, in one switch; the promoted paths."""
    staged = sorted(p for p in staging.rglob("*") if p.is_file() or p.is_symlink())
    for link in [p for p in staged if p.is_symlink()]:
        log.warning("Output %s: symbolic link %s not promoted", label, link)
    files = [p for p in staged if not p.is_symlink()]
    if not files:
        return []
    with folder_lock(folder):
        destination.parent.mkdir(parents=True, exist_ok=True)
        new = destination.parent / f"{_NEW}{destination.name}-{secrets.token_hex(4)}"
        try:
            if destination.is_dir():
                # Nested outputs' replaced or half-built versions stay out of the new one.
                transient = shutil.ignore_patterns(f"{_NEW}*", f"{_OLD}*")
                shutil.copytree(
                    destination, new, symlinks=True, copy_function=_link_or_copy, ignore=transient
                )
            else:
                new.mkdir()
            for source in files:
                target = new / source.relative_to(staging)
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.move(source, target)  # a rename on the same filesystem
            _switch(new, destination)
        finally:
            shutil.rmtree(new, ignore_errors=True)  # what is left of a failed build
        _retire_old(destination)
    return [str(destination / source.relative_to(staging)) for source in files]


@functools.cache
def _warn_no_exchange(where: str) -> None:
    log.warning("%s cannot exchange directories atomically: outputs switch with two renames", where)


def _switch(new: Path, destination: Path) -> None:
    retired = destination.parent / f"{_OLD}{destination.name}-{time.time():.6f}"
    if not destination.exists():
        os.rename(new, destination)
    elif exchange(new, destination):
        os.rename(new, retired)  # ``new`` now names the old tree
    else:
        _warn_no_exchange(str(destination.parent))
        os.rename(destination, retired)
        os.rename(new, destination)
