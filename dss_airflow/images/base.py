"""Build the base images named in the config (``dss-airflow images build-base``).

``bootstrap:`` builds air-gapped from the host's Debian mirror; ``from:`` builds a Dockerfile on an
upstream image. Both are cached by a content hash label, so a rebuild with nothing changed is a no-op, and
a failed build leaves the previous image under the tag.

Base images are built on the build daemon (``[dss_airflow] build_docker_host``), the one that builds
code-env images. They are not copied to daemons that do not share the worker's filesystem: those run
only code-env images, which carry their base's layers (and are pushed or copied there themselves).
"""

from __future__ import annotations

import hashlib
import io
import json
import tarfile
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

from dss_airflow.config.catalog import resolve_path
from dss_airflow.errors import DSSAirflowError
from dss_airflow.hooks.docker import docker_client
from dss_airflow.images import cuda
from dss_airflow.images.dockerfile import base_dockerfile
from dss_airflow.settings import build_docker_host

if TYPE_CHECKING:
    from collections.abc import Sequence

    from dss_airflow.config.catalog import Catalog
    from dss_airflow.config.models import BaseImage
    from dss_airflow.images.plan import ProgressCallback

HASH_LABEL = "dss_airflow.base_hash"


def _fragment(catalog: Catalog, path: str | None) -> str | None:
    return resolve_path(catalog.config_dir, path).read_text(encoding="utf-8") if path else None


def _dockerfile_of(catalog: Catalog, base: BaseImage, ca: bytes | None, extra: Sequence[str] = ()) -> str:
    assert base.from_image is not None
    return base_dockerfile(
        from_image=base.from_image,
        system_packages=base.distribution_packages,
        prepend=_fragment(catalog, base.dockerfile_prepend),
        append=_fragment(catalog, base.dockerfile_append),
        with_ca_bundle=ca is not None,
        extra=extra,
    )


def build_base_image(
    catalog: Catalog,
    name: str,
    *,
    docker_url: str | None = None,
    force: bool = False,
    progress: ProgressCallback,
) -> str:
    """Build (or find cached) one base image; returns its image id."""
    base: BaseImage = catalog.lookup("base_images", name, field="base_image")
    if not base.buildable:
        raise DSSAirflowError(
            f"base image {name!r} ({base.image}) has neither 'bootstrap' nor 'from': built elsewhere"
        )
    ca_path = Path(base.ca_bundle) if base.ca_bundle else None
    if base.bootstrap is not None:
        from dss_airflow.images.bootstrap import BootstrapRecipe, build_bootstrap_base_image

        recipe = BootstrapRecipe(
            suite=base.bootstrap.suite,
            packages=tuple(base.bootstrap.packages + base.distribution_packages),
            ca_bundle=ca_path,
        )
        progress("building", base.image, f"bootstrap {recipe.suite} ({', '.join(recipe.packages)})")
        image_id = build_bootstrap_base_image(
            base.image, recipe, docker_url=docker_url or build_docker_host(), force=force
        )
        progress("built", base.image, image_id)
        return image_id
    return _build_from_dockerfile(
        catalog, base, ca_path, docker_url=docker_url, force=force, progress=progress
    )


def _build_from_dockerfile(
    catalog: Catalog,
    base: BaseImage,
    ca_path: Path | None,
    *,
    docker_url: str | None,
    force: bool,
    progress: ProgressCallback,
) -> str:
    ca = ca_path.read_bytes() if ca_path and ca_path.is_file() else None
    with tempfile.TemporaryDirectory(prefix="dss-base-") as staging:
        cuda_tree = Path(staging) / "cuda"
        extra: list[str] = []
        if base.cuda is not None:
            progress("resolving", base.image, f"CUDA {base.cuda} runtime wheels")
            installed = cuda.install_cuda(base, cuda_tree)
            extra = cuda.dockerfile_lines(cuda.library_dirs(cuda_tree), installed)
        dockerfile = _dockerfile_of(catalog, base, ca, extra)
        return _build_dockerfile(
            base,
            dockerfile,
            ca,
            cuda_tree if base.cuda is not None else None,
            docker_url=docker_url,
            force=force,
            progress=progress,
        )


def _build_dockerfile(
    base: BaseImage,
    dockerfile: str,
    ca: bytes | None,
    cuda_tree: Path | None,
    *,
    docker_url: str | None,
    force: bool,
    progress: ProgressCallback,
) -> str:
    """Build ``dockerfile`` (its hash, the CA's and the CUDA versions in it, is the cache key)."""
    import docker.errors

    content_hash = hashlib.sha256((dockerfile + hashlib.sha256(ca or b"").hexdigest()).encode()).hexdigest()
    api = docker_client(docker_url or build_docker_host(), timeout=600)
    if not force:
        try:
            if api.inspect_image(base.image)["Config"]["Labels"].get(HASH_LABEL) == content_hash:
                progress("cached", base.image, "up to date")
                return str(api.inspect_image(base.image)["Id"])
        except docker.errors.ImageNotFound:
            pass
    with tempfile.SpooledTemporaryFile(max_size=16 * 2**20) as context:  # CUDA wheels can be large
        image_id = _send_build(api, base, dockerfile, ca, cuda_tree, content_hash, context, progress)
    progress("built", base.image, json.dumps(image_id))
    return str(image_id or api.inspect_image(base.image)["Id"])


def _send_build(
    api: Any,
    base: BaseImage,
    dockerfile: str,
    ca: bytes | None,
    cuda_tree: Path | None,
    content_hash: str,
    context: Any,
    progress: ProgressCallback,
) -> str | None:
    """Write the build context into ``context``, build, stream the log; the new image's id."""
    with tarfile.open(fileobj=context, mode="w") as tar:
        files = {"Dockerfile": dockerfile.encode(), **({"ca-bundle.crt": ca} if ca else {})}
        for filename, data in files.items():
            info = tarfile.TarInfo(filename)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
        if cuda_tree is not None:
            tar.add(cuda_tree, arcname="cuda")
    context.seek(0)
    progress("building", base.image, f"FROM {base.from_image}")
    image_id = None
    for event in api.build(
        fileobj=context, custom_context=True, tag=base.image, rm=True, forcerm=True, decode=True,
        labels={HASH_LABEL: content_hash, "dss_airflow.kind": "base"},
    ):  # fmt: skip
        if "stream" in event and event["stream"].strip():
            progress("log", base.image, event["stream"].rstrip())
        if "error" in event:
            raise DSSAirflowError(f"building base image {base.image} failed: {event['error']}")
        if "aux" in event and "ID" in event["aux"]:
            image_id = event["aux"]["ID"]
    return image_id
