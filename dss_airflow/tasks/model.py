"""Model tasks: train, evaluate, promote or score an in-memory scikit-learn / XGBoost model.

Each is a run of the runtime's model engine (``dss_model.py``) instead of a project file, so it goes the
same way as recipes: resolution, the code env's image, any backend, staged outputs promoted after a
success. A saved model is ``<folder>/<model>/``: immutable ``versions/<id>/`` and an ``active.json``
pointer. Versions are the ``versions`` output and the pointer the ``pointer`` output, promoted in that
order, so ``active.json`` never names a version not in place yet, and a failed run leaves both untouched.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import PurePosixPath
from typing import TYPE_CHECKING, Any, Literal

from pydantic import ValidationError

from dss_airflow.config.ml import ModelDefinition
from dss_airflow.config.resolve import is_templated
from dss_airflow.errors import ConfigError, UnknownNameError
from dss_airflow.spec import Entrypoint
from dss_airflow.staging import catalog_folder, validate_folder_refs
from dss_airflow.tasks.base import Placement, TaskKind, TaskPlan, as_bool

if TYPE_CHECKING:
    from collections.abc import Mapping

    from dss_airflow.backends.base import TaskLog
    from dss_airflow.config.catalog import Catalog
    from dss_airflow.config.resolve import ResolvedExecution
    from dss_airflow.tasks.base import Ran

#: The runtime module every model task runs (``dss_airflow/runtime/dss_model.py``).
MODEL_ENTRYPOINT = Entrypoint(PurePosixPath("dss_model.py"), builtin=True)
#: ``active``, ``latest`` or a version id as the runtime writes them (never a path).
_VERSION = re.compile(r"^(active|latest|v\d{8}T\d{6}Z-[0-9a-f]{4})$")
_MODEL_NAME = re.compile(r"^[a-z0-9][a-z0-9_.-]{0,62}$")
Action = Literal["train", "evaluate", "promote", "score"]
Promotion = Literal["always", "if_better", "never"]
PROMOTIONS = ("always", "if_better", "never")


@dataclass(frozen=True)
class ModelTask(TaskKind):
    """One action on the saved model ``model`` (a ``models:`` entry, or ``definition`` inline)."""

    kind = "model"

    placement: Placement
    action: Action
    model: str
    definition: Mapping[str, Any] | None = None
    data: str | None = None
    version: str | None = None
    force: bool | str = False
    predictions: str | None = None
    promotion: Promotion = "always"
    compare_with_active: bool = True
    output_format: str = "csv"
    #: The validated definition, once per task object (parse time, run time).
    _memo: dict[str, ModelDefinition] = field(default_factory=dict, compare=False, repr=False)

    def check(self, catalog: Catalog) -> ResolvedExecution | None:
        if self.promotion not in PROMOTIONS:
            raise ConfigError(
                "unknown promotion policy",
                field="promotion",
                value=self.promotion,
                fix="use 'always', 'if_better' or 'never'",
            )
        if self.placement.templated or is_templated(self.model):
            return None
        definition = self.definition_in(catalog)
        resolved = self.resolve(catalog)
        if not any(is_templated(value) for value in (self.data, self.predictions)):
            validate_folder_refs(catalog, *self._folder_refs(definition))
            self._check_arguments(check_version=not is_templated(self.version))
        return resolved

    def definition_in(self, catalog: Catalog) -> ModelDefinition:
        """The model's definition: inline (``definition=``) or the config's ``models:`` entry."""
        if "definition" not in self._memo:
            self._memo["definition"] = self._definition(catalog)
        return self._memo["definition"]

    def _definition(self, catalog: Catalog) -> ModelDefinition:
        if not _MODEL_NAME.match(self.model):
            raise ConfigError(
                "invalid model name",
                field="model",
                value=self.model,
                fix="model names use lower-case letters, digits, '.', '_' and '-' (they are directory names)",
            )
        if self.definition is None:
            if self.model not in catalog.models:
                raise UnknownNameError("model", self.model, catalog.models, field="model")
            return catalog.models[self.model]
        try:
            definition = ModelDefinition.model_validate(dict(self.definition))
        except ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(str(part) for part in first["loc"])
            raise ConfigError(
                first["msg"].removeprefix("Value error, "),
                field=f"definition.{where}" if where else "definition",
                value=first.get("input") if not isinstance(first.get("input"), dict) else None,
                fix="see the models: section of the config reference (task, target, algorithm, folder, ...)",
            ) from exc
        catalog_folder(catalog, definition.folder, "definition.folder")
        return definition

    def resolve(self, catalog: Catalog) -> ResolvedExecution:
        """As for recipes, with the definition's code env as the task-level default."""
        return self.placement.resolve(catalog, default_code_env=self.definition_in(catalog).code_env)

    def _check_arguments(self, *, check_version: bool = True) -> None:
        """What each action needs, and version names that cannot be paths."""
        if self.data is None and self.action in ("train", "evaluate", "score"):
            raise ConfigError(
                f"a model {self.action} task needs its data",
                field="data",
                fix="pass data='folder/file.csv' (a CSV or Parquet file, or a directory of them)",
            )
        if self.action == "score" and self.predictions is None:
            raise ConfigError(
                "a scoring task needs an output for its predictions",
                field="predictions",
                fix="pass predictions='folder' or 'folder/sub/dir' (a managed folder)",
            )
        if check_version and self.version is not None and not _VERSION.match(self.version):
            raise ConfigError(
                "invalid model version",
                field="version",
                value=self.version,
                fix="use 'active', 'latest' or a version id such as v20260101T120000Z-ab12",
            )

    def _folder_refs(self, definition: ModelDefinition) -> tuple[dict[str, str], dict[str, str]]:
        """Inputs and outputs of the action; ``versions`` before ``pointer`` (promotion order)."""
        saved = f"{definition.folder}/{self.model}"
        inputs = {"models": saved}
        if self.data is not None and self.action != "promote":
            inputs["data"] = self.data
        outputs: dict[str, str] = {}
        if self.action in ("train", "evaluate"):
            outputs["versions"] = f"{saved}/versions"
        if self.action in ("train", "promote"):
            outputs["pointer"] = saved
        if self.action == "score" and self.predictions is not None:
            outputs["predictions"] = self.predictions
        return inputs, outputs

    def plan(self, catalog: Catalog, resolved: ResolvedExecution, ti: Any) -> TaskPlan:
        """The saved model's folders as inputs and outputs, and the engine's parameters."""
        definition = self.definition_in(catalog)
        self._check_arguments()
        inputs, outputs = self._folder_refs(definition)
        params = {
            "action": self.action,
            "model_id": self.model,
            "definition": definition.for_runtime(),
            "promotion": self.promotion,
            "version": self.version,
            "force": as_bool(self.force, "force"),
            "compare_with_active": self.compare_with_active,
            "output_format": self.output_format,
            "run": {
                "code_env": resolved.code_env_name,
                "execution_config": resolved.execution_config_name,
                "dag_id": ti.dag_id,
                "task_id": ti.task_id,
                "run_id": ti.run_id,
            },
        }
        label = f"{self.kind} {self.model!r} ({self.action})"
        return TaskPlan(label, MODEL_ENTRYPOINT, inputs, outputs, params)

    def outcome(self, ran: Ran, log: TaskLog) -> dict[str, Any]:
        """The engine's result (version, metrics, promotion and why) is the task's XCom."""
        common = ran.xcom()
        engine: dict[str, Any] = dict(common.get("result") or {})
        if "reason" in engine:
            log.info("Model %s: %s", self.model, engine["reason"])
        keep = ("status", "code_env", "execution_config", "image", "duration_s")
        return {**engine, **{key: common[key] for key in keep}}
