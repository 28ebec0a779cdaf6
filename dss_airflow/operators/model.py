"""Model operators: train, retrain, evaluate, promote and score in-memory scikit-learn / XGBoost models.

Each is a recipe run whose code is the runtime's ``dss_model.py`` instead of a project file, so it goes
through exactly the same path as recipes: resolution (task > project > global), the code env's image,
any backend (local venv, Docker, Kubernetes pod), staged outputs promoted atomically after a success.

A saved model is a directory ``<folder>/<model>/`` of a managed folder: immutable ``versions/<id>/`` and an
``active.json`` pointer. Versions are staged as the ``versions`` output and the pointer as the ``pointer``
output, promoted in that order, so ``active.json`` never names a version that is not in place yet, and a
failed run (bad data, a crash, a kill) leaves both the versions and the active pointer untouched.
"""

from __future__ import annotations

import re
from pathlib import PurePosixPath
from typing import TYPE_CHECKING, Any, ClassVar, Literal

from pydantic import ValidationError

from dss_airflow.config.loader import get_catalog
from dss_airflow.config.ml import ModelDefinition
from dss_airflow.config.resolve import ResolvedExecution, is_templated, resolve_execution
from dss_airflow.errors import ConfigError, UnknownNameError
from dss_airflow.operators.recipe import DSSContainerRecipeOperator
from dss_airflow.staging import catalog_folder, validate_folder_refs

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence

    from dss_airflow.config.catalog import Catalog
    from dss_airflow.spec import ContainerSpec, Entrypoint, RecipeRun

#: The runtime module every model task runs (``dss_airflow/runtime/dss_model.py``).
MODEL_ENTRYPOINT = PurePosixPath("dss_model.py")
#: ``active``, ``latest`` or a version id as the runtime writes them (never a path).
_VERSION = re.compile(r"^(active|latest|v\d{8}T\d{6}Z-[0-9a-f]{4})$")
_MODEL_NAME = re.compile(r"^[a-z0-9][a-z0-9_.-]{0,62}$")
Promotion = Literal["always", "if_better", "never"]


