"""The shape of the package, checked from its source: layers without import circles, small modules, thin
operators, every exception where a reader looks for it.

Every import counts — module level, ``if TYPE_CHECKING:`` and inside functions — since a lazy import is
still a dependency a reader has to follow.
"""

from __future__ import annotations

import ast
import builtins
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[2] / "dss_airflow"
MAX_MODULE_LINES = 600
MAX_OPERATOR_LINES = 150
#: operators/base.py is the one operator base that runs the flow for every kind, not a declaration.
MAX_OPERATOR_BASE_LINES = 200
#: Where exception classes may be defined: the Airflow side, and the runtime (a separate stdlib program
#: that runs inside code envs of any Python and cannot import the Airflow side).
ERROR_MODULES = {"dss_airflow.errors", "dss_airflow.runtime.errors"}


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules() -> dict[str, Path]:
    return {module_name(path): path for path in sorted(PACKAGE.rglob("*.py"))}


def imports_of(name: str, path: Path, known: set[str]) -> set[str]:
    """The package's modules that ``name`` imports, anywhere in its source."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, *([base] if base else [])])
            for alias in node.names:
                submodule = f"{base}.{alias.name}"
                found.add(submodule if submodule in known else base)
    return {target for target in found if target in known and target != name}


def import_graph() -> dict[str, set[str]]:
    found = modules()
    known = set(found)
    return {name: imports_of(name, path, known) for name, path in found.items()}


def circles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in sorted(graph[node]):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                components.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return components


def test_the_checker_finds_a_circle_and_resolves_relative_imports(tmp_path):
    """The checks below can fail: a made-up circle is found, relative imports are followed."""
    assert circles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    module = tmp_path / "train.py"
    module.write_text("from . import data\nfrom .metrics import score\nfrom .. import ml_catalog\n")
    known = {"p.model.data", "p.model.metrics", "p.ml_catalog", "p.model.train"}
    assert imports_of("p.model.train", module, known) == {"p.model.data", "p.model.metrics", "p.ml_catalog"}


def test_no_import_circle():
    graph = import_graph()
    assert sum(len(targets) for targets in graph.values()) > 100, "sanity: the graph was read"
    assert circles(graph) == []


def test_no_module_over_600_lines():
    sizes = {name: len(path.read_text(encoding="utf-8").splitlines()) for name, path in modules().items()}
    assert {name: n for name, n in sizes.items() if n > MAX_MODULE_LINES} == {}


def test_operators_are_thin_declarations():
    sizes = {
        path.name: len(path.read_text(encoding="utf-8").splitlines())
        for path in (PACKAGE / "operators").glob("*.py")
    }
    assert len(sizes) >= 5, "sanity: the operator modules were found"
    assert sizes.pop("base.py") <= MAX_OPERATOR_BASE_LINES
    assert {name: n for name, n in sizes.items() if n > MAX_OPERATOR_LINES} == {}


def test_exception_classes_are_defined_only_in_errors_modules():
    classes: dict[str, tuple[str, list[str]]] = {}
    for name, path in modules().items():
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ClassDef):
                bases = [ast.unparse(base).rpartition(".")[2] for base in node.bases]
                classes[node.name] = (name, bases)

    def is_exception(class_name: str, seen: frozenset[str] = frozenset()) -> bool:
        builtin = getattr(builtins, class_name, None)
        if isinstance(builtin, type) and issubclass(builtin, BaseException):
            return True
        if class_name in seen or class_name not in classes:
            return False
        return any(is_exception(base, seen | {class_name}) for base in classes[class_name][1])

    exceptions = {cls: module for cls, (module, _) in classes.items() if is_exception(cls)}
    assert {"DSSAirflowError", "ConfigError", "ExecutionError"} <= set(exceptions), "sanity: found"
    assert {cls: module for cls, module in exceptions.items() if module not in ERROR_MODULES} == {}
