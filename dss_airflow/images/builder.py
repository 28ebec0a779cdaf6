"""Code-env images: plan, build, smoke-test, push, switch, roll back, garbage-collect.

The one build path, used by the CLI, the rebuild operator and the sensor:

1. resolve the env's lock (cached per spec), read the base image's digest on the target daemon;
2. the build hash names the image (``dss-code-envs:<env>-<hash12>``): identical hashes are built once,
   whatever number of execution configs share them, and an existing image with that hash is reused;
3. build in a throw-away builder container (uv and its cache mounted) and ``docker commit`` the result;
4. smoke-test the new image (import every package, ``pip check``) before anything points at it;
5. push to the config's registry when it has one (credentials from an Airflow connection), run by digest;
6. switch the (env, config) "current" pointer atomically in the ledger, keep the previous N for rollback,
   and remove older images.

A failure at any step leaves the previous image current and records the error and the build log.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import tempfile
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from dss_airflow.config.catalog import Catalog, resolve_path
from dss_airflow.config.models import (
    BaseImage,
    CodeEnv,
    DockerExecutionConfig,
    KubernetesExecutionConfig,
)
from dss_airflow.errors import DSSAirflowError, ImageBuildError
from dss_airflow.images.envbuild import (
    CACHE_IN_BUILDER,
    CONTEXT_IN_BUILDER,
    ENV_PYTHON,
    RUNTIME_IN_BUILDER,
    UV_IN_BUILDER,
    commit_changes,
    install_script,
    update_script,
)
from dss_airflow.images.identity import (
    BuildInputs,
    Lock,
    image_tag,
    resolve_lock,
    runtime_digest,
    spec_hash,
    tree_digest,
)
from dss_airflow.images.ledger import ImageRecord, Ledger, PairState, now, switch_current
from dss_airflow.spec import HOST_RUNTIME_DIR, RUNTIME_DIR

if TYPE_CHECKING:
    import docker

log = logging.getLogger(__name__)

LOG_TAIL = 30
#: Incremental builds stack one layer on the previous image; after this many, the next build is full.
MAX_INCREMENTS = 5
DEFAULT_DOCKER_HOST = "unix:///var/run/docker.sock"
ContainerConfig = DockerExecutionConfig | KubernetesExecutionConfig
#: (event, "env/config" or image tag, message): build progress for the CLI and the task log.
ProgressCallback = Callable[[str, str, str], None]


@dataclass(frozen=True)
class Parent:
    """The previous image an incremental build starts from, and what differs between the two locks."""

    tag: str
    increments: int
    removed: tuple[str, ...]
    changed: tuple[str, ...]


def _pins(lock_text: str) -> dict[str, str]:
    pins = {}
    for line in lock_text.splitlines():
        name, sep, version = line.partition("==")
        if sep:
            pins[re.sub(r"[-_.]+", "-", name.strip()).lower()] = version.strip()
    return pins


@dataclass(frozen=True)
class Target:
    """One (code env, execution config) pair that needs an image."""

    env: str
    config: str

    def __str__(self) -> str:
        return f"{self.env}/{self.config}"


@dataclass
class PlanItem:
    """What ``images build`` would do for a pair, and why."""

    target: Target
    action: str  # "build" | "up to date" | "blocked"
    reasons: list[str] = field(default_factory=list)
    build_hash: str | None = None
    tag: str | None = None


@dataclass
class BuildReport:
    """Outcome of ``build``: what was built (once per hash), reused, switched, and what failed."""

    built: list[str] = field(default_factory=list)
    reused: list[str] = field(default_factory=list)
    switched: list[Target] = field(default_factory=list)
    up_to_date: list[Target] = field(default_factory=list)
    failed: dict[Target, str] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return not self.failed


class ImageService:
    """Code-env images of one catalog, with its ledger; cheap to create (Docker clients are lazy)."""

    def __init__(
        self,
        catalog: Catalog,
        ledger: Ledger | None = None,
        *,
        progress: ProgressCallback | None = None,
        uv_cache: Path | None = None,
    ) -> None:
        from dss_airflow.settings import cache_dir, state_dir

        self.catalog = catalog
        self.ledger = ledger or Ledger(state_dir())
        self.progress = progress or (
            lambda event, subject, message: log.info("%s %s: %s", event, subject, message)
        )
        self.uv_cache = uv_cache or cache_dir() / "uv"
        self._clients: dict[str, docker.APIClient] = {}
        self._digests: dict[tuple[str, str], str | None] = {}
        self.runtime_digest = runtime_digest()
        self._lock = threading.Lock()

    # ----------------------------------------------------------------------------------- helpers
    def client(self, docker_host: str) -> docker.APIClient:
        from dss_airflow.hooks.docker import docker_client

        with self._lock:
            if docker_host not in self._clients:
                self._clients[docker_host] = docker_client(docker_host, timeout=600)
            return self._clients[docker_host]

    def _config(self, name: str) -> ContainerConfig:
        config = self.catalog.execution_configs[name]
        assert isinstance(config, DockerExecutionConfig | KubernetesExecutionConfig)
        return config

    def daemon_of(self, config_name: str) -> str:
        """The daemon that builds for a config: its own for docker, the local one for kubernetes."""
        config = self._config(config_name)
        return config.docker_host if isinstance(config, DockerExecutionConfig) else DEFAULT_DOCKER_HOST

    def base_name_of(self, config_name: str) -> str:
        return self._config(config_name).base_image

    def base_of(self, config_name: str) -> BaseImage:
        return self.catalog.base_images[self.base_name_of(config_name)]

    def base_digest(self, config_name: str) -> str | None:
        """Digest (image id) of the config's base image on its daemon; one lookup per (daemon, image)."""
        import docker.errors

        key = (self.daemon_of(config_name), self.base_of(config_name).image)
        if key not in self._digests:
            try:
                self._digests[key] = str(self.client(key[0]).inspect_image(key[1])["Id"])
            except docker.errors.ImageNotFound:
                self._digests[key] = None
        return self._digests[key]

    def targets(
        self, envs: Iterable[str] | None = None, configs: Iterable[str] | None = None
    ) -> list[Target]:
        """Pairs that need images: container configs each env is built for (``build_for``)."""
        env_names = list(envs) if envs is not None else sorted(self.catalog.code_envs)
        config_names = list(configs) if configs is not None else sorted(self.catalog.execution_configs)
        for name in env_names:
            self.catalog.lookup("code_envs", name, field="env")
        for name in config_names:
            self.catalog.lookup("execution_configs", name, field="config")
        return [
            Target(env, config)
            for env in env_names
            for config in config_names
            if self.catalog.execution_configs[config].is_container
            and self.catalog.code_envs[env].managed
            and self.catalog.code_envs[env].builds_for(config)
        ]

    def _resources(self, env: CodeEnv) -> tuple[Path | None, str | None]:
        if env.resources.mode == "none" or env.resources.path is None:
            return None, None
        path = resolve_path(self.catalog.config_dir, env.resources.path)
        if not path.exists():
            raise ImageBuildError(f"resources path {path} does not exist")
        return path, tree_digest(path)

    def _inputs(self, target: Target, lock_sha256: str, base_digest: str) -> BuildInputs:
        env = self.catalog.code_envs[target.env]
        _, resources_digest = self._resources(env)
        return BuildInputs(
            base_digest=base_digest,
            lock_sha256=lock_sha256,
            r_packages=tuple(env.r_packages),
            resources_mode=env.resources.mode,
            resources_digest=resources_digest,
            runtime_digest=self.runtime_digest,
        )

    def lock_of(self, target: Target, *, refresh: bool = False) -> Lock:
        """The env's resolved package list for the target's base (its index URL); stored per spec."""
        return resolve_lock(
            self.catalog.requirements(target.env),
            python=self.catalog.code_envs[target.env].python,
            locks_dir=self.ledger.locks,
            index_url=self.base_of(target.config).pip_index_url,
            refresh=refresh,
        )

    def _blocked(self, target: Target, *, check_base: bool = True) -> str | None:
        config = self._config(target.config)
        if isinstance(config, KubernetesExecutionConfig) and config.registry is None:
            return "kubernetes config without a registry: the cluster could not pull the image"
        if check_base and self.base_digest(target.config) is None:
            base = self.base_of(target.config)
            return f"base image {base.image} is not built: run `dss-airflow images build-base`"
        return None

    # -------------------------------------------------------------------------------------- plan
    def plan(
        self,
        envs: Iterable[str] | None = None,
        configs: Iterable[str] | None = None,
        *,
        targets: Sequence[Target] | None = None,
        check_base: bool = True,
    ) -> list[PlanItem]:
        """What a build would do, and why: reads the config, the ledger and (``check_base``) the base
        images' digests on their daemons. No build, no network. Without ``check_base`` it makes no Docker
        call at all (a base image re-pushed under the same tag then goes unnoticed)."""
        targets = list(targets) if targets is not None else self.targets(envs, configs)
        records = {env: self.ledger.read(env) for env in {t.env for t in targets}}
        specs: dict[str, str] = {}
        items: list[PlanItem] = []
        for target in targets:
            blocked = self._blocked(target, check_base=check_base)
            if blocked:
                items.append(PlanItem(target, "blocked", [blocked]))
                continue
            current = records[target.env].get(target.config, PairState()).current
            if target.env not in specs:
                env = self.catalog.code_envs[target.env]
                specs[target.env] = spec_hash(env.python, self.catalog.requirements(target.env))
            if current is None or current.spec_hash != specs[target.env]:
                reasons = ["never built"] if current is None else ["package list changed"]
                items.append(PlanItem(target, "build", reasons))
                continue
            base_digest = str(self.base_digest(target.config)) if check_base else current.base_digest
            inputs = self._inputs(target, current.lock_sha256, base_digest)
            build_hash = inputs.build_hash()
            if current.build_hash == build_hash:
                items.append(PlanItem(target, "up to date", [], build_hash, current.tag))
                continue
            reasons = inputs.changes_from(current.inputs())
            items.append(PlanItem(target, "build", reasons, build_hash, image_tag(target.env, build_hash)))
        return items

    # ------------------------------------------------------------------------------------- build
    def build(
        self,
        envs: Iterable[str] | None = None,
        configs: Iterable[str] | None = None,
        *,
        force: bool = False,
        refresh: bool = False,
        jobs: int = 2,
        targets: Sequence[Target] | None = None,
    ) -> BuildReport:
        """Bring pairs up to date (``targets``, or envs x configs); each distinct image is built once,
        ``jobs`` at a time; two builders of one env (two DAG runs, CLI and DAG) take turns."""
        report = BuildReport()
        groups: dict[tuple[str, str, str], list[tuple[Target, Lock, BuildInputs]]] = {}
        for target in targets if targets is not None else self.targets(envs, configs):
            try:
                blocked = self._blocked(target)
                if blocked:
                    raise ImageBuildError(blocked)
                lock = self.lock_of(target, refresh=refresh)
                inputs = self._inputs(target, lock.sha256, str(self.base_digest(target.config)))
            except DSSAirflowError as exc:
                self._record_failure(target, str(exc), None)
                report.failed[target] = str(exc)
                continue
            current = self.ledger.pair(target.env, target.config).current
            if current is not None and current.build_hash == inputs.build_hash() and not force:
                report.up_to_date.append(target)
                continue
            key = (self.daemon_of(target.config), target.env, inputs.build_hash())
            groups.setdefault(key, []).append((target, lock, inputs))
        with ThreadPoolExecutor(max_workers=max(1, jobs), thread_name_prefix="dss-image-build") as pool:
            futures = [pool.submit(self._build_group, members, force, report) for members in groups.values()]
            for future in futures:
                future.result()
        return report

    def _build_group(
        self, members: list[tuple[Target, Lock, BuildInputs]], force: bool, report: BuildReport
    ) -> None:
        target, lock, inputs = members[0]
        build_hash = inputs.build_hash()
        tag = image_tag(target.env, build_hash)
        log_file = self.ledger.logs / f"{target.env}-{build_hash[:12]}.log"
        try:
            with self.ledger.build_lock(target.env):
                image_id, built = self._ensure_image(target, lock, inputs, tag, log_file, force)
            (report.built if built else report.reused).append(tag)
            for member, _, _ in members:
                try:
                    image = self._publish(member, tag, image_id)
                    record = ImageRecord.built_from(inputs, lock, image=image, tag=tag, image_id=image_id)
                    self._switch(member, record, log_file)
                    report.switched.append(member)
                    self.progress("switched", str(member), f"now runs {image}")
                except DSSAirflowError as exc:
                    self._record_failure(member, str(exc), log_file)
                    report.failed[member] = str(exc)
        except ImageBuildError as exc:
            for member, _, _ in members:
                self._record_failure(member, str(exc), log_file)
                report.failed[member] = str(exc)
            self.progress("failed", tag, str(exc))

    def _ensure_image(
        self, target: Target, lock: Lock, inputs: BuildInputs, tag: str, log_file: Path, force: bool
    ) -> tuple[str, bool]:
        """(image id, built now): an image already carrying this build hash is reused."""
        import docker.errors

        api = self.client(self.daemon_of(target.config))
        if not force:
            try:
                existing = api.inspect_image(tag)
                if existing["Config"]["Labels"].get("dss_airflow.build_hash") == inputs.build_hash():
                    self.progress("reused", tag, "an image with this build hash exists")
                    return str(existing["Id"]), False
            except docker.errors.ImageNotFound:
                pass
        started = time.monotonic()
        parent = None if force else self._parent_for(target, lock, inputs)
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

    def _parent_for(self, target: Target, lock: Lock, inputs: BuildInputs) -> Parent | None:
        """The pair's current image when only the lock changed and it exists here: build on top of it."""
        import docker.errors

        current = self.ledger.pair(target.env, target.config).current
        if current is None or replace(current.inputs(), lock_sha256=inputs.lock_sha256) != inputs:
            return None  # base image, resources, R packages or template changed: full build
        previous_lock = self.ledger.locks / f"{current.spec_hash}.txt"
        if not previous_lock.is_file():
            return None
        try:
            labels = self.client(self.daemon_of(target.config)).inspect_image(current.tag)["Config"]["Labels"]
        except docker.errors.ImageNotFound:
            return None
        increments = int(labels.get("dss_airflow.increments", "0"))
        if increments >= MAX_INCREMENTS:
            return None  # bound the layer chain: a full build now and then
        old, new = _pins(previous_lock.read_text(encoding="utf-8")), _pins(lock.text)
        return Parent(
            tag=current.tag,
            increments=increments,
            removed=tuple(sorted(set(old) - set(new))),
            changed=tuple(sorted(name for name, version in new.items() if old.get(name) != version)),
        )

    def _run_builder(
        self, target: Target, lock: Lock, inputs: BuildInputs, tag: str, log_file: Path, parent: Parent | None
    ) -> str:
        from docker.types import Mount
        from uv import find_uv_bin

        env = self.catalog.code_envs[target.env]
        base = self.base_of(target.config)
        api = self.client(self.daemon_of(target.config))
        base_config = api.inspect_image(inputs.base_digest)["Config"]
        resources_path, _ = self._resources(env)
        self.uv_cache.mkdir(parents=True, exist_ok=True)
        log_file.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(prefix="dss-env-build-") as context_dir:
            context = Path(context_dir)
            (context / "requirements.lock").write_text(lock.text, encoding="utf-8")
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
                    r_packages=env.r_packages,
                    index_url=base.pip_index_url,
                )
            else:
                script = update_script(removed=parent.removed, index_url=base.pip_index_url)
            container = api.create_container(
                image=parent.tag if parent else inputs.base_digest,
                command=["sh", "-c", script],
                user="0",
                labels={"dss_airflow.kind": "builder", "dss_airflow.code_env": target.env},
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

        container = api.create_container(
            image=image_id,
            command=[ENV_PYTHON, f"{RUNTIME_DIR}/smoke.py"],
            environment={"DSS_SMOKE_CHANGED": ",".join(changed)} if changed is not None else None,
            host_config=api.create_host_config(
                mounts=[Mount(RUNTIME_DIR, str(HOST_RUNTIME_DIR), type="bind", read_only=True)], init=True
            ),
        )
        try:
            api.start(container["Id"])
            code = api.wait(container["Id"])["StatusCode"]
            output = api.logs(container["Id"]).decode("utf-8", errors="replace").strip()
        finally:
            api.remove_container(container["Id"], force=True)
        with log_file.open("a", encoding="utf-8") as handle:
            handle.write(f"--- smoke test of {tag}: exit {code}\n{output}\n")
        self.progress("smoke", tag, output.splitlines()[-1] if output else f"exit {code}")
        if code != 0:
            raise ImageBuildError(
                f"smoke test of {tag} failed: {output[-2000:]}", logs=output.splitlines()[-LOG_TAIL:]
            )

    def _publish(self, target: Target, tag: str, image_id: str) -> str:
        """Push to the config's registry and return repository@digest; locally, the content-hash tag."""
        config = self._config(target.config)
        if config.registry is None:
            return tag  # immutable in practice: it names the build hash
        from airflow.providers.docker.hooks.docker import DockerHook
        from airflow.sdk.exceptions import AirflowNotFoundException

        hook = DockerHook(
            docker_conn_id=config.registry.connection_id,
            base_url=self.daemon_of(target.config),
            version="auto",
        )
        try:
            api = hook.api_client
        except AirflowNotFoundException as exc:
            raise ImageBuildError(
                f"cannot push {tag}: the registry connection {config.registry.connection_id!r} of "
                f"execution config {target.config!r} is not defined ({exc}); add it, e.g. `airflow "
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

    # ----------------------------------------------------------------------------- switch & GC
    def _switch(self, target: Target, record: ImageRecord, log_file: Path) -> None:
        with self.ledger.update(target.env) as pairs:
            state = pairs.setdefault(target.config, PairState())
            dropped = switch_current(state, record)
            state.last_log = str(log_file)
        self._collect(target, dropped)

    def _record_failure(self, target: Target, error: str, log_file: Path | None) -> None:
        with self.ledger.update(target.env) as pairs:
            state = pairs.setdefault(target.config, PairState())
            state.status, state.last_error, state.updated_at = "failed", error, now()
            if log_file is not None:
                state.last_log = str(log_file)

    def _collect(self, target: Target, dropped: Sequence[ImageRecord]) -> None:
        """Remove images no pair of this env uses any more (older than the kept previous ones)."""
        import docker.errors

        if not dropped:
            return
        in_use = {
            record.tag
            for state in self.ledger.read(target.env).values()
            for record in ([state.current] if state.current else []) + state.previous
        }
        api = self.client(self.daemon_of(target.config))
        for record in dropped:
            if record.tag in in_use:
                continue
            try:
                api.remove_image(record.tag)
                self.progress("removed", record.tag, "older than the kept previous images")
            except docker.errors.APIError as exc:  # in use by a running container: next time
                log.info("kept %s: %s", record.tag, exc)

    def incluster_build(self, target: Target, *, push_secret: str | None = None) -> list[dict[str, Any]]:
        """ConfigMap + Job that build and push the pair's image inside its cluster (no Docker daemon).

        The base image is referenced as configured (it must be pullable by the cluster); the lock is the
        one ``images build`` would use, so both builders install the same packages.
        """
        return self._incluster_plan(target, push_secret)[0]

    def _incluster_plan(
        self, target: Target, push_secret: str | None
    ) -> tuple[list[dict[str, Any]], BuildInputs, Lock, KubernetesExecutionConfig]:
        from dss_airflow.images.incluster import build_job_manifests

        config = self._config(target.config)
        if not isinstance(config, KubernetesExecutionConfig) or config.registry is None:
            raise DSSAirflowError(
                f"{target}: in-cluster builds are for kubernetes execution configs with a registry to push to"
            )
        secret = push_secret or (config.image_pull_secrets[0] if config.image_pull_secrets else None)
        if secret is None:
            raise DSSAirflowError(
                f"{target}: name the dockerconfigjson secret that may push to {config.registry.url} "
                "(--push-secret, or image_pull_secrets on the config)"
            )
        base = self.base_of(target.config)
        lock = self.lock_of(target)
        inputs = self._inputs(target, lock.sha256, base_digest=base.image)
        manifests = build_job_manifests(
            env_name=target.env,
            build_hash=inputs.build_hash(),
            lock_text=lock.text,
            base_image=base.image,
            registry_url=config.registry.url,
            namespace=config.namespace,
            push_secret=secret,
        )
        return manifests, inputs, lock, config

    def build_in_cluster(
        self, target: Target, *, push_secret: str | None = None, run_job: Callable[..., str] | None = None
    ) -> ImageRecord:
        """Run the in-cluster build Job, then make its pushed image (by digest) the pair's current image.

        A failure (Job failed or timed out, no digest in its log) is recorded with its log and the previous
        image stays current, as with local builds. ``run_job`` defaults to the kubernetes backend's
        :func:`~dss_airflow.images.incluster.run_build_job` (tests pass their own).
        """
        from dss_airflow.images.incluster import pushed_digest

        manifests, inputs, lock, config = self._incluster_plan(target, push_secret)
        if run_job is None:
            from dss_airflow.images.incluster import run_build_job

            run_job = run_build_job
        assert config.registry is not None  # checked by the plan
        build_hash = inputs.build_hash()
        tag = image_tag(target.env, build_hash)
        reference = f"{config.registry.url}/{tag}"
        repository = reference.rpartition(":")[0]
        log_file = self.ledger.logs / f"{target.env}-{build_hash[:12]}-incluster.log"
        log_file.parent.mkdir(parents=True, exist_ok=True)
        job = manifests[1]["metadata"]
        self.progress("building", tag, f"in the cluster: job {job['namespace']}/{job['name']}")
        with self.ledger.build_lock(target.env):
            try:
                logs = run_job(config, manifests)
                log_file.write_text(logs, encoding="utf-8")
                digest = pushed_digest(logs, reference)
                if digest is None:
                    raise ImageBuildError(f"{target}: the build job's log names no pushed {reference}")
            except DSSAirflowError as exc:
                tail = getattr(exc, "logs", [])
                log_file.write_text("\n".join(tail), encoding="utf-8")
                self._record_failure(target, str(exc), log_file)
                raise ImageBuildError(str(exc), logs=tail, log_file=log_file) from exc
            record = ImageRecord.built_from(inputs, lock, image=f"{repository}@{digest}", tag=tag)
            with self.ledger.update(target.env) as pairs:
                state = pairs.setdefault(target.config, PairState())
                switch_current(state, record)  # nothing to collect: the images live in the registry
                state.last_log = str(log_file)
        self.progress("switched", tag, f"{target} now runs {record.image}")
        return record

    def rollback(self, env: str, configs: Iterable[str] | None = None) -> dict[Target, ImageRecord]:
        """Make the most recent previous image current again (the current one becomes previous)."""
        self.catalog.lookup("code_envs", env, field="env")
        done: dict[Target, ImageRecord] = {}
        with self.ledger.update(env) as pairs:
            for config in list(configs) if configs is not None else sorted(pairs):
                state = pairs.get(config)
                if state is None or not state.previous:
                    raise DSSAirflowError(f"{env}/{config}: no previous image to roll back to")
                target_record = state.previous.pop(0)
                if state.current is not None:
                    state.previous.insert(0, state.current)
                state.current = replace(target_record)
                state.status, state.last_error, state.updated_at = "rolled back", None, now()
                done[Target(env, config)] = target_record
        return done


def current_image(ledger: Ledger, env: str, config: str) -> ImageRecord | None:
    """The image tasks of (env, config) run now; read at execute time, so in-flight tasks keep theirs."""
    return ledger.pair(env, config).current
