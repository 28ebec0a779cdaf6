"""DSSRebuildCodeEnvImagesOperator: rebuild the stale pairs a CodeEnvChangeSensor reported.

It goes through the one build path (ImageService): base images first when asked, identical images built
once, smoke test before the atomic switch, a failure leaves the previous image current and fails the task
with the build log's tail. Each env whose image changed gets an Airflow asset event
(``dss-code-env://<env>``), attached to the ``dss-code-env-rebuilds`` alias, so only rebuilt envs fire.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from airflow.sdk import AssetAlias, BaseOperator

from dss_airflow.assets import REBUILD_ALIAS, code_env_asset
from dss_airflow.config.loader import get_catalog
from dss_airflow.errors import DSSAirflowError

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence

    from airflow.sdk import Context

    from dss_airflow.images.plan import Target


class DSSRebuildCodeEnvImagesOperator(BaseOperator):
    """Build, smoke-test and switch the images of ``pairs`` (e.g. the sensor's XCom).

    :param pairs: ``[{"env": ..., "config": ...}]`` (templated; ``"{{ ti.xcom_pull('detect') }}"``)
    :param build_base: build the base images those pairs use first (after an upgrade)
    :param jobs: concurrent builds
    :param config_dir: config directory, when not the default
    :return: (XCom) ``{"built": [tags], "switched": ["env/config"], "failed": {"env/config": error},
        "unreachable": {"env/config": error}}``. Failed builds fail the task; pairs whose Docker daemon
        did not answer are only warned about (a host that is down must not hold back the others' images).
    """

    template_fields: Sequence[str] = ("pairs",)
    ui_color = "#c9b3f0"

    def __init__(
        self,
        *,
        pairs: Sequence[Mapping[str, Any]] | str,
        build_base: bool = False,
        jobs: int = 2,
        config_dir: str | None = None,
        **kwargs: Any,
    ) -> None:
        kwargs.setdefault("outlets", [AssetAlias(REBUILD_ALIAS)])
        super().__init__(**kwargs)
        self.pairs = pairs
        self.build_base = build_base
        self.jobs = jobs
        self.config_dir = config_dir

    def _targets(self) -> list[Target]:
        from dss_airflow.images.plan import Target

        pairs = self.pairs
        if isinstance(pairs, str):  # an XCom rendered as text
            import ast

            pairs = ast.literal_eval(pairs) if pairs.strip() else []
        return [Target(str(pair["env"]), str(pair["config"])) for pair in pairs or []]

    def execute(self, context: Context) -> dict[str, Any]:
        from dss_airflow.images.base import build_base_image
        from dss_airflow.images.service import ImageService

        targets = self._targets()
        if not targets:
            self.log.info("Nothing to rebuild")
            return {"built": [], "switched": [], "failed": {}, "unreachable": {}}
        service = ImageService(
            get_catalog(self.config_dir),
            progress=lambda event, subject, message: self.log.info("%s %s: %s", event, subject, message),
        )
        if self.build_base:
            for name in sorted({service.planner.base_name_of(t.config) for t in targets}):
                if service.catalog.base_images[name].buildable:
                    build_base_image(service.catalog, name, progress=service.progress)
        report = service.build(targets=targets, jobs=self.jobs)
        events = context["outlet_events"][AssetAlias(REBUILD_ALIAS)]
        for env in sorted({t.env for t in report.switched}):
            images = {
                t.config: service.ledger.pair(env, t.config).current for t in report.switched if t.env == env
            }
            events.add(
                code_env_asset(env),
                extra={config: record.image for config, record in images.items() if record is not None},
            )
            self.log.info("Asset event: %s", code_env_asset(env).uri)
        result = {
            "built": report.built,
            "reused": report.reused,
            "switched": [str(t) for t in report.switched],
            "failed": {str(t): error for t, error in report.failed.items()},
            "unreachable": {str(t): error for t, error in report.unreachable.items()},
        }
        for target, error in report.unreachable.items():
            self.log.warning("Not rebuilt, its host is unreachable: %s: %s", target, error)
        if report.failed:
            details = "\n".join(f"{target}: {error}" for target, error in report.failed.items())
            raise DSSAirflowError(
                f"{len(report.failed)} image build(s) failed; their previous images stay current:\n{details}"
            )
        return result
