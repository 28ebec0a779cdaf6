"""Reading the data of a model task: a csv/parquet file or a directory of them, as one DataFrame."""

import hashlib
import os
from typing import Any, Dict, List, Tuple

from ..errors import ModelInputError
from .common import DATA_SUFFIXES, _log


def _data_files(data_path: str) -> List[str]:
    """The data files behind data_path: the file itself, or every csv/parquet file under the directory."""
    if os.path.isfile(data_path):
        if not data_path.lower().endswith(DATA_SUFFIXES):
            raise ModelInputError(
                "data %s: unsupported file type; the model reads .csv, .parquet or .pq files (or a "
                "directory of them): write one of those in the prepare recipe" % data_path
            )
        return [data_path]
    if not os.path.isdir(data_path):
        raise ModelInputError(
            "data %s does not exist: check the task's data input (folder and file name) and that the "
            "recipe producing it ran first" % data_path
        )
    found = []
    for directory, subdirectories, names in os.walk(data_path):
        subdirectories[:] = sorted(name for name in subdirectories if not name.startswith((".", "_")))
        for name in names:
            if name.lower().endswith(DATA_SUFFIXES) and not name.startswith((".", "_")):
                found.append(os.path.join(directory, name))
    if not found:
        raise ModelInputError(
            "data directory %s holds no .csv, .parquet or .pq file: point the data input at the "
            "prepared data" % data_path
        )
    return sorted(found)


def _read_table(path: str) -> Any:
    import pandas as pd

    try:
        if path.lower().endswith(".csv"):
            return pd.read_csv(path)
        return pd.read_parquet(path)
    except (ValueError, OSError) as exc:
        raise ModelInputError(
            "data %s cannot be read (%s: %s): fix or rewrite the file in the prepare recipe"
            % (path, type(exc).__name__, exc)
        ) from exc


def _fingerprint(files: List[str], root: str) -> str:
    """sha256 of the file bytes (one file: exactly ``sha256sum``; several: of their names and hashes)."""
    digests = []
    for path in files:
        digest = hashlib.sha256()
        with open(path, "rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
        digests.append("%s  %s" % (digest.hexdigest(), os.path.relpath(path, root)))
    if len(files) == 1:
        return digests[0].split()[0]
    return hashlib.sha256("\n".join(digests).encode("utf-8")).hexdigest()


def load_data(data_path: str, allow_empty: bool = False) -> Tuple[Any, Dict[str, Any]]:
    """The data as one DataFrame, plus what meta.json records about it (files, fingerprint, shape).
    Only scoring accepts no rows (a batch with nothing new); training and evaluation need rows."""
    import pandas as pd

    data_path = os.fspath(data_path)
    files = _data_files(data_path)
    frames = [_read_table(path) for path in files]
    frame = frames[0] if len(frames) == 1 else pd.concat(frames, ignore_index=True)
    frame.columns = [str(column) for column in frame.columns]
    root = data_path if os.path.isdir(data_path) else os.path.dirname(data_path)
    relative = [os.path.relpath(path, root) for path in files]
    label = relative[0] if len(files) == 1 else "%s/ (%d files)" % (os.path.basename(data_path), len(files))
    info = {
        "path": data_path,
        "label": label,
        "files": relative,
        "sha256": _fingerprint(files, root),
        "rows": int(len(frame)),
        "columns": list(frame.columns),
    }
    _log("loaded %d rows x %d columns from %s" % (len(frame), len(frame.columns), label))
    if len(frame) == 0 and not allow_empty:
        raise ModelInputError("data %s has no rows: check the filter of the recipe that wrote it" % data_path)
    return frame, info
