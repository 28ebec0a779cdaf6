"""What config loading keeps on disk, under ``cache_dir()``, so the DAG processor's and the workers' fresh
processes neither parse YAML nor validate models again for inputs seen before.

* ``config-parses/``: each YAML file's parse by its bytes (marshal: plain data only);
* ``catalogs/``: each validated :class:`Catalog` by the bytes of every file it was read from, the
  directories searched, the environment variables the YAML refers to and the config package's code
  (pickle, read only from a file the user owns and nobody else can write).

Everything here is best effort: a missing, unreadable or stale entry is a miss, never an error.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import marshal
import os
import pickle
import re
import tempfile
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from dss_airflow.config.catalog import Catalog

if TYPE_CHECKING:
    from collections.abc import Mapping


# -------------------------------------------------------------------------------------- YAML parses
def parse_cache_dir() -> Path:
    from dss_airflow.settings import cache_dir

    return cache_dir() / "config-parses"


def cached_parse(key: str) -> tuple[Any, Any, Any, Any] | None:
    """(data, keys, line numbers, duplicates) of a YAML parse of these bytes, if one was stored."""
    try:
        data, keys, line_numbers, duplicates = marshal.loads((parse_cache_dir() / key).read_bytes())
    except (OSError, ValueError, EOFError, TypeError):
        return None
    return data, keys, line_numbers, duplicates


def store_parse(key: str, parse: tuple[Any, Any, Any, Any]) -> None:
    """Best effort: a parse holding values marshal cannot write (YAML dates) is simply not cached."""
    try:
        _store(parse_cache_dir(), key, marshal.dumps(parse))
    except (OSError, ValueError):
        return


def _store(directory: Path, key: str, payload: bytes) -> None:
    """``directory/key`` written atomically and privately (0600 in a 0700 directory)."""
    directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd, tmp = tempfile.mkstemp(prefix=f".{key}.", dir=directory)
    with os.fdopen(fd, "wb") as handle:
        handle.write(payload)
    os.replace(tmp, directory / key)


# ------------------------------------------------------------------------------ validated catalogs
#: Bump when what a load produces changes without a change to the config package's files.
CATALOG_CACHE_VERSION = b"1"
#: Catalogs kept on disk (one per distinct config content; the oldest are removed).
CATALOG_CACHE_KEEP = 16
_VARIABLE = re.compile(rb"\$\{?([A-Za-z_][A-Za-z0-9_]*)")


def read_contents(files: list[Path]) -> dict[Path, bytes]:
    contents = {}
    for path in files:
        with contextlib.suppress(OSError):  # unreadable: _load_file reports it
            contents[path] = path.read_bytes()
    return contents


@functools.cache
def _code_stamp() -> bytes:
    """The config package's own files (size, mtime): a catalog validated by other code is never reused."""
    package = Path(__file__).parent
    stats = [(p.name, p.stat().st_size, p.stat().st_mtime_ns) for p in sorted(package.glob("*.py"))]
    return repr((CATALOG_CACHE_VERSION, stats)).encode()


def catalog_key(config_dir: Path, sources: tuple[Path, ...], contents: Mapping[Path, bytes]) -> str:
    """What a load's result depends on: the files (paths and bytes), the directories searched, the
    environment variables the YAML refers to (paths may use ``$VAR`` and ``~``) and the code."""
    digest = hashlib.sha256(_code_stamp() + b"\0" + bytes(config_dir))
    names: set[bytes] = set()
    for path in sources:
        raw = contents.get(path)
        digest.update(bytes(path) + (b"\0" + hashlib.sha256(raw).digest() if raw is not None else b"\0-"))
        if raw is not None:
            names.update(_VARIABLE.findall(raw))
            if b"~" in raw:
                names.add(b"HOME")
    for name in sorted(names):
        digest.update(name + b"=" + os.environ.get(name.decode(), "").encode() + b"\0")
    return digest.hexdigest()


def catalog_cache_dir() -> Path:
    from dss_airflow.settings import cache_dir

    return cache_dir() / "catalogs"


def cached_catalog(key: str) -> Catalog | None:
    """A catalog this user validated earlier from the same inputs: a task process then builds no models
    and validates nothing (a 46k-folder config costs a fraction of its load). Only a file the user owns
    and nobody else can write is unpickled; a requirements file that changed since is a miss."""
    path = catalog_cache_dir() / key
    try:
        with path.open("rb") as handle:
            info = os.fstat(handle.fileno())
            if info.st_uid != os.getuid() or info.st_mode & 0o022:
                return None
            catalog, requirement_digests = pickle.load(handle)
    except Exception:  # noqa: BLE001 - an entry that does not load (older code, truncated) is a miss
        return None
    for requirement_path, known in requirement_digests:
        try:
            if hashlib.sha256(Path(requirement_path).read_bytes()).hexdigest() != known:
                return None
        except OSError:
            return None
    return catalog if isinstance(catalog, Catalog) else None


def store_catalog(key: str, catalog: Catalog, requirement_files: tuple[Path, ...]) -> None:
    """Best effort; the oldest entries beyond CATALOG_CACHE_KEEP are removed."""
    try:
        digests = [(str(p), hashlib.sha256(p.read_bytes()).hexdigest()) for p in requirement_files]
        payload = pickle.dumps((replace(catalog, fingerprint=()), digests), protocol=pickle.HIGHEST_PROTOCOL)
        directory = catalog_cache_dir()
        _store(directory, key, payload)
        kept = sorted(directory.iterdir(), key=lambda p: p.stat().st_mtime, reverse=True)
        for stale in kept[CATALOG_CACHE_KEEP:]:
            stale.unlink(missing_ok=True)
    except (OSError, pickle.PicklingError, TypeError, AttributeError):
        return
