"""The Docker build of one distinct code-env image: builder container, ``docker commit``, smoke test, push.

A throw-away builder container of the base image (or, for an incremental build, of the pair's previous
image) gets the uv binary, the uv cache, the build context and the runtime *mounted*, runs the install
script and is committed with the base image's non-root user: build tools and caches never enter a layer.
The new image then imports its packages and passes ``pip check`` before anything points at it (on the
daemon that built it), and is pushed to the config's registry when it has one (containers then run it by
digest) or, for a daemon that does not share the worker's filesystem, copied onto it.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING

from dss_airflow.config.models import DockerExecutionConfig
from dss_airflow.config.spark import KubernetesSparkConfig
from dss_airflow.errors import ImageBuildError
from dss_airflow.hooks.docker import BUILD_CONTAINER_LABEL, docker_client, run_to_end
from dss_airflow.images.envbuild import (
    CACHE_IN_BUILDER,
    CONTEXT_IN_BUILDER,
    ENV_PYTHON,
    R_LOCK_IN_CONTEXT,
    RUNTIME_IN_BUILDER,
    UV_IN_BUILDER,
    commit_changes,
    install_script,
    update_script,
)
from dss_airflow.images.ledger import now
from dss_airflow.images.rlock import r_names
from dss_airflow.leftovers import OWNER_LABEL, owner_token
from dss_airflow.spec import HOST_RUNTIME_DIR, RUNTIME_DIR

if TYPE_CHECKING:
    from collections.abc import Sequence

    import docker

    from dss_airflow.images.identity import BuildInputs, Lock
    from dss_airflow.images.ledger import ImageRecord
    from dss_airflow.images.plan import Parent, Planner, ProgressCallback, Target

log = logging.getLogger(__name__)

LOG_TAIL = 30


class DockerBuilder:
    """Builds, smoke-tests and pushes images on the daemons the planner names for each config."""

    def __init__(self, planner: Planner, *, uv_cache: Path, progress: ProgressCallback) -> None:
        self.planner = planner
        self.uv_cache = uv_cache
        self.progress = progress

    def ensure_image(
        self, target: Target, lock: Lock, inputs: BuildInputs, tag: str, log_file: Path, *, force: bool
    ) -> tuple[str, bool]:
        """(image id, built now): an image already carrying this build hash is reused."""
        import docker.errors

        api = self.planner.client_for(target.config)
        if not force:
            try:
                existing = api.inspect_image(tag)
                if existing["Config"]["Labels"].get("dss_airflow.build_hash") == inputs.build_hash():
                    self.progress("reused", tag, "an image with this build hash exists")
                    return str(existing["Id"]), False
            except docker.errors.ImageNotFound:
                pass
        started = time.monotonic()
        parent = None if force else self.planner.parent_for(target, lock, inputs)
        how = f"update of {parent.tag} (+{len(parent.changed)} -{len(parent.removed)})" if parent else "full"
        self.progress("building", tag, f"{target.env}: {len(lock.distributions)} packages, {how}")
        image_id = self._run_builder(target, lock, inputs, tag, log_file, parent)
        self.progress(
            "committed", tag, f"{image_id[:19]} in {time.monotonic() - started:.1f}s; smoke test next"
        )
        try:
            self._smoke_test(api, image_id, tag, log_file, changed=parent.changed if parent else None)
        except ImageBuildError:
            api.remove_image(tag, force=True)
            raise
        self.progress("built", tag, f"in {time.monotonic() - started:.1f}s")
        return image_id, True

    def _run_builder(
        self, target: Target, lock: Lock, inputs: BuildInputs, tag: str, log_file: Path, parent: Parent | None
    ) -> str:
        from docker.types import Mount
        from uv import find_uv_bin

        env = self.planner.catalog.code_envs[target.env]
        base = self.planner.base_of(target.config)
        api = self.planner.client_for(target.config)
        base_config = api.inspect_image(inputs.base_digest)["Config"]
        resources_path, _ = self.planner.resources_of(env)
        self.uv_cache.mkdir(parents=True, exist_ok=True)
        log_file.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(prefix="dss-env-build-") as context_dir:
            context = Path(context_dir)
            (context / "requirements.lock").write_text(lock.text, encoding="utf-8")
            if lock.r_text:
                (context / R_LOCK_IN_CONTEXT).write_text(lock.r_text, encoding="utf-8")
            init_name = None
            if resources_path is not None and env.resources.mode == "copy":
                shutil.copytree(resources_path, context / "resources", symlinks=True)
            elif resources_path is not None:
                init_name = resources_path.name
                shutil.copy2(resources_path, context / init_name)
            os.chmod(context, 0o755)
            if parent is None:
                script = install_script(
                    base_python=base.python,
                    resources_mode=env.resources.mode,
                    init_script_name=init_name,
                    r_names=r_names(env.r_packages_to_install) if env.r_packages_to_install else (),
                    index_url=base.pip_index_url,
                    cran_url=base.cran_url,
                )
            else:
                script = update_script(removed=parent.removed, index_url=base.pip_index_url)
            build_key, _, build_value = BUILD_CONTAINER_LABEL.partition("=")
            container = api.create_container(
                image=parent.tag if parent else inputs.base_digest,
                command=["sh", "-c", script],
                user="0",
                labels={
                    "dss_airflow.code_env": target.env,
                    build_key: build_value,
                    OWNER_LABEL: owner_token(),
                },
                host_config=api.create_host_config(
                    mounts=[
                        Mount(UV_IN_BUILDER, str(find_uv_bin()), type="bind", read_only=True),
                        Mount(CACHE_IN_BUILDER, str(self.uv_cache), type="bind"),
                        Mount(CONTEXT_IN_BUILDER, str(context), type="bind", read_only=True),
                        Mount(RUNTIME_IN_BUILDER, str(HOST_RUNTIME_DIR), type="bind", read_only=True),
                    ],
                    init=True,
                ),
            )
            try:
                api.start(container["Id"])
                lines = self._stream_logs(api, container["Id"], tag, log_file)
                code = api.wait(container["Id"])["StatusCode"]
                if code != 0:
                    raise ImageBuildError(
                        f"building {tag} failed (exit code {code}); last lines:\n"
                        + "\n".join(lines[-LOG_TAIL:]),
                        logs=lines[-LOG_TAIL:],
                        log_file=log_file,
                    )
                labels = {
                    "dss_airflow.kind": "code-env",
                    "dss_airflow.code_env": target.env,
                    "dss_airflow.build_hash": inputs.build_hash(),
                    "dss_airflow.lock_sha256": inputs.lock_sha256,
                    "dss_airflow.spec_hash": lock.spec_hash,
                    "dss_airflow.base_digest": inputs.base_digest,
                    "org.opencontainers.image.base.digest": inputs.base_digest,
                    "org.opencontainers.image.created": now(),
                    "dss_airflow.increments": str(parent.increments + 1 if parent else 0),
                    "dss_airflow.parent": parent.tag if parent else "",
                }
                repository, _, tag_name = tag.partition(":")
                committed = api.commit(
                    container["Id"],
                    repository=repository,
                    tag=tag_name,
                    changes=commit_changes(
                        env_name=target.env,
                        labels=labels,
                        user=base_config.get("User") or "1000:1000",
                        workdir=base_config.get("WorkingDir") or "/",
                        with_resources=env.resources.mode != "none",
                    ),
                )
                return str(committed["Id"])
            finally:
                api.remove_container(container["Id"], force=True)

    def _stream_logs(self, api: docker.APIClient, container_id: str, tag: str, log_file: Path) -> list[str]:
        lines: list[str] = []
        with log_file.open("a", encoding="utf-8") as handle:
            handle.write(f"--- build of {tag} at {now()}\n")
            for chunk in api.logs(container_id, stream=True, follow=True):
                for line in chunk.decode("utf-8", errors="replace").splitlines():
                    lines.append(line)
                    handle.write(line + "\n")
                    self.progress("log", tag, line)
        return lines

    def _smoke_test(
        self, api: docker.APIClient, image_id: str, tag: str, log_file: Path, *, changed: Sequence[str] | None
    ) -> None:
        from docker.types import Mount

        code, output = run_to_end(
            api,
            image_id,
            [ENV_PYTHON, f"{RUNTIME_DIR}/smoke.py"],
            environment={"DSS_SMOKE_CHANGED": ",".join(changed)} if changed is not None else None,
            host_config=api.create_host_config(
                mounts=[Mount(RUNTIME_DIR, str(HOST_RUNTIME_DIR), type="bind", read_only=True)], init=True
            ),
        )
        output = output.strip()
        with log_file.open("a", encoding="utf-8") as handle:
            handle.write(f"--- smoke test of {tag}: exit {code}\n{output}\n")
        self.progress("smoke", tag, output.splitlines()[-1] if output else f"exit {code}")
        if code != 0:
            raise ImageBuildError(
                f"smoke test of {tag} failed: {output[-2000:]}", logs=output.splitlines()[-LOG_TAIL:]
            )

    def publish(self, target: Target, tag: str, image_id: str) -> str:
        """Make the built image usable where the config runs it; returns what its containers run.

        With a registry: push and return repository@digest (any daemon pulls it, by digest). Without,
        on a daemon that is not the build daemon: copy the image there (``docker save | docker load``,
        streamed) and check its id. Locally: the content-hash tag (immutable in practice)."""
        config = self.planner.config(target.config)
        if config.registry is not None:
            return self._push(target, tag, image_id)
        if isinstance(config, DockerExecutionConfig) and not config.shares_filesystem:
            return self._transfer(target, tag, image_id)
        return tag

    def _push(self, target: Target, tag: str, image_id: str) -> str:
        from airflow.sdk.exceptions import AirflowNotFoundException

        config = self.planner.config(target.config)
        assert config.registry is not None
        try:
            if isinstance(config, DockerExecutionConfig) and config.shares_filesystem:
                api = docker_client(config=config, config_name=target.config)
            else:
                api = docker_client(
                    self.planner.daemon_of(target.config), conn_id=config.registry.connection_id
                )
        except AirflowNotFoundException as exc:
            kind = "spark config" if isinstance(config, KubernetesSparkConfig) else "execution config"
            raise ImageBuildError(
                f"cannot push {tag}: the registry connection {config.registry.connection_id!r} of "
                f"{kind} {target.config!r} is not defined ({exc}); add it, e.g. `airflow "
                f"connections add {config.registry.connection_id} --conn-type docker --conn-host "
                f"{config.registry.url} --conn-login USER --conn-password ...`"
            ) from exc
        repository = f"{config.registry.url}/{tag.partition(':')[0]}"
        tag_name = tag.partition(":")[2]
        api.tag(image_id, repository, tag_name)
        self.progress("pushing", tag, f"to {repository}")
        for event in api.push(repository, tag=tag_name, stream=True, decode=True):
            if "error" in event:
                raise ImageBuildError(f"push of {tag} to {config.registry.url} failed: {event['error']}")
        digests = [
            d for d in api.inspect_image(image_id).get("RepoDigests", []) if d.startswith(repository + "@")
        ]
        if not digests:
            raise ImageBuildError(f"push of {tag} to {config.registry.url} returned no digest")
        return str(digests[0])

    def _transfer(self, target: Target, tag: str, image_id: str) -> str:
        """Copy the image from the build daemon to the config's daemon (which may have no route to a
        package index or registry); the image id survives, so the build hash still names it."""
        import docker.errors

        config = self.planner.config(target.config)
        assert isinstance(config, DockerExecutionConfig)
        remote = self.planner.runtime_client(target.config)
        try:
            if remote.inspect_image(tag)["Id"] == image_id:
                self.progress("present", tag, f"already on {config.docker_host}")
                return tag
        except docker.errors.ImageNotFound:
            pass
        started = time.monotonic()
        self.progress("copying", tag, f"to {config.docker_host} ({target.config})")
        build = self.planner.client_for(target.config)
        try:
            for event in remote.load_image(build.get_image(tag)) or ():
                if isinstance(event, dict) and "error" in event:
                    raise ImageBuildError(f"loading {tag} on {config.docker_host} failed: {event['error']}")
            loaded = remote.inspect_image(tag)["Id"]
        except docker.errors.APIError as exc:
            raise ImageBuildError(f"copying {tag} to {config.docker_host} failed: {exc}") from exc
        if loaded != image_id:
            raise ImageBuildError(f"{tag} on {config.docker_host} is {loaded}, not the built {image_id}")
        self.progress("copied", tag, f"to {config.docker_host} in {time.monotonic() - started:.1f}s")
        return tag

    def remove(self, target: Target, records: Sequence[ImageRecord]) -> None:
        """Remove superseded images (the ledger decides which) from the target's daemon."""
        import docker.errors

        if not records:
            return
        config = self.planner.config(target.config)
        daemons = [self.planner.client_for(target.config)]
        if isinstance(config, DockerExecutionConfig) and not config.shares_filesystem and not config.registry:
            daemons.append(self.planner.runtime_client(target.config))  # the copies made by _transfer
        for api in daemons:
            for record in records:
                try:
                    api.remove_image(record.tag)
                    self.progress("removed", record.tag, "older than the kept previous images")
                except docker.errors.ImageNotFound:
                    pass
                except docker.errors.APIError as exc:  # in use by a running container: next time
                    log.info("kept %s: %s", record.tag, exc)
