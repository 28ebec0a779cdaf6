"""Build the air-gapped Debian base image every dss_airflow image starts from.

Our hosts reach no container registry (Docker Hub included), only PyPI and a Debian mirror, so the base
image is made from scratch: debootstrap a minimal Debian with python3 from the host's apt mirror, add the
unprivileged run-as user and the host CA bundle (the TLS proxy's CA must be trusted for pip to work), and
``docker import`` the root filesystem. Builds take minutes, so the image is cached by content: it carries
the recipe's content hash as a label and is rebuilt only when the recipe or the CA bundle's content changes.
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import fcntl
import hashlib
import json
import logging
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from dss_airflow.errors import (
    BootstrapUnavailableError,
    ConfigError,
    DSSAirflowError,
    ImageBuildError,
    MirrorNotFoundError,
)

if TYPE_CHECKING:
    from collections.abc import Iterator

    import docker

log = logging.getLogger(__name__)

HASH_LABEL = "dss_airflow.base_hash"
KIND_LABEL = "dss_airflow.kind"
CONTAINER_CA_BUNDLE = "/etc/ssl/certs/ca-certificates.crt"
HOST_CA_IN_IMAGE = "/usr/local/share/ca-certificates/dss-host-ca.crt"
CONTAINER_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

_TAIL_LINES = 30
_DEBOOTSTRAP_TIMEOUT_S = 1800
_API_TIMEOUT_S = 600
_CHUNK = 1 << 20
_NAME_RE = re.compile(r"^[a-z_][a-z0-9_-]{0,31}$")
_PACKAGE_RE = re.compile(r"^[a-z0-9][a-z0-9+.-]+$")
_SUITE_RE = re.compile(r"^[a-z0-9][a-z0-9.-]*$")


@dataclass(frozen=True)
class BootstrapRecipe:
    """What goes into the base image; its content hash is the cache key (see :meth:`content_hash`)."""

    # Bump whenever the build steps below change in a way that changes the image, to invalidate caches.
    RECIPE_VERSION: ClassVar[int] = 1

    suite: str = "bookworm"
    packages: tuple[str, ...] = ("python3", "python3-venv", "ca-certificates")
    uid: int = 1000
    user: str = "dss"
    ca_bundle: Path | None = Path("/etc/ssl/certs/ca-certificates.crt")

    def __post_init__(self) -> None:
        """Reject values that would break debootstrap/useradd late and obscurely (or inject arguments)."""
        if not _SUITE_RE.match(self.suite):
            raise ConfigError(
                "invalid Debian suite", field="suite", value=self.suite, fix="Use e.g. bookworm"
            )
        bad = [p for p in self.packages if not _PACKAGE_RE.match(p)]
        if bad or not self.packages:
            raise ConfigError(
                "invalid or empty Debian package list",
                field="packages",
                value=bad or self.packages,
                fix="Give Debian package names such as 'python3'",
            )
        if not 1 <= self.uid <= 65533:
            raise ConfigError("uid must be a non-root uid in 1..65533", field="uid", value=self.uid)
        if not _NAME_RE.match(self.user):
            raise ConfigError(
                "invalid user name",
                field="user",
                value=self.user,
                fix="Use lowercase letters, digits, _ or -",
            )

    def ca_bundle_sha256(self) -> str | None:
        """Hash of the CA bundle's content (None when absent): a rotated proxy CA must rebuild the image."""
        if self.ca_bundle is None or not self.ca_bundle.is_file():
            return None
        return hashlib.sha256(self.ca_bundle.read_bytes()).hexdigest()

    def content_hash(self) -> str:
        """sha256 over everything that determines the image; paths and package order deliberately excluded."""
        payload = {
            "recipe_version": self.RECIPE_VERSION,
            "suite": self.suite,
            "packages": sorted(set(self.packages)),
            "uid": self.uid,
            "user": self.user,
            "ca_bundle_sha256": self.ca_bundle_sha256(),
        }
        canonical = json.dumps(payload, sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(canonical.encode()).hexdigest()


DEFAULT_RECIPE = BootstrapRecipe()


def default_base_tag() -> str:
    """Tag of the default base image (bookworm ships Python 3.11, the version Airflow workers run)."""
    return "dss-airflow-base:bookworm-py311"


# --- apt sources -----------------------------------------------------------------------------------------


def _deb822_entries(text: str) -> Iterator[tuple[str, list[str]]]:
    """(uri, suites) of the enabled binary ``deb`` stanzas of a deb822 ``.sources`` file."""
    for stanza in re.split(r"\n\s*\n", text):
        fields: dict[str, str] = {}
        key = ""
        for line in stanza.splitlines():
            if not line.strip() or line.lstrip().startswith("#"):
                continue
            if line[0] in " \t" and key:
                fields[key] += " " + line.strip()
            elif ":" in line:
                key, _, value = line.partition(":")
                key = key.strip().lower()
                fields[key] = value.strip()
        if "deb" not in fields.get("types", "").split() or fields.get("enabled", "yes").lower() == "no":
            continue
        suites = fields.get("suites", "").split()
        for uri in fields.get("uris", "").split():
            yield uri, suites


_CLASSIC_RE = re.compile(r"^deb\s+(?:\[[^\]]*\]\s+)?(\S+)\s+(\S+)")


def _classic_entries(text: str) -> Iterator[tuple[str, list[str]]]:
    """(uri, suites) of the ``deb`` lines of a one-line-style ``sources.list``."""
    for line in text.splitlines():
        match = _CLASSIC_RE.match(line.split("#", 1)[0].strip())
        if match:
            yield match.group(1), [match.group(2)]


def _is_security(uri: str, suites: list[str]) -> bool:
    """Security archives only carry updates, debootstrap needs a full mirror."""
    return (
        "-security" in uri
        or "security.debian.org" in uri
        or (bool(suites) and all(s.endswith("-security") or s.endswith("/updates") for s in suites))
    )


def debian_mirror(sources_dir: Path = Path("/etc/apt")) -> str:
    """First http(s) Debian mirror of the host's apt sources: the only package source we can reach."""
    files: list[Path] = []
    if (sources_dir / "sources.list").is_file():
        files.append(sources_dir / "sources.list")
    parts = sources_dir / "sources.list.d"
    if parts.is_dir():
        files.extend(sorted(p for p in parts.iterdir() if p.suffix in (".list", ".sources") and p.is_file()))
    for path in files:
        text = path.read_text(errors="replace")
        entries = _deb822_entries(text) if path.suffix == ".sources" else _classic_entries(text)
        for uri, suites in entries:
            if uri.startswith(("http://", "https://")) and not _is_security(uri, suites):
                return uri.rstrip("/")
    searched = ", ".join(str(p) for p in files) or f"nothing ({sources_dir}/sources.list and "
    if not files:
        searched += f"{sources_dir}/sources.list.d/*.sources|*.list do not exist)"
    raise MirrorNotFoundError(
        f"no http(s) Debian mirror found in the apt sources; searched {searched}. Add one (e.g. 'deb "
        "http://deb.debian.org/debian bookworm main' in /etc/apt/sources.list) or pass mirror= / --mirror."
    )


# --- docker engine ---------------------------------------------------------------------------------------


def _api_client(docker_url: str | None) -> docker.APIClient:
    """Low-level client (``import_image`` lives there); honours DOCKER_HOST/DOCKER_TLS_* like the CLI."""
    import docker
    from docker.utils import kwargs_from_env

    try:
        kwargs: dict[str, Any] = kwargs_from_env()
        if docker_url:
            kwargs["base_url"] = docker_url
        return docker.APIClient(timeout=_API_TIMEOUT_S, **kwargs)
    except docker.errors.DockerException as exc:
        where = docker_url or os.environ.get("DOCKER_HOST") or "the default socket"
        raise BootstrapUnavailableError(
            f"cannot reach the Docker engine at {where}: {exc}. Start one with scripts/ensure-docker.sh "
            "(as root it installs and starts dockerd)."
        ) from exc


def _image_info(api: docker.APIClient, ref: str) -> dict[str, Any] | None:
    """``docker inspect`` of an image, None when it does not exist."""
    import docker

    try:
        info: dict[str, Any] = api.inspect_image(ref)
    except docker.errors.ImageNotFound:
        return None
    return info


def _cached_image_id(api: docker.APIClient, tag: str, wanted: str) -> str | None:
    """Id of the image under ``tag`` when it was built from the wanted recipe hash."""
    info = _image_info(api, tag)
    if info is None:
        return None
    labels = (info.get("Config") or {}).get("Labels") or {}
    if labels.get(HASH_LABEL) == wanted:
        return str(info["Id"])
    log.info("base image %s is stale (hash %s, want %s): rebuilding", tag, labels.get(HASH_LABEL), wanted)
    return None


# --- locking and scratch space ---------------------------------------------------------------------------


def _scratch_dir() -> Path:
    """/var/tmp (disk-backed, survives reboots of long builds) when writable, else the system temp dir."""
    var_tmp = Path("/var/tmp")
    if var_tmp.is_dir() and os.access(var_tmp, os.W_OK):
        return var_tmp
    return Path(tempfile.gettempdir())


@contextlib.contextmanager
def _tag_lock(tag: str) -> Iterator[None]:
    """Exclusive lock per tag so concurrent processes never bootstrap the same image twice."""
    safe = re.sub(r"[^A-Za-z0-9_.-]", "_", tag)[:60]
    digest = hashlib.sha256(tag.encode()).hexdigest()[:12]
    path = _scratch_dir() / f"dss-airflow-bootstrap-{safe}-{digest}.lock"
    fd = os.open(path, os.O_RDONLY | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            log.info("another process is bootstrapping %s; waiting for it (lock %s)", tag, path)
            fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # closing releases the flock


# --- build steps -----------------------------------------------------------------------------------------


def _tail(text: str, lines: int = _TAIL_LINES) -> list[str]:
    return text.rstrip().splitlines()[-lines:]


def _run(argv: list[str], what: str, *, timeout: float | None = None) -> str:
    """Run a build tool, raising ImageBuildError with the tail of its combined output on failure."""
    env = {"PATH": CONTAINER_PATH, "LANG": "C.UTF-8", "DEBIAN_FRONTEND": "noninteractive"}
    for passthrough in ("http_proxy", "https_proxy", "no_proxy", "HTTP_PROXY", "HTTPS_PROXY", "NO_PROXY"):
        if passthrough in os.environ:
            env[passthrough] = os.environ[passthrough]
    try:
        proc = subprocess.run(
            argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, errors="replace",
            env=env, timeout=timeout, check=False,
        )  # fmt: skip
    except subprocess.TimeoutExpired as exc:
        partial = exc.stdout if isinstance(exc.stdout, str) else (exc.stdout or b"").decode(errors="replace")
        raise ImageBuildError(
            f"{what} timed out after {timeout:.0f}s", logs=_tail(partial), show_logs=True
        ) from exc
    if proc.returncode != 0:
        raise ImageBuildError(
            f"{what} failed (exit {proc.returncode}): {' '.join(argv)}",
            logs=_tail(proc.stdout),
            show_logs=True,
        )
    return proc.stdout


def _require_tools() -> dict[str, str]:
    """Fail fast, and clearly, when this machine cannot bootstrap at all."""
    if os.geteuid() != 0:
        raise BootstrapUnavailableError(
            "bootstrapping the base image needs root (debootstrap and chroot); run "
            "scripts/ensure-base-image.sh as root, or build the image once on a machine where you are root."
        )
    tools = {name: shutil.which(name, path=CONTAINER_PATH) for name in ("debootstrap", "chroot", "tar")}
    missing = sorted(name for name, path in tools.items() if path is None)
    if missing:
        raise BootstrapUnavailableError(
            f"missing tool(s) {', '.join(missing)} needed to bootstrap the base image; run "
            "scripts/ensure-docker.sh as root (it installs debootstrap) or apt-get install debootstrap."
        )
    return {name: path for name, path in tools.items() if path is not None}


def _debootstrap(tools: dict[str, str], recipe: BootstrapRecipe, rootfs: Path, mirror: str) -> None:
    """Minimal Debian (minbase: only Essential + apt + what --include pulls in) into ``rootfs``."""
    argv = [
        tools["debootstrap"], "--variant=minbase", "--components=main",
        "--include=" + ",".join(sorted(set(recipe.packages))), recipe.suite, str(rootfs), mirror,
    ]  # fmt: skip
    try:
        _run(argv, f"debootstrap of Debian {recipe.suite} from {mirror}", timeout=_DEBOOTSTRAP_TIMEOUT_S)
    except ImageBuildError as exc:
        # debootstrap's own log holds the apt/dpkg detail its stdout only summarises.
        detail = rootfs / "debootstrap" / "debootstrap.log"
        if detail.is_file():
            detail_tail = _tail(detail.read_text(errors="replace"), 15)
            raise ImageBuildError(
                exc.summary,
                logs=[*exc.logs, f"--- end of {detail.name} ---", *detail_tail],
                show_logs=True,
            ) from exc
        raise


def _add_user(tools: dict[str, str], recipe: BootstrapRecipe, rootfs: Path) -> None:
    """Run as a fixed non-root uid, like DSS containers, so bind-mounted files get predictable owners."""
    uid = str(recipe.uid)
    _run([tools["chroot"], str(rootfs), "groupadd", "-g", uid, recipe.user], f"groupadd {recipe.user}")
    _run(
        [tools["chroot"], str(rootfs), "useradd", "-u", uid, "-g", uid, "-m", "-s", "/bin/bash", recipe.user],
        f"useradd {recipe.user}",
    )


def _write_into(rootfs: Path, inner: str, data: bytes) -> None:
    """Write a file inside the rootfs without following a symlink out of it into the host."""
    target = rootfs / inner.lstrip("/")
    target.parent.mkdir(parents=True, exist_ok=True)
    if target.is_symlink():
        target.unlink()
    target.write_bytes(data)
    target.chmod(0o644)


def _install_ca_bundle(recipe: BootstrapRecipe, rootfs: Path) -> None:
    """Trust the host's CA bundle (incl. a TLS-intercepting proxy's CA) without update-ca-certificates."""
    if recipe.ca_bundle is None or not recipe.ca_bundle.is_file():
        log.info("no host CA bundle at %s: the image keeps Debian's CA set only", recipe.ca_bundle)
        return
    data = recipe.ca_bundle.read_bytes()
    _write_into(rootfs, HOST_CA_IN_IMAGE, data)
    _write_into(rootfs, CONTAINER_CA_BUNDLE, data)


def _slim(rootfs: Path) -> None:
    """Drop apt indexes, downloaded debs and logs: tens of MB nobody needs at run time."""
    for pattern in (
        "var/lib/apt/lists/*", "var/cache/apt/*.bin", "var/cache/apt/archives/*.deb",
        "var/cache/apt/archives/partial/*", "var/log/*.log", "var/log/apt/*",
    ):  # fmt: skip
        for path in rootfs.glob(pattern):
            if path.name == "lock":
                continue
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path)
            else:
                path.unlink()


def _changes(recipe: BootstrapRecipe, content_hash: str) -> list[str]:
    """Dockerfile instructions applied at import time (``docker import --change``)."""
    return [
        f"LABEL {HASH_LABEL}={content_hash}",
        f"LABEL {KIND_LABEL}=base",
        f"ENV PATH={CONTAINER_PATH}",
        "ENV LANG=C.UTF-8",
        f"ENV PIP_CERT={CONTAINER_CA_BUNDLE}",
        f"ENV SSL_CERT_FILE={CONTAINER_CA_BUNDLE}",
        f"ENV REQUESTS_CA_BUNDLE={CONTAINER_CA_BUNDLE}",
        f"USER {recipe.uid}:{recipe.uid}",
        f"WORKDIR /home/{recipe.user}",
        'CMD ["python3"]',
    ]


def _import_rootfs(
    api: docker.APIClient, tools: dict[str, str], rootfs: Path, workdir: Path, ref: str, changes: list[str]
) -> str:
    """Stream ``tar`` of the rootfs straight into the engine (no temp tarball) and return the image id."""
    import docker
    from docker.utils import parse_repository_tag

    repository, tag = parse_repository_tag(ref)
    tar_errors = workdir / "tar.stderr"
    with tar_errors.open("wb") as err:
        tar = subprocess.Popen(
            [tools["tar"], "--numeric-owner", "--one-file-system", "-C", str(rootfs), "-cf", "-", "."],
            stdout=subprocess.PIPE, stderr=err,
        )  # fmt: skip
        assert tar.stdout is not None
        stdout = tar.stdout

        def chunks() -> Iterator[bytes]:
            while chunk := stdout.read(_CHUNK):
                yield chunk

        try:
            response = api.import_image_from_stream(chunks(), repository=repository, tag=tag, changes=changes)
        except docker.errors.APIError as exc:
            raise ImageBuildError(f"docker import of the bootstrapped rootfs failed: {exc}") from exc
        finally:
            stdout.close()
            if tar.poll() is None:  # import failed mid-stream: tar may be blocked on a full pipe
                tar.kill()
            returncode = tar.wait()
    if returncode != 0:
        raise ImageBuildError(
            f"tar of the rootfs {rootfs} failed (exit {returncode})",
            logs=_tail(tar_errors.read_text(errors="replace")),
            show_logs=True,
        )
    for line in str(response).splitlines():
        with contextlib.suppress(ValueError):
            message = json.loads(line)
            if isinstance(message, dict) and message.get("error"):
                raise ImageBuildError(f"docker import of the bootstrapped rootfs failed: {message['error']}")
    info = _image_info(api, ref)
    if info is None:
        raise ImageBuildError(f"docker import reported success but {ref} does not exist: {response}")
    return str(info["Id"])


def _mounts_under(path: Path) -> list[str]:
    """Mount points inside ``path`` (debootstrap mounts /proc, /sys... in the target while it runs)."""
    prefix = str(path.resolve()) + "/"
    found: list[str] = []
    with contextlib.suppress(OSError), open("/proc/self/mountinfo") as mountinfo:
        for line in mountinfo:
            fields = line.split()
            if len(fields) > 4:
                point = re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), fields[4])
                if point.startswith(prefix):
                    found.append(point)
    return sorted(found, key=len, reverse=True)


