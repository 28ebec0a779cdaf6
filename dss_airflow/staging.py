"""Host side of a recipe run: the run directory, staged outputs and their atomic promotion.

A recipe never writes into a managed folder directly. Each output gets a staging directory *inside* its
managed folder (``.dss-staging/<run>/<output>``, same filesystem, so promotion is a rename); after a
successful run every staged file is moved into place with ``os.replace`` (atomic per file), and after a
failure the staging directory is deleted. Either way nothing half-written is ever visible.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import shutil
import tempfile
from collections.abc import Callable, Iterable, Iterator, Mapping
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any

from dss_airflow.errors import ConfigError
from dss_airflow.publish import STAGING_DIR, publish, staging_root
from dss_airflow.spec import ContainerSpec, InputRef, OutputRef, user_ids

if TYPE_CHECKING:
    from dss_airflow.config.catalog import Catalog

log = logging.getLogger(__name__)

_IO_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$")

FolderRefs = Mapping[str, str] | Iterable[str] | None


def copy_refs(refs: FolderRefs) -> Any:
    """A private copy of an author's refs (Airflow renders template fields in place)."""
    if refs is None or isinstance(refs, str | Mapping):
        return dict(refs) if isinstance(refs, Mapping) else refs
    return list(refs)


def named_refs(refs: FolderRefs, field: str) -> dict[str, str]:
    """``["raw"]`` or ``{"orders": "raw/orders.csv"}`` → {name: ref}; names are safe path components."""
    if refs is None:
        return {}
    if isinstance(refs, str):
        refs = [refs]
    named = dict(refs) if isinstance(refs, Mapping) else {ref: ref for ref in refs}
    for name, ref in named.items():
        if isinstance(ref, str) and ref.startswith(("/", "~")):
            raise ConfigError(
                "inputs and outputs name managed folders, not host paths",
                field=f"{field}.{name}" if name != ref else field,
                value=ref,
                fix="declare a managed folder for that directory in the config (managed_folders), then "
                "write 'folder' or 'folder/sub/path'",
            )
    for name in named:
        if not _IO_NAME.match(name):
            raise ConfigError(
                "invalid input/output name",
                field=field,
                value=name,
                fix="use a dict {name: 'folder/sub/path'}; names use letters, digits, '.', '_' and '-'",
            )
    return named


def split_ref(ref: str, field: str) -> tuple[str, PurePosixPath]:
    folder, _, rest = ref.partition("/")
    sub_path = PurePosixPath(rest) if rest else PurePosixPath()
    if sub_path.is_absolute() or ".." in sub_path.parts or STAGING_DIR in sub_path.parts or "\\" in ref:
        raise ConfigError(
            "path escapes its managed folder",
            field=field,
            value=ref,
            fix="write 'folder' or 'folder/relative/path' without '..'",
        )
    return folder, sub_path


def plan_inputs(
    catalog: Catalog, refs: FolderRefs, root: Callable[[str], Path] | None = None
) -> tuple[InputRef, ...]:
    """Inputs with the folder paths the task sees: ``root(folder)``, by default the worker's directory."""
    planned = []
    for name, ref in named_refs(refs, "inputs").items():
        folder, sub_path = split_ref(ref, f"inputs.{name}")
        catalog_folder(catalog, folder, f"inputs.{name}")
        host_folder = root(folder) if root else catalog.folder_path(folder)
        planned.append(InputRef(name=name, folder=folder, sub_path=sub_path, host_folder=host_folder))
    return tuple(planned)


def plan_outputs(
    catalog: Catalog,
    refs: FolderRefs,
    run_key: str,
    root: Callable[[str], Path] | None = None,
    *,
    published: bool = True,
) -> tuple[OutputRef, ...]:
    """Outputs staged beside their folder, ``<parent>/.dss-staging/<folder>/<run_key>/<name>`` (``root``:
    where the task sees folders; default the worker's), so publishing a folder never moves a staging.
    Pods promote file by file inside their volume (``published=False``): staged in the folder itself."""
    planned = []
    for name, ref in named_refs(refs, "outputs").items():
        folder, sub_path = split_ref(ref, f"outputs.{name}")
        catalog_folder(catalog, folder, f"outputs.{name}")
        host_folder = root(folder) if root else catalog.folder_path(folder)
        planned.append(
            OutputRef(
                name=name,
                folder=folder,
                sub_path=sub_path,
                host_staging=(staging_root(host_folder) if published else host_folder / STAGING_DIR)
                / run_key
                / name,
                host_destination=host_folder / sub_path,
            )
        )
    return tuple(planned)


def catalog_folder(catalog: Catalog, folder: str, field: str) -> str:
    """Check that a managed folder exists (with a suggestion when not) and return its name."""
    catalog.lookup("managed_folders", folder, field=field)
    return folder


def validate_folder_refs(catalog: Catalog, inputs: FolderRefs, outputs: FolderRefs) -> None:
    """Parse-time check of inputs/outputs: names, paths and folders, without touching the disk."""
    for kind, refs in (("inputs", inputs), ("outputs", outputs)):
        for name, ref in named_refs(refs, kind).items():
            folder, _ = split_ref(ref, f"{kind}.{name}")
            catalog_folder(catalog, folder, f"{kind}.{name}")