class _ModelTaskOperator(DSSContainerRecipeOperator):
    """Shared part of the model operators: the definition, the saved model's folders, the runtime call."""

    action: ClassVar[str]
    task_kind = "model"
    template_fields: Sequence[str] = (
        "model",
        "data",
        "version",
        "force",
        "predictions",
        "code_env",
        "execution_config",
        "cluster",
    )
    ui_color = "#8e6bbf"

    def __init__(
        self,
        *,
        model: str,
        definition: Mapping[str, Any] | None = None,
        data: str | None = None,
        version: str | None = None,
        force: bool | str = False,
        predictions: str | None = None,
        promotion: Promotion = "always",
        compare_with_active: bool = True,
        output_format: Literal["csv", "parquet"] = "csv",
        code_env: str | None = None,
        execution_config: str | None = None,
        project: str | None = None,
        cluster: str | None = None,
        config_dir: str | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(
            recipe=f"{MODEL_ENTRYPOINT} ({self.action})",
            code_env=code_env,
            execution_config=execution_config,
            project=project,
            cluster=cluster,
            config_dir=config_dir,
            **kwargs,
        )
        self.model = model
        self.definition = dict(definition) if definition is not None else None
        self.data = data
        self.version = version
        self.force = force
        self.predictions = predictions
        self.promotion = promotion
        self.compare_with_active = compare_with_active
        self.output_format = output_format
        self._validate_model_at_parse_time()

    # ------------------------------------------------------------------------------ parse time
    def _validate_at_parse_time(self) -> None:
        """Replaced by :meth:`_validate_model_at_parse_time`, which runs once our attributes exist."""

    def _validate_model_at_parse_time(self) -> None:
        if self.promotion not in ("always", "if_better", "never"):
            raise ConfigError(
                "unknown promotion policy",
                field="promotion",
                value=self.promotion,
                fix="use 'always', 'if_better' or 'never'",
            )
        fields = (self.model, self.code_env, self.execution_config, self.project, self.cluster)
        if any(is_templated(value) for value in fields):
            return
        catalog = get_catalog(self.config_dir)
        definition = self._definition(catalog)
        self._resolution(catalog)
        if not any(is_templated(value) for value in (self.data, self.predictions)):
            validate_folder_refs(catalog, *self._folder_refs(definition))
            self._check_arguments(check_version=not is_templated(self.version))

    def _definition(self, catalog: Catalog) -> ModelDefinition:
        """The model's definition: inline (``definition=``) or the config's ``models:`` entry."""
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
            definition = ModelDefinition.model_validate(self.definition)
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

    def _resolution(self, catalog: Catalog) -> ResolvedExecution:
        """As for recipes, with the definition's code env as the task-level default."""
        code_env = self.code_env or self._definition(catalog).code_env
        return resolve_execution(
            catalog,
            project=self.project,
            execution_config=self.execution_config,
            code_env=code_env,
            cluster=self.cluster,
        )

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

    def _entrypoint(self, resolved: ResolvedExecution) -> Entrypoint:
        return MODEL_ENTRYPOINT, "python", True

    # ------------------------------------------------------------------------------ run time
    def _prepare_run(self, catalog: Catalog, resolved: ResolvedExecution, ti: Any) -> None:
        """The saved model's folders as inputs/outputs, and the runtime's parameters."""
        definition = self._definition(catalog)
        self._check_arguments()
        self.inputs, self.outputs = self._folder_refs(definition)
        self.recipe = f"{self.model!r} ({self.action})"
        self.recipe_params = {
            "action": self.action,
            "model_id": self.model,
            "definition": definition.for_runtime(),
            "promotion": self.promotion,
            "version": self.version,
            "force": _as_bool(self.force, "force"),
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

    def _outcome(
        self,
        resolved: ResolvedExecution,
        run: RecipeRun,
        spec: ContainerSpec,
        result: dict[str, Any],
        promoted: dict[str, list[str]],
    ) -> dict[str, Any]:
        """The engine's result (version, metrics, promotion and why) is the task's XCom."""
        outcome = super()._outcome(resolved, run, spec, result, promoted)
        engine: dict[str, Any] = outcome.get("result") or {}
        if "reason" in engine:
            self.log.info("Model %s: %s", self.model, engine["reason"])
        return {
            **engine,
            "status": outcome["status"],
            "code_env": outcome["code_env"],
            "execution_config": outcome["execution_config"],
            "image": outcome["image"],
            "duration_s": outcome["duration_s"],
        }


def _as_bool(value: bool | str, field: str) -> bool:
    """Booleans from templates arrive as text ("True", "false") unless rendered as native objects."""
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ("true", "1", "yes", "on"):
        return True
    if text in ("false", "0", "no", "off", "", "none"):
        return False
    raise ConfigError("not a boolean", field=field, value=value, fix="use true or false")


class DSSTrainModelOperator(_ModelTaskOperator):
    """Train a new version of ``model`` on ``data``; it becomes active unless ``promotion`` says otherwise.

    :param model: name of a ``models:`` entry (or of the inline ``definition``) (templated)
    :param definition: inline model definition (same keys as the config's ``models:`` entries)
    :param data: ``folder/file.csv`` (CSV or Parquet file, or a directory of them) (templated)
    :param promotion: ``always`` (default: an initial training activates its version), ``if_better``
        (champion/challenger on the test split) or ``never`` (leave it to DSSPromoteModelOperator)
    :return: (XCom) ``{"version", "metric", "score", "metrics", "promoted", "reason", "active", ...}``
    """

    action = "train"


class DSSRetrainModelOperator(_ModelTaskOperator):
    """Train ``model`` again on fresh ``data`` with the same definition; promote only if it beats the
    active version on the definition's metric (``promotion="if_better"``), otherwise keep the active one
    and say why (XCom ``reason``)."""

    action = "train"

    def __init__(self, *, promotion: Promotion = "if_better", **kwargs: Any) -> None:
        super().__init__(promotion=promotion, **kwargs)


class DSSEvaluateModelOperator(_ModelTaskOperator):
    """Evaluate a version (default ``latest``) on labelled ``data``: metrics JSON and PNG plots (ROC,
    precision-recall, confusion matrix or residuals, feature importance) next to the version; with
    ``compare_with_active`` the active version is scored on the same data for the promotion decision."""

    action = "evaluate"


class DSSPromoteModelOperator(_ModelTaskOperator):
    """Make ``version`` (default ``latest``) active if its evaluation beats the active version on the same
    data, or unconditionally with ``force`` (templated, e.g. ``"{{ params.force_promote }}"``)."""

    action = "promote"


class DSSScoreModelOperator(_ModelTaskOperator):
    """Score ``data`` with ``version`` (default ``active``) and write predictions, with the version used,
    into the managed folder ``predictions`` (``csv`` or ``parquet``)."""

    action = "score"
