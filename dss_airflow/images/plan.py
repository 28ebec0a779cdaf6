"""What an image build would do, and why: the read-only part of code-env images (it builds nothing).

Targets are (code env, config) pairs: the container execution configs an env is built for (``build_for``),
and the kubernetes spark configs it names there. The planner resolves locks, reads the ledger and the base
images' digests on their daemons, and decides whether a build may start from the pair's previous image.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING

from dss_airflow.config.catalog import resolve_path
from dss_airflow.config.models import DockerExecutionConfig, KubernetesExecutionConfig
from dss_airflow.config.spark import KubernetesSparkConfig
from dss_airflow.errors import DaemonUnreachableError, DSSAirflowError, ImageBuildError, UnknownNameError
from dss_airflow.hooks.docker import docker_client, run_to_end
from dss_airflow.images.identity import (
    BuildInputs,
    Lock,
    image_tag,
    resolve_lock,
    runtime_digest,
    sha256_of,
    spec_hash,
    tree_digest,
)
from dss_airflow.images.ledger import PairState
from dss_airflow.images.rlock import lock_key, r_names, resolve_r_lock
from dss_airflow.settings import build_docker_host

if TYPE_CHECKING:
    from pathlib import Path

    import docker

    from dss_airflow.config.catalog import Catalog
    from dss_airflow.config.models import BaseImage, CodeEnv, ExecutionConfig
    from dss_airflow.config.spark import SparkConfig
    from dss_airflow.images.ledger import ImageRecord, Ledger

#: A config whose pairs run code-env images (and so get them built).
ImageConfig = DockerExecutionConfig | KubernetesExecutionConfig | KubernetesSparkConfig
#: (event, "env/config" or image tag, message): build progress for the CLI and the task log.
ProgressCallback = Callable[[str, str, str], None]
#: Incremental builds stack one layer on the previous image; after this many, the next build is full.
MAX_INCREMENTS = 5


@dataclass(frozen=True)
class Target:
    """One (code env, execution or spark config) pair that needs an image."""

    env: str
    config: str

    def __str__(self) -> str:
        return f"{self.env}/{self.config}"


@dataclass
class PlanItem:
    """What ``images build`` would do for a pair, and why."""

    target: Target
    action: str  # "build" | "up to date" | "blocked" | "unknown" (its daemon did not answer)
    reasons: list[str] = field(default_factory=list)
    build_hash: str | None = None
    tag: str | None = None


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


def _needs_image(env: CodeEnv, name: str, config: ExecutionConfig | SparkConfig) -> bool:
    if isinstance(config, KubernetesSparkConfig):
        return env.builds_for_spark(name)
    return isinstance(config, DockerExecutionConfig | KubernetesExecutionConfig) and env.builds_for(name)


class DockerClients:
    """One low-level client per daemon (per config, for TLS), created on first use and shared by the build
    threads; a daemon that did not answer is asked once per process (its error is kept and raised again)."""

    def __init__(self) -> None:
        self._clients: dict[str, docker.APIClient | DaemonUnreachableError] = {}
        self._lock = threading.Lock()

    def for_daemon(self, docker_host: str) -> docker.APIClient:
        """The build daemon (or any daemon without TLS)."""
        return self._get(docker_host, lambda: docker_client(docker_host, timeout=600))

    def for_config(self, name: str, config: DockerExecutionConfig) -> docker.APIClient:
        """An execution config's own daemon, with its TLS."""
        return self._get(
            f"config:{name}", lambda: docker_client(config=config, config_name=name, timeout=600)
        )

    def _get(self, key: str, connect: Callable[[], docker.APIClient]) -> docker.APIClient:
        with self._lock:
            if key not in self._clients:
                try:
                    self._clients[key] = connect()
                except DaemonUnreachableError as exc:
                    self._clients[key] = exc
            client = self._clients[key]
        if isinstance(client, DaemonUnreachableError):
            raise client
        return client


