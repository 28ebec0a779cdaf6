"""Recipe tasks: a Python or R file of the project, with declared inputs, outputs and params."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from dss_airflow.config.resolve import is_templated, resolve_recipe_path
from dss_airflow.spec import Entrypoint
from dss_airflow.staging import validate_folder_refs
from dss_airflow.tasks.base import Placement, TaskKind, TaskPlan

if TYPE_CHECKING:
    from collections.abc import Mapping

    from dss_airflow.backends.base import TaskLog
    from dss_airflow.config.catalog import Catalog
    from dss_airflow.config.resolve import ResolvedExecution
    from dss_airflow.staging import FolderRefs
    from dss_airflow.tasks.base import Ran


@dataclass(frozen=True)
class RecipeTask(TaskKind):
    """``recipe`` (relative to the project root) reading ``inputs``, writing ``outputs``."""

    kind = "recipe"

    placement: Placement
    recipe: str
    inputs: FolderRefs = None
    outputs: FolderRefs = None
    params: Mapping[str, Any] = field(default_factory=dict)

    def check(self, catalog: Catalog) -> ResolvedExecution | None:
        if self.placement.templated or is_templated(self.recipe):
            return None
        resolved = self.resolve(catalog)
        catalog.checked((Entrypoint, resolved.project_root, self.recipe), lambda: self.entrypoint(resolved))
        if not (is_templated(self.inputs) or is_templated(self.outputs)):
            validate_folder_refs(catalog, self.inputs, self.outputs)
        return resolved

    def resolve(self, catalog: Catalog) -> ResolvedExecution:
        return self.placement.resolve(catalog)

    def entrypoint(self, resolved: ResolvedExecution) -> Entrypoint:
        """The project's recipe file, checked against path traversal."""
        _, relative, language = resolve_recipe_path(resolved.project_root, self.recipe)
        return Entrypoint(relative, language)

    def plan(self, catalog: Catalog, resolved: ResolvedExecution, ti: Any) -> TaskPlan:
        return TaskPlan(
            label=f"{self.kind} {self.recipe}",
            entrypoint=self.entrypoint(resolved),
            inputs=self.inputs,
            outputs=self.outputs,
            params=dict(self.params),
        )

    def outcome(self, ran: Ran, log: TaskLog) -> dict[str, Any]:
        return {"recipe": self.recipe, **ran.xcom()}
