"""DSSSparkOperator: a PySpark application of a project, run where its spark config says (local mode in
the code env's virtualenv, or Spark on Kubernetes in the code env's image; see
:mod:`dss_airflow.tasks.spark`)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from dss_airflow.operators.base import RESOLVED_FIELD, DSSTaskOperator
from dss_airflow.staging import copy_refs
from dss_airflow.tasks.spark import SparkTask

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence

    from dss_airflow.staging import FolderRefs


class DSSSparkOperator(DSSTaskOperator):
    """Run the PySpark ``application`` of a project on ``spark_config``.

    :param application: ``.py`` file relative to the project root (same checks as recipes); on a
        kubernetes spark config also a URI the cluster reads (``local:///...``, ``s3a://...``), run as is
        (templated)
    :param spark_config: name of a ``spark_configs`` entry; may be omitted when only one is defined
        (templated; permissions are checked again at run time)
    :param code_env: code env of the job (it must contain pyspark; on a kubernetes spark config its image
        is built for that config: ``build_for: [<spark config>]``)
    :param inputs: managed folders to read, as for recipes
    :param outputs: managed folders to write, promoted atomically on success
    :param recipe_params: JSON-serialisable parameters, ``dss_recipe.params()`` (templated)
    :param project: and ``config_dir``: see :class:`~dss_airflow.operators.base.DSSTaskOperator`
    :return: (XCom) ``{"status", "application", "spark_config", "outputs", "result", ...}``
    """

    template_fields: Sequence[str] = (
        "application",
        "spark_config",
        "code_env",
        "inputs",
        "outputs",
        "recipe_params",
        RESOLVED_FIELD,
    )
    ui_color = "#e25a1c"

    def __init__(
        self,
        *,
        application: str,
        spark_config: str | None = None,
        inputs: FolderRefs = None,
        outputs: FolderRefs = None,
        recipe_params: Mapping[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.application = application
        self.spark_config = spark_config
        self.inputs = copy_refs(inputs)
        self.outputs = copy_refs(outputs)
        self.recipe_params = dict(recipe_params or {})
        self.check_at_parse_time()

    def task(self) -> SparkTask:
        return SparkTask(
            self.placement(),
            application=self.application,
            spark_config=self.spark_config,
            inputs=self.inputs,
            outputs=self.outputs,
            params=self.recipe_params,
        )