def _remove_rootfs(workdir: Path) -> None:
    """Delete the scratch tree, but never while something is mounted in it (rmtree would reach the host)."""
    for point in _mounts_under(workdir):
        log.warning("unmounting %s left behind by debootstrap", point)
        subprocess.run(["umount", "-l", point], check=False, capture_output=True)
    leftover = _mounts_under(workdir)
    if leftover:
        log.error("not removing %s: still mounted inside it: %s", workdir, ", ".join(leftover))
        return
    try:
        shutil.rmtree(workdir)
    except OSError as exc:
        if exc.errno != errno.ENOENT:
            log.warning("could not remove scratch dir %s: %s", workdir, exc)


def _build(api: docker.APIClient, tag: str, recipe: BootstrapRecipe, content_hash: str, mirror: str) -> str:
    """One bootstrap under the tag lock: rootfs -> temporary tag -> retag, so failures never touch ``tag``."""
    import docker
    from docker.utils import parse_repository_tag

    tools = _require_tools()
    workdir = Path(tempfile.mkdtemp(prefix="dss-airflow-bootstrap-", dir=_scratch_dir()))
    rootfs = workdir / "rootfs"
    temp_ref = f"dss-airflow-bootstrap-tmp:{uuid.uuid4().hex[:16]}"
    previous: dict[str, Any] | None = None
    started = time.monotonic()
    packages = ",".join(recipe.packages)
    log.info("bootstrapping %s: debootstrap %s (%s) from %s", tag, recipe.suite, packages, mirror)
    try:
        _debootstrap(tools, recipe, rootfs, mirror)
        log.info("debootstrap done in %.0fs", time.monotonic() - started)
        _add_user(tools, recipe, rootfs)
        _install_ca_bundle(recipe, rootfs)
        _slim(rootfs)
        image_id = _import_rootfs(api, tools, rootfs, workdir, temp_ref, _changes(recipe, content_hash))
        previous = _image_info(api, tag)
        repository, tag_name = parse_repository_tag(tag)
        try:
            api.tag(image_id, repository, tag_name or "latest", force=True)
        except docker.errors.APIError as exc:
            raise ImageBuildError(f"could not tag the new base image {image_id} as {tag}: {exc}") from exc
    finally:
        _remove_rootfs(workdir)
        with contextlib.suppress(docker.errors.APIError):
            api.remove_image(temp_ref, noprune=True)  # only drops the temporary tag
    if previous is not None and previous["Id"] != image_id:
        try:
            api.remove_image(previous["Id"])
            log.info("removed the previous base image %s", previous["Id"])
        except docker.errors.APIError as exc:  # still used by containers or child images: keep it
            log.info("kept the previous base image %s: %s", previous["Id"], exc)
    log.info("built base image %s (%s) in %.0fs", tag, image_id, time.monotonic() - started)
    return image_id


