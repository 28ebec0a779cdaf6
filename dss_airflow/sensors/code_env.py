"""CodeEnvChangeSensor: which (code env, execution or spark config) images are stale, per the ledger.

It watches what changes an image — package lists and requirements files, resources, R packages, and the
base image *digest* (a base re-pushed under the same tag makes its envs stale) — by asking the image
plan, the same code `dss-airflow images plan` runs. A poke builds nothing and calls nothing on the network;
with ``check_base_digests`` it inspects each base image once on its daemon, and a daemon that does not
answer makes only its own pairs "unknown" (warned about, not reported stale). It runs in ``reschedule``
mode by default, so it holds no worker slot between pokes.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from airflow.sdk import BaseSensorOperator, PokeReturnValue

from dss_airflow.config.loader import get_catalog

if TYPE_CHECKING:
    from collections.abc import Sequence

    from airflow.sdk import Context

ALL = "all"


class CodeEnvChangeSensor(BaseSensorOperator):
    """Succeed with the list of stale pairs, ``[{"env", "config", "reasons"}]``, as soon as there is one.

    :param envs: code envs to watch (default: all)
    :param configs: configs to watch (default: all container execution configs and kubernetes spark
        configs the envs are built for)
    :param check_base_digests: also compare base image digests (one Docker call per base image)
    :param force_envs: report these envs as stale without looking (``"all"`` for every env): how an admin's
        "rebuild env X" trigger goes through the same DAG (templated, e.g. ``"{{ params.env }}"``;
        empty or ``"none"`` means watch normally)
    :param config_dir: config directory, when not the default
    """

    template_fields: Sequence[str] = ("envs", "configs", "force_envs")
    ui_color = "#e8d6f5"

    def __init__(
        self,
        *,
        envs: Sequence[str] | None = None,
        configs: Sequence[str] | None = None,
        check_base_digests: bool = True,
        force_envs: str | Sequence[str] | None = None,
        config_dir: str | None = None,
        mode: str = "reschedule",
        poke_interval: float = 300,
        **kwargs: Any,
    ) -> None:
        super().__init__(mode=mode, poke_interval=poke_interval, **kwargs)
        self.envs = envs
        self.configs = configs
        self.check_base_digests = check_base_digests
        self.force_envs = force_envs
        self.config_dir = config_dir

    def _forced(self) -> list[str] | None:
        forced = self.force_envs
        if not forced or forced in ("none", ""):
            return None
        catalog = get_catalog(self.config_dir)
        if forced == ALL or forced == [ALL]:
            return sorted(catalog.code_envs)
        names = [forced] if isinstance(forced, str) else list(forced)
        for name in names:
            catalog.lookup("code_envs", name, field="force_envs")
        return names

    def poke(self, context: Context) -> PokeReturnValue:
        from dss_airflow.images.ledger import Ledger
        from dss_airflow.images.plan import Planner

        planner = Planner(get_catalog(self.config_dir), Ledger.default())
        forced = self._forced()
        if forced is not None:
            stale = [
                {"env": t.env, "config": t.config, "reasons": ["requested"]}
                for t in planner.targets(forced, self.configs)
            ]
            self.log.info("Rebuild requested for %s: %d pair(s)", ", ".join(forced), len(stale))
            return PokeReturnValue(is_done=bool(stale), xcom_value=stale)
        plan = planner.plan(self.envs, self.configs, check_base=self.check_base_digests)
        for item in plan:
            if item.action == "blocked":
                self.log.warning("%s cannot be built: %s", item.target, "; ".join(item.reasons))
            elif item.action == "unknown":
                self.log.warning("%s is not checked: %s", item.target, "; ".join(item.reasons))
        stale = [
            {"env": item.target.env, "config": item.target.config, "reasons": item.reasons}
            for item in plan
            if item.action == "build"
        ]
        for pair in stale:
            self.log.info("Stale: %s/%s (%s)", pair["env"], pair["config"], "; ".join(pair["reasons"]))
        if not stale:
            self.log.info("All %d code-env image(s) are up to date", len(plan))
        return PokeReturnValue(is_done=bool(stale), xcom_value=stale)