def run_dir_path(run_key: str) -> Path:
    """The private directory of one run on the worker (context.json, result.json, the recipe's cwd):
    named by its run key, so what a dead try left behind can be found by it."""
    safe = re.sub(r"[^A-Za-z0-9_.-]+", "_", run_key)[-120:]
    return Path(tempfile.gettempdir()) / f"dss-run-{safe}"


def run_dirs() -> list[Path]:
    """This host's run directories (what :func:`run_dir_path` names), for the leftover sweeps."""
    return [p for p in run_dir_path("x").parent.glob("dss-run-*") if p.is_dir()]


def staging_runs(staging_roots: Iterable[Path]) -> list[Path]:
    """The per-try staging directories (``<run key>``) in staging roots (:func:`~dss_airflow.publish.
    staging_root`, or a pod layout's ``<folder>/.dss-staging``)."""
    found: list[Path] = []
    for root in staging_roots:
        with contextlib.suppress(OSError):
            found += [p for p in root.iterdir() if p.is_dir()]
    return found


def owner_of(spec: ContainerSpec) -> tuple[int, int] | None:
    """As root, the writable run directories go to the container's non-root user."""
    if os.getuid() != 0 or spec.user is None:
        return None
    return user_ids(spec.user)


@contextlib.contextmanager
def worker_staging(spec: ContainerSpec) -> Iterator[None]:
    """For backends whose task sees the worker's folders (local, Docker): the run directory with the
    context (and a local run's secrets file, 0600), empty staging directories owned by the task's user; all
    removed afterwards, whatever happens (after a success the promoted files have left the staging
    directories; a killed try's run directory is swept by the next task on this host)."""
    from dss_airflow.leftovers import sweep_directories

    if spec.run_dir is None:
        raise ValueError("worker staging needs a run directory on the worker")
    # What killed tries left here: this host's run directories, the staging of this task's outputs.
    sweep_directories(run_dirs() + staging_runs({ref.host_staging.parent.parent for ref in spec.outputs}))
    try:
        _prepare_run(spec.run_dir, spec.context, spec.outputs, owner_of(spec))
        if spec.secrets is not None and spec.host_secrets_file is not None:
            write_private_file(spec.host_secrets_file, spec.secrets.file_content())
        yield
    finally:
        discard_staging(spec.outputs)
        shutil.rmtree(spec.run_dir, ignore_errors=True)


def _prepare_run(
    run_dir: Path,
    context: Mapping[str, Any],
    outputs: Iterable[OutputRef],
    owner: tuple[int, int] | None,
) -> None:
    """Write the context and create the writable directories, owned by ``owner`` (the container's uid).

    The context holds rendered params (a templated password, say): the run directory is 0700 and the
    file 0600 from the moment it exists, readable only by the task's own user."""
    from dss_airflow.leftovers import mark_owner

    run_dir.mkdir(mode=0o700)
    mark_owner(run_dir)
    (run_dir / "cwd").mkdir(mode=0o700)
    context_file = run_dir / "context.json"
    write_private_file(context_file, json.dumps(context, indent=2, sort_keys=True).encode())
    writable = [run_dir, run_dir / "cwd", context_file]
    for ref in outputs:
        if ref.host_staging.exists():
            shutil.rmtree(ref.host_staging)
        ref.host_staging.mkdir(parents=True)
        mark_owner(ref.host_staging.parent)
        output_folder(ref).mkdir(parents=True, exist_ok=True)  # it may be mounted as an input too
        writable.append(ref.host_staging)
    if owner is not None:
        for path in writable:
            os.chown(path, *owner)


def write_private_file(path: Path, content: bytes) -> None:
    """A new file readable by this process's user only (0600 from the moment it exists)."""
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(descriptor, "wb") as stream:
        stream.write(content)


def promote_outputs(outputs: Iterable[OutputRef]) -> dict[str, list[str]]:
    """Publish every output as one switch (:mod:`dss_airflow.publish`); returns the promoted paths."""
    promoted: dict[str, list[str]] = {}
    for ref in outputs:
        promoted[ref.name] = publish(
            ref.host_staging, ref.host_destination, output_folder(ref), label=ref.name
        )
    return promoted


def output_folder(ref: OutputRef) -> Path:
    """The managed folder an output lands in (its destination without the sub path)."""
    parts = ref.host_destination.parts
    return Path(*parts[: len(parts) - len(ref.sub_path.parts)])


def discard_staging(outputs: Iterable[OutputRef]) -> None:
    """Remove staging directories (after success they are empty; after failure they hold partial files)."""
    for ref in outputs:
        run_staging = ref.host_staging.parent
        shutil.rmtree(run_staging, ignore_errors=True)


def read_result(result_file: Path) -> dict[str, Any] | None:
    """The runner's JSON result, or None when the runner never wrote one (killed, image without python)."""
    try:
        data = json.loads(result_file.read_text(encoding="utf-8"))
    except (FileNotFoundError, json.JSONDecodeError):
        return None
    return data if isinstance(data, dict) else None