def build_bootstrap_base_image(
    tag: str,
    recipe: BootstrapRecipe = DEFAULT_RECIPE,
    *,
    docker_url: str | None = None,
    mirror: str | None = None,
    force: bool = False,
) -> str:
    """Return the id of the base image under ``tag``, bootstrapping it only when missing or stale.

    Cached when the image's ``dss_airflow.base_hash`` label equals ``recipe.content_hash()``. A per-tag file
    lock serialises concurrent builders: the second waits, then finds the first one's image cached.
    """
    wanted = recipe.content_hash()
    api = _api_client(docker_url)
    try:
        if not force and (cached := _cached_image_id(api, tag, wanted)):
            log.info("base image %s cached (%s, hash %s)", tag, cached, wanted[:12])
            return cached
        with _tag_lock(tag):
            if not force and (cached := _cached_image_id(api, tag, wanted)):
                log.info("base image %s cached (%s, built by a concurrent process)", tag, cached)
                return cached
            return _build(api, tag, recipe, wanted, mirror or debian_mirror())
    finally:
        api.close()


def main(argv: list[str] | None = None) -> int:
    """``python -m dss_airflow.images.bootstrap``: build (or find cached) and print the image id."""
    parser = argparse.ArgumentParser(
        prog="python -m dss_airflow.images.bootstrap",
        description="Bootstrap the air-gapped Debian base image (cached by content) and print its id.",
    )
    parser.add_argument("--tag", default=default_base_tag(), help="image tag (default: %(default)s)")
    parser.add_argument("--force", action="store_true", help="rebuild even when the cached image is current")
    parser.add_argument("--mirror", default=None, help="Debian mirror URL (default: from host apt sources)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s", stream=sys.stderr)
    try:
        image_id = build_bootstrap_base_image(args.tag, mirror=args.mirror, force=args.force)
    except DSSAirflowError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(image_id)
    return 0


if __name__ == "__main__":
    sys.exit(main())
