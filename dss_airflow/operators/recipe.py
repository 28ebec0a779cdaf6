"""DSSContainerRecipeOperator: a Python or R recipe of a project, in its code env, where its execution
config says (built-in local venv, Docker, Kubernetes)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from dss_airflow.operators.base import RESOLVED_FIELD, DSSTaskOperator
from dss_airflow.staging import copy_refs
from dss_airflow.tasks.recipe import RecipeTask

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence

    from dss_airflow.staging import FolderRefs


class DSSContainerRecipeOperator(DSSTaskOperator):
    """Run ``recipe`` (a path inside the project) in ``code_env`` on ``execution_config``.

    :param recipe: path of a ``.py`` or ``.R`` file, relative to the project root (templated)
    :param inputs: managed folders (or files/directories inside them) to read: ``["raw"]`` or
        ``{"orders": "raw/orders.csv"}``; the recipe reads ``dss_recipe.input_path(name)`` (templated)
    :param outputs: managed folders to write: ``["curated"]`` or ``{"clean": "curated/orders"}``; the
        recipe writes into ``dss_recipe.output_dir(name)``, promoted atomically on success (templated)
    :param recipe_params: JSON-serialisable parameters, ``dss_recipe.params()`` (templated)
    :param code_env: and ``execution_config``, ``project``, ``cluster``, ``config_dir``, ``deferrable``:
        see :class:`~dss_airflow.operators.base.DSSTaskOperator`
    :return: (XCom) ``{"status", "outputs": {name: [files]}, "result", "warnings", "execution_config", ...}``
    """

    template_fields: Sequence[str] = (
        "recipe",
        "code_env",
        "execution_config",
        "cluster",
        "inputs",
        "outputs",
        "recipe_params",
        RESOLVED_FIELD,
    )
    template_fields_renderers = {**DSSTaskOperator.template_fields_renderers, "recipe_params": "json"}
    ui_color = "#2ab1ac"

    def __init__(
        self,
        *,
        recipe: str,
        inputs: FolderRefs = None,
        outputs: FolderRefs = None,
        recipe_params: Mapping[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.recipe = recipe
        self.inputs = copy_refs(inputs)
        self.outputs = copy_refs(outputs)
        self.recipe_params = dict(recipe_params or {})
        self.check_at_parse_time()

    def task(self) -> RecipeTask:
        return RecipeTask(self.placement(), self.recipe, self.inputs, self.outputs, self.recipe_params)