class Planner:
    """The targets of a catalog and what building them would take; cheap to create (clients are lazy)."""

    def __init__(self, catalog: Catalog, ledger: Ledger) -> None:
        self.catalog = catalog
        self.ledger = ledger
        self.clients = DockerClients()
        self.runtime_digest = runtime_digest()
        self._configs: dict[str, ExecutionConfig | SparkConfig] = {
            **catalog.execution_configs,
            **catalog.spark_configs,
        }
        self._digests: dict[tuple[str, str], str | None] = {}

    # --------------------------------------------------------------------------------- configs
    def _named(self, name: str, *, field: str | None = None) -> ExecutionConfig | SparkConfig:
        """Execution and spark configs share one name space (``build_for``, the ledger's keys)."""
        if name not in self._configs:
            raise UnknownNameError("execution or spark config", name, self._configs, field=field)
        return self._configs[name]

    def config(self, name: str, *, field: str | None = None) -> ImageConfig:
        """A config that runs code-env images (docker, kubernetes, kubernetes spark)."""
        config = self._named(name, field=field)
        if not isinstance(config, ImageConfig):
            raise DSSAirflowError(f"{name!r} is a {config.type} config: its tasks run no code-env image")
        return config

    def daemon_of(self, config_name: str) -> str:
        """The daemon that builds for a config: its own for a docker config that shares the worker's
        filesystem (the builder mounts uv, its cache and the context), else the build daemon, from
        which the image is pushed to the config's registry or copied onto its host."""
        config = self.config(config_name)
        if isinstance(config, DockerExecutionConfig) and config.shares_filesystem:
            return config.docker_host
        return build_docker_host()

    def client_for(self, config_name: str) -> docker.APIClient:
        """A client of the daemon that builds for the config (with the config's TLS when it is its own)."""
        config = self.config(config_name)
        if isinstance(config, DockerExecutionConfig) and config.shares_filesystem:
            return self.clients.for_config(config_name, config)
        return self.clients.for_daemon(build_docker_host())

    def runtime_client(self, config_name: str) -> docker.APIClient:
        """A client of the daemon that runs the docker config's tasks (with its TLS)."""
        config = self.config(config_name)
        assert isinstance(config, DockerExecutionConfig)
        return self.clients.for_config(config_name, config)

    def base_name_of(self, config_name: str) -> str:
        return self.config(config_name).base_image

    def base_of(self, config_name: str) -> BaseImage:
        return self.catalog.base_images[self.base_name_of(config_name)]

    def base_digest(self, config_name: str) -> str | None:
        """Digest (image id) of the config's base image on the daemon that builds for it; one lookup per
        (daemon, image). The image id is what is hashed: it survives ``docker save``/``load`` and a push
        and pull (a registry's manifest digest differs per registry), so the hash is the same wherever
        the code-env image ends up."""
        key = (self.daemon_of(config_name), self.base_of(config_name).image)
        return self._image_id(key, lambda: self.client_for(config_name))

    def build_daemon_digest(self, image: str) -> str | None:
        """Image id of ``image`` on the build daemon, where base images are built (None: not there)."""
        daemon = build_docker_host()
        return self._image_id((daemon, image), lambda: self.clients.for_daemon(daemon))

    def _image_id(self, key: tuple[str, str], client: Callable[[], docker.APIClient]) -> str | None:
        """Image id of ``key`` = (daemon, image), asked once per planner."""
        import docker.errors

        if key not in self._digests:
            try:
                self._digests[key] = str(client().inspect_image(key[1])["Id"])
            except docker.errors.ImageNotFound:
                self._digests[key] = None
        return self._digests[key]

    def targets(
        self, envs: Iterable[str] | None = None, configs: Iterable[str] | None = None
    ) -> list[Target]:
        """Pairs that need images: the container configs each env is built for (``build_for``; kubernetes
        spark configs only when named there, since their base must be a Spark image)."""
        env_names = list(envs) if envs is not None else sorted(self.catalog.code_envs)
        config_names = list(configs) if configs is not None else sorted(self._configs)
        for name in env_names:
            self.catalog.lookup("code_envs", name, field="env")
        named = [(name, self._named(name, field="config")) for name in config_names]
        return [
            Target(env, name)
            for env in env_names
            for name, config in named
            if self.catalog.code_envs[env].managed and _needs_image(self.catalog.code_envs[env], name, config)
        ]

    # ---------------------------------------------------------------------------------- inputs
    def resources_of(self, env: CodeEnv) -> tuple[Path | None, str | None]:
        """(path, content digest) of the env's resources, (None, None) without any."""
        if env.resources.mode == "none" or env.resources.path is None:
            return None, None
        path = resolve_path(self.catalog.config_dir, env.resources.path)
        if not path.exists():
            raise ImageBuildError(f"resources path {path} does not exist")
        return path, tree_digest(path)

    def inputs(
        self, target: Target, lock_sha256: str, base_digest: str, r_lock_sha256: str | None = None
    ) -> BuildInputs:
        env = self.catalog.code_envs[target.env]
        _, resources_digest = self.resources_of(env)
        return BuildInputs(
            base_digest=base_digest,
            lock_sha256=lock_sha256,
            r_packages=tuple(env.r_packages),
            resources_mode=env.resources.mode,
            resources_digest=resources_digest,
            runtime_digest=self.runtime_digest,
            r_lock_sha256=r_lock_sha256,
        )

    def lock_of(self, target: Target, *, refresh: bool = False) -> Lock:
        """The env's resolved package lists for the target's base (its index URL; for R packages, what the
        base has installed and its sources): stored per spec, so every host and rebuild reuses them."""
        env = self.catalog.code_envs[target.env]
        base = self.base_of(target.config)
        lock = resolve_lock(
            self.catalog.requirements(target.env),
            python=env.python,
            store=self.ledger,
            index_url=base.pip_index_url,
            refresh=refresh,
        )
        if not env.r_packages_to_install:
            return lock
        base_digest = self.base_digest(target.config)
        if base_digest is None:
            raise ImageBuildError(self._base_not_built(target))
        api = self.client_for(target.config)
        r_text = resolve_r_lock(
            env.r_packages_to_install,
            base_digest=base_digest,
            cran_url=base.cran_url,
            store=self.ledger,
            run=lambda script: run_to_end(
                api, base_digest, ["sh", "-c", script], user="0", labels={"dss_airflow.code_env": target.env}
            ),
            refresh=refresh,
        )
        return replace(lock, r_text=r_text)

    def blocked(self, target: Target, *, check_base: bool = True) -> str | None:
        """Why the pair cannot be built at all, or None."""
        config = self.config(target.config)
        if not isinstance(config, DockerExecutionConfig) and config.registry is None:
            return "kubernetes config without a registry: the cluster could not pull the image"
        if check_base and self.base_digest(target.config) is None:
            return self._base_not_built(target)
        return None

    def _base_not_built(self, target: Target) -> str:
        base = self.base_of(target.config)
        return f"base image {base.image} is not built: run `dss-airflow images build-base`"

    def resolved(self, target: Target, *, refresh: bool = False) -> tuple[Lock, BuildInputs]:
        """The lock and build inputs of a pair about to be built (ImageBuildError when it is blocked)."""
        blocked = self.blocked(target)
        if blocked:
            raise ImageBuildError(blocked)
        lock = self.lock_of(target, refresh=refresh)
        return lock, self.inputs(target, lock.sha256, str(self.base_digest(target.config)), lock.r_sha256)

    # ------------------------------------------------------------------------------------ plan
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
        call at all (a base image re-pushed under the same tag then goes unnoticed). A daemon that does not
        answer makes only its own pairs "unknown"; the others are planned as usual."""
        targets = list(targets) if targets is not None else self.targets(envs, configs)
        records = {env: self.ledger.read(env) for env in {t.env for t in targets}}
        specs: dict[str, str] = {}
        items: list[PlanItem] = []
        for target in targets:
            try:
                blocked = self.blocked(target, check_base=check_base)
            except DaemonUnreachableError as exc:
                items.append(PlanItem(target, "unknown", [f"host unreachable: {exc.host}: {exc.reason}"]))
                continue
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
            items.append(self._plan_built(target, current, base_digest))
        return items

    def _plan_built(self, target: Target, current: ImageRecord, base_digest: str) -> PlanItem:
        """A built pair whose package list is unchanged: compared with the locks the ledger now holds
        (a ``--refresh`` may have re-resolved them), as the build would."""
        stored = self.ledger.lock_text(current.spec_hash)
        lock_sha256 = sha256_of(stored) if stored is not None else current.lock_sha256
        r_lock_sha256 = current.r_lock_sha256
        env = self.catalog.code_envs[target.env]
        if env.r_packages_to_install:
            key = lock_key(
                r_names(env.r_packages_to_install),
                base_digest=base_digest,
                cran_url=self.base_of(target.config).cran_url,
            )
            stored_r = self.ledger.lock_text(key)
            if stored_r is None:
                reasons = self.inputs(target, lock_sha256, base_digest, r_lock_sha256).changes_from(
                    current.inputs()
                )
                return PlanItem(target, "build", reasons or ["R package versions not resolved yet"])
            r_lock_sha256 = sha256_of(stored_r)
        inputs = self.inputs(target, lock_sha256, base_digest, r_lock_sha256)
        build_hash = inputs.build_hash()
        if current.build_hash == build_hash:
            return PlanItem(target, "up to date", [], build_hash, current.tag)
        reasons = inputs.changes_from(current.inputs())
        return PlanItem(target, "build", reasons, build_hash, image_tag(target.env, build_hash))

    def parent_for(self, target: Target, lock: Lock, inputs: BuildInputs) -> Parent | None:
        """The pair's current image when only the lock changed and it exists here: build on top of it."""
        import docker.errors

        current = self.ledger.pair(target.env, target.config).current
        if current is None or replace(current.inputs(), lock_sha256=inputs.lock_sha256) != inputs:
            return None  # base image, resources, R packages or template changed: full build
        previous_lock = self.ledger.lock_text(current.spec_hash)
        if previous_lock is None:
            return None
        try:
            labels = self.client_for(target.config).inspect_image(current.tag)["Config"]["Labels"]
        except docker.errors.ImageNotFound:
            return None
        increments = int(labels.get("dss_airflow.increments", "0"))
        if increments >= MAX_INCREMENTS:
            return None  # bound the layer chain: a full build now and then
        old, new = _pins(previous_lock), _pins(lock.text)
        return Parent(
            tag=current.tag,
            increments=increments,
            removed=tuple(sorted(set(old) - set(new))),
            changed=tuple(sorted(name for name, version in new.items() if old.get(name) != version)),
        )
