"""Identity of code-env images: what the user asked for (spec), what gets installed (lock), what is built.

Two levels, so drift is explicit rather than silent:

* ``spec_hash``: python version + package lines + target platform. A change means "re-resolve".
* ``build_hash``: base image *digest* (not tag) + lock content (Python and R) + R package names + resources
  (mode and content) + the build template version. A change means "rebuild". The image tag is
  ``<env>-<build_hash[:12]>``.

Python locks are resolved once per spec with ``uv pip compile`` for the image's platform, R locks once per
(names, base digest, source) (:mod:`~dss_airflow.images.rlock`); both are stored, then reused by every
execution config (and every rebuild) of the env. Credentials never enter any hash.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from dss_airflow.errors import LockError

if TYPE_CHECKING:
    from collections.abc import Sequence

#: Bump when the install script or commit changes in a way that changes images: every env rebuilds.
TEMPLATE_VERSION = 2
#: Debian bookworm's glibc is 2.36; manylinux_2_28 wheels run on it and are the common denominator.
PLATFORM = "x86_64-manylinux_2_28"
IMAGE_REPOSITORY = "dss-code-envs"


def sha256_of(data: str | bytes) -> str:
    """Hex sha256 of text (UTF-8) or bytes: the one hash of locks and build inputs."""
    return hashlib.sha256(data.encode() if isinstance(data, str) else data).hexdigest()


def spec_hash(python: str, requirements: Sequence[str], r_packages: Sequence[str] = ()) -> str:
    """What the user asked for; order and duplicates of package lines do not matter."""
    payload = {"python": python, "requirements": sorted(set(requirements)), "platform": PLATFORM}
    if r_packages:
        payload["r"] = sorted(set(r_packages))
    return sha256_of(json.dumps(payload, sort_keys=True))


def tree_digest(path: Path) -> str:
    """Content hash of a file or directory tree: relative paths and bytes, sorted (renames count too)."""
    digest = hashlib.sha256()
    files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
    for file in files:
        relative = file.name if file == path else file.relative_to(path).as_posix()
        digest.update(relative.encode() + b"\0")
        digest.update(hashlib.sha256(file.read_bytes()).digest())
        digest.update(b"\0" + oct(file.stat().st_mode & 0o111).encode() + b"\n")
    return digest.hexdigest()


def runtime_digest() -> str:
    """The in-container runtime (runner, recipe API, model engine, ...) baked into images: its sources."""
    from dss_airflow.runtime import runtime_files

    digest = hashlib.sha256()
    for relative, path in runtime_files().items():
        digest.update(relative.encode() + b"\0" + hashlib.sha256(Path(path).read_bytes()).digest())
    return digest.hexdigest()


@dataclass(frozen=True)
class BuildInputs:
    """Everything that determines a code-env image's content."""

    base_digest: str
    lock_sha256: str
    r_packages: tuple[str, ...] = ()
    resources_mode: str = "none"
    resources_digest: str | None = None
    template_version: int = TEMPLATE_VERSION
    runtime_digest: str | None = None
    #: The R lock's sha256; None for an env without R packages (so their hashes predate R locks).
    r_lock_sha256: str | None = None

    def build_hash(self) -> str:
        payload: dict[str, object] = {
            "base_digest": self.base_digest,
            "lock_sha256": self.lock_sha256,
            "r_packages": sorted(self.r_packages),
            "resources": [self.resources_mode, self.resources_digest],
            "template_version": self.template_version,
            "runtime": self.runtime_digest,
        }
        if self.r_lock_sha256 is not None:
            payload["r_lock"] = self.r_lock_sha256
        return sha256_of(json.dumps(payload, sort_keys=True))

    def changes_from(self, previous: BuildInputs | None) -> list[str]:
        """Why an image with these inputs differs from one built with ``previous`` (for plans and logs)."""
        if previous is None:
            return ["never built"]
        reasons = []
        if previous.lock_sha256 != self.lock_sha256:
            reasons.append("resolved packages changed")
        if previous.base_digest != self.base_digest:
            reasons.append("base image changed")
        if previous.r_packages != self.r_packages:
            reasons.append("R packages changed")
        elif previous.r_lock_sha256 != self.r_lock_sha256:
            reasons.append("resolved R packages changed")
        if (previous.resources_mode, previous.resources_digest) != (
            self.resources_mode,
            self.resources_digest,
        ):
            reasons.append("resources changed")
        if previous.template_version != self.template_version:
            reasons.append("build template changed")
        if previous.runtime_digest != self.runtime_digest:
            reasons.append("dss_airflow runtime changed")
        return reasons


def image_tag(env_name: str, build_hash: str) -> str:
    return f"{IMAGE_REPOSITORY}:{env_name}-{build_hash[:12]}"


@dataclass(frozen=True)
class Lock:
    """A resolved package list: exact pins for the image's platform and python, and of its R packages."""

    spec_hash: str
    text: str
    r_text: str = ""  # the R lock (:mod:`~dss_airflow.images.rlock`), empty without R packages

    @property
    def sha256(self) -> str:
        return sha256_of(self.text)

    @property
    def r_sha256(self) -> str | None:
        return sha256_of(self.r_text) if self.r_text else None

    @property
    def distributions(self) -> list[str]:
        """Pinned distribution names, for the smoke test's imports."""
        return [line.split("==", 1)[0].strip() for line in self.text.splitlines() if "==" in line]


class LockStore(Protocol):
    """Where resolved package lists are kept by spec hash (the ledger), so every host reuses them."""

    def lock_text(self, spec_hash: str) -> str | None: ...

    def store_lock(self, spec_hash: str, text: str) -> None: ...


def resolve_lock(
    requirements: Sequence[str],
    *,
    python: str,
    store: LockStore,
    index_url: str | None = None,
    refresh: bool = False,
) -> Lock:
    """The lock of a package list: read from ``store`` when this spec was resolved before.

    ``refresh`` re-resolves (to pick up new releases of unpinned packages); a different result then
    changes the build hash, so drift shows up as a rebuild with a reason rather than silently.
    """
    key = spec_hash(python, requirements)
    known = None if refresh else store.lock_text(key)
    if known is not None:
        return Lock(spec_hash=key, text=known)
    text = _uv_compile(requirements, python=python, index_url=index_url) if requirements else ""
    store.store_lock(key, text)
    return Lock(spec_hash=key, text=text)


def _uv_compile(requirements: Sequence[str], *, python: str, index_url: str | None) -> str:
    from uv import find_uv_bin

    with tempfile.TemporaryDirectory(prefix="dss-lock-") as tmp:
        source = Path(tmp) / "requirements.in"
        source.write_text("\n".join(requirements) + "\n", encoding="utf-8")
        command = [
            str(find_uv_bin()), "pip", "compile", str(source),
            "--python-version", python, "--python-platform", PLATFORM,
            "--no-header", "--no-annotate", "--quiet",
        ]  # fmt: skip
        if index_url:
            command += ["--index-url", index_url]
        completed = subprocess.run(
            command, capture_output=True, text=True, check=False, env={**os.environ, "UV_NO_PROGRESS": "1"}
        )
    if completed.returncode != 0:
        tail = "\n".join(completed.stderr.strip().splitlines()[-15:])
        raise LockError(f"could not resolve the package list ({', '.join(requirements)}):\n{tail}")
    return completed.stdout
