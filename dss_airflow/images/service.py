"""Code-env images: the one build path, used by the CLI, the rebuild operator and the sensor.

1. plan (:mod:`~dss_airflow.images.plan`): resolve the env's lock, read the base image's digest; the build
   hash names the image (``dss-code-envs:<env>-<hash12>``);
2. group the pairs by (daemon, env, build hash): identical images are built once, whatever number of
   configs share them, under the env's build lock (two builders of one env take turns);
3. build (:mod:`~dss_airflow.images.docker_builder`: builder container, commit, smoke test, push; or
   :mod:`~dss_airflow.images.incluster`: a BuildKit Job in the cluster);
4. record the outcome in the ledger (:mod:`~dss_airflow.images.ledger`): switch the pair's "current"
   pointer atomically and keep the previous ones for rollback, or record the failure.

A failure at any step leaves the previous image current and records the error and the build log.
"""

from __future__ import annotations

import logging
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

from dss_airflow.errors import DaemonUnreachableError, DSSAirflowError, ImageBuildError
from dss_airflow.images.docker_builder import DockerBuilder
from dss_airflow.images.identity import BuildInputs, Lock, image_tag
from dss_airflow.images.incluster import plan_in_cluster
from dss_airflow.images.ledger import ImageRecord, Ledger
from dss_airflow.images.plan import Planner, Target

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable, Sequence
    from pathlib import Path

    from dss_airflow.config.catalog import Catalog
    from dss_airflow.images.plan import ProgressCallback

log = logging.getLogger(__name__)

#: The pairs that share one image: same daemon, env and build hash.
Members = list[tuple[Target, Lock, BuildInputs]]


@dataclass
class BuildReport:
    """Outcome of ``build``: what was built (once per hash), reused, switched, what failed, and the pairs
    whose daemon did not answer (not recorded as failures: their state is unknown, not broken)."""

    built: list[str] = field(default_factory=list)
    reused: list[str] = field(default_factory=list)
    switched: list[Target] = field(default_factory=list)
    up_to_date: list[Target] = field(default_factory=list)
    failed: dict[Target, str] = field(default_factory=dict)
    unreachable: dict[Target, str] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return not self.failed and not self.unreachable


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
        from dss_airflow.settings import cache_dir

        self.catalog = catalog
        self.ledger = ledger or Ledger.default()
        self.progress = progress or (
            lambda event, subject, message: log.info("%s %s: %s", event, subject, message)
        )
        self.planner = Planner(catalog, self.ledger)
        self.docker = DockerBuilder(
            self.planner, uv_cache=uv_cache or cache_dir() / "uv", progress=self.progress
        )

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
        groups: dict[tuple[str, str, str], Members] = {}
        for target in targets if targets is not None else self.planner.targets(envs, configs):
            try:
                lock, inputs = self.planner.resolved(target, refresh=refresh)
            except DaemonUnreachableError as exc:
                self._unreachable(target, exc, report)
                continue
            except DSSAirflowError as exc:
                self._fail(target, str(exc), None, report)
                continue
            current = self.ledger.pair(target.env, target.config).current
            if current is not None and current.build_hash == inputs.build_hash() and not force:
                report.up_to_date.append(target)
                continue
            key = (self.planner.daemon_of(target.config), target.env, inputs.build_hash())
            groups.setdefault(key, []).append((target, lock, inputs))
        with ThreadPoolExecutor(max_workers=max(1, jobs), thread_name_prefix="dss-image-build") as pool:
            futures = [pool.submit(self._build_group, members, force, report) for members in groups.values()]
            for future in futures:
                future.result()
        return report

    def _build_group(self, members: Members, force: bool, report: BuildReport) -> None:
        target, lock, inputs = members[0]
        build_hash = inputs.build_hash()
        tag = image_tag(target.env, build_hash)
        log_name = f"{target.env}-{build_hash[:12]}.log"
        try:
            with self.ledger.build_lock(target.env), self.ledger.build_log(log_name) as log_file:
                image_id, built = self.docker.ensure_image(target, lock, inputs, tag, log_file, force=force)
            (report.built if built else report.reused).append(tag)
            # One image, one record: the members differ only in where they run it from (their registry).
            built_record = ImageRecord.built_from(inputs, lock, image=tag, tag=tag, image_id=image_id)
            for member, _, _ in members:
                try:
                    record = replace(built_record, image=self.docker.publish(member, tag, image_id))
                    unused = self.ledger.switch(member.env, member.config, record, log_name=log_name)
                    self.docker.remove(member, unused)
                    report.switched.append(member)
                    self.progress("switched", str(member), f"now runs {record.image}")
                except DaemonUnreachableError as exc:  # its host is down: not a failed build
                    self._unreachable(member, exc, report)
                except DSSAirflowError as exc:
                    self._fail(member, str(exc), log_name, report)
        except DaemonUnreachableError as exc:
            for member, _, _ in members:
                self._unreachable(member, exc, report)
        except ImageBuildError as exc:
            for member, _, _ in members:
                self._fail(member, str(exc), log_name, report)
            self.progress("failed", tag, str(exc))

    def _unreachable(self, target: Target, exc: DaemonUnreachableError, report: BuildReport) -> None:
        report.unreachable[target] = str(exc)
        self.progress("unreachable", str(target), str(exc))

    def _fail(self, target: Target, error: str, log_name: str | None, report: BuildReport) -> None:
        self.ledger.record_failure(target.env, target.config, error, log_name)
        report.failed[target] = error

    def incluster_build(self, target: Target, *, push_secret: str | None = None) -> list[dict[str, Any]]:
        """ConfigMap + Job that build and push the pair's image inside its cluster (no Docker daemon)."""
        return plan_in_cluster(self.planner, target, push_secret).manifests

    def build_in_cluster(
        self, target: Target, *, push_secret: str | None = None, run_job: Callable[..., str] | None = None
    ) -> ImageRecord:
        """Run the in-cluster build Job, then make its pushed image (by digest) the pair's current image;
        a failure is recorded with its log and the previous image stays current, as with local builds."""
        build = plan_in_cluster(self.planner, target, push_secret)
        log_name = f"{target.env}-{build.inputs.build_hash()[:12]}-incluster.log"
        self.progress("building", build.tag, f"in the cluster: job {build.job}")
        with self.ledger.build_lock(target.env):
            try:
                with self.ledger.build_log(log_name) as log_file:  # stored before the pair names it
                    record = build.run(log_file, run_job)
            except ImageBuildError as exc:
                self.ledger.record_failure(target.env, target.config, str(exc), log_name)
                raise
            # Nothing to remove: the superseded images live in the registry.
            self.ledger.switch(target.env, target.config, record, log_name=log_name)
        self.progress("switched", build.tag, f"{target} now runs {record.image}")
        return record

    def rollback(self, env: str, configs: Iterable[str] | None = None) -> dict[Target, ImageRecord]:
        """Make the most recent previous image current again (the current one becomes previous)."""
        self.catalog.lookup("code_envs", env, field="env")
        return {Target(env, config): record for config, record in self.ledger.rollback(env, configs).items()}
