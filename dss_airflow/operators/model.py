"""Model operators: train, retrain, evaluate, promote and score in-memory scikit-learn / XGBoost models
(see :mod:`dss_airflow.tasks.model` for the saved-model layout and what each action reads and writes)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, ClassVar, Literal

from dss_airflow.operators.base import RESOLVED_FIELD, DSSTaskOperator
from dss_airflow.tasks.model import ModelTask

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence

    from dss_airflow.tasks.model import Action, Promotion


class _ModelOperator(DSSTaskOperator):
    """Arguments of every model action.

    :param model: name of a ``models:`` entry (or of the inline ``definition``) (templated)
    :param definition: inline model definition (same keys as the config's ``models:`` entries)
    :param data: ``folder/file.csv`` (CSV or Parquet file, or a directory of them) (templated)
    :param code_env: default: the definition's; ``execution_config``, ``project``, ``cluster``,
        ``config_dir``, ``deferrable``: see :class:`~dss_airflow.operators.base.DSSTaskOperator`
    """

    action: ClassVar[Action]
    template_fields: Sequence[str] = (
        "model", "data", "version", "force", "predictions", "code_env", "execution_config", "cluster",
        RESOLVED_FIELD,
    )  # fmt: skip
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
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.model, self.data, self.version, self.force = model, data, version, force
        self.definition = dict(definition) if definition is not None else None
        self.predictions, self.promotion = predictions, promotion
        self.compare_with_active, self.output_format = compare_with_active, output_format
        self.check_at_parse_time()

    def task(self) -> ModelTask:
        return ModelTask(
            placement=self.placement(), action=self.action, model=self.model, definition=self.definition,
            data=self.data, version=self.version, force=self.force, predictions=self.predictions,
            promotion=self.promotion, compare_with_active=self.compare_with_active,
            output_format=self.output_format,
        )  # fmt: skip


class DSSTrainModelOperator(_ModelOperator):
    """Train a new version of ``model`` on ``data``; it becomes active unless ``promotion`` says otherwise.

    :param promotion: ``always`` (default: an initial training activates its version), ``if_better``
        (champion/challenger on the test split) or ``never`` (leave it to DSSPromoteModelOperator)
    :return: (XCom) ``{"version", "metric", "score", "metrics", "promoted", "reason", "active", ...}``
    """

    action = "train"


class DSSRetrainModelOperator(_ModelOperator):
    """Train ``model`` again on fresh ``data`` with the same definition; promote only if it beats the
    active version on the definition's metric (``promotion="if_better"``), otherwise keep the active one
    and say why (XCom ``reason``)."""

    action = "train"

    def __init__(self, *, promotion: Promotion = "if_better", **kwargs: Any) -> None:
        super().__init__(promotion=promotion, **kwargs)


class DSSEvaluateModelOperator(_ModelOperator):
    """Evaluate a version (default ``latest``) on labelled ``data``: metrics JSON and PNG plots (ROC,
    precision-recall, confusion matrix or residuals, feature importance) next to the version; with
    ``compare_with_active`` the active version is scored on the same data for the promotion decision."""

    action = "evaluate"


class DSSPromoteModelOperator(_ModelOperator):
    """Make ``version`` (default ``latest``) active if its evaluation beats the active version on the same
    data, or unconditionally with ``force`` (templated, e.g. ``"{{ params.force_promote }}"``)."""

    action = "promote"


class DSSScoreModelOperator(_ModelOperator):
    """Score ``data`` with ``version`` (default ``active``) and write predictions, with the version used,
    into the managed folder ``predictions`` (``csv`` or ``parquet``)."""

    action = "score"
