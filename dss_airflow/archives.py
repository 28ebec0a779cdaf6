"""Tar streams for a Docker daemon that cannot see the worker's files (the "copy" layout).

What bind mounts would show goes into the created container as one tar written to a temporary file
(streamed from disk: a large input folder is never held in memory), and what the task wrote comes back
as ``get_archive`` streams, extracted member by member with the standard library's ``data`` filter plus
our own check that every member stays under its destination (no absolute paths, no ``..``, no link out).
"""

from __future__ import annotations

import io
import tarfile
from pathlib import Path, PurePosixPath
from typing import IO, TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Iterable, Iterator, Sequence

    from dss_airflow.spec import MountSpec


def _anonymous(member: tarfile.TarInfo) -> tarfile.TarInfo:
    """Numeric ownership only: the container's user names need not match the worker's."""
    member.uname = member.gname = ""
    return member


def write_copies(copies: Sequence[MountSpec], fileobj: IO[bytes]) -> None:
    """One tar, to extract at ``/`` in the container: each source's tree under its target, parents as
    plain root-owned directories (``put_archive`` needs an existing directory to extract into)."""
    parents: set[PurePosixPath] = set()
    with tarfile.open(fileobj=fileobj, mode="w|", format=tarfile.PAX_FORMAT) as tar:
        for copy in copies:
            target = PurePosixPath(copy.target)
            if not target.is_absolute() or ".." in target.parts:
                raise ValueError(f"copy target {copy.target!r} must be an absolute path without '..'")
            for parent in reversed(target.parents[:-1]):
                if parent not in parents:
                    parents.add(parent)
                    entry = tarfile.TarInfo(str(parent.relative_to("/")))
                    entry.type, entry.mode = tarfile.DIRTYPE, 0o755
                    tar.addfile(entry)
            tar.add(copy.source, arcname=str(target.relative_to("/")), filter=_anonymous)


def private_file_archive(content: bytes, target: str, uid: int, gid: int) -> bytes:
    """A tar of one file at ``target`` (absolute), to extract at ``/``: the file 0400 and its directory
    0500, both owned by ``uid:gid`` (the container's user), so no other user of the container reads it.
    Its parents are left to exist or be created root-owned by the daemon."""
    path = PurePosixPath(target)
    if not path.is_absolute() or ".." in path.parts or len(path.parts) < 3:
        raise ValueError(f"private file target {target!r} must be an absolute path in a directory of its own")
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as tar:
        directory = tarfile.TarInfo(str(path.parent.relative_to("/")))
        directory.type, directory.mode = tarfile.DIRTYPE, 0o500
        entry = tarfile.TarInfo(str(path.relative_to("/")))
        entry.size, entry.mode = len(content), 0o400
        for member in (directory, entry):
            member.uid, member.gid = uid, gid
        tar.addfile(directory)
        tar.addfile(entry, io.BytesIO(content))
    return buffer.getvalue()


class ChunkReader:
    """A read-only file over an iterator of byte chunks (what ``get_archive`` returns); tarfile reads it in
    10 KiB blocks, so each chunk is kept once and served by offset (no re-copy of the rest per read)."""

    def __init__(self, chunks: Iterable[bytes]) -> None:
        self._chunks: Iterator[bytes] = iter(chunks)
        self._chunk = b""
        self._offset = 0

    def read(self, size: int = -1) -> bytes:
        parts: list[bytes] = []
        wanted = size
        while wanted != 0:
            if self._offset >= len(self._chunk):
                chunk = next(self._chunks, None)
                if chunk is None:
                    break
                self._chunk, self._offset = chunk, 0
                continue
            end = len(self._chunk) if wanted < 0 else min(len(self._chunk), self._offset + wanted)
            parts.append(self._chunk[self._offset : end])
            if wanted > 0:
                wanted -= end - self._offset
            self._offset = end
        return b"".join(parts)


def _strip_top(name: str) -> PurePosixPath | None:
    """``run/result.json`` → ``result.json``; the top directory itself → None (it is the destination)."""
    parts = PurePosixPath(name).parts
    return PurePosixPath(*parts[1:]) if len(parts) > 1 else None


def extract_stream(chunks: Iterable[bytes], destination: Path) -> list[Path]:
    """Extract a ``get_archive`` stream of one directory into ``destination`` (its top directory stripped);
    refuses absolute names, ``..`` and links leading out. Returns the regular files written."""
    destination = destination.resolve()
    written: list[Path] = []
    with tarfile.open(fileobj=ChunkReader(chunks), mode="r|") as tar:  # type: ignore[call-overload]
        for member in tar:
            if member.name.startswith("/") or ".." in PurePosixPath(member.name).parts:
                raise tarfile.OutsideDestinationError(member, str(destination / member.name))
            relative = _strip_top(member.name)
            if relative is None:
                continue
            if member.islnk():  # hard links name their target with the same top directory
                link = _strip_top(member.linkname)
                if (
                    link is None
                    or member.linkname.startswith("/")
                    or ".." in PurePosixPath(member.linkname).parts
                ):
                    raise tarfile.LinkOutsideDestinationError(member, member.linkname)
                member = member.replace(linkname=str(link), deep=False)
            member = member.replace(name=str(relative), deep=False)
            tar.extract(member, destination, filter="data")
            if member.isfile():
                written.append(destination / relative)
    return written
