"""The image smoke test's judgement of one import: broken module vs undeclared optional dependency."""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING

import pytest

from dss_airflow.runtime import RUNTIME_ROOT, smoke
from dss_airflow.runtime.smoke import import_problem

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path


@pytest.fixture
def modules(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    monkeypatch.syspath_prepend(str(tmp_path))
    yield tmp_path
    for name in ("fine_module", "uses_optional", "broken_itself", "raises_at_import"):
        sys.modules.pop(name, None)


def test_a_module_that_imports_fine_has_no_problem(modules):
    (modules / "fine_module.py").write_text("VALUE = 1\n")
    assert import_problem("fine_module") == (None, None)


def test_an_undeclared_optional_dependency_is_listed_not_failed(modules):
    """matplotlib-inline imports matplotlib without declaring it: not a broken image (pip check covers
    declared dependencies)."""
    (modules / "uses_optional.py").write_text("import not_installed_anywhere_xyz\n")
    failure, optional = import_problem("uses_optional")
    assert failure is None
    assert optional is not None and "not_installed_anywhere_xyz" in optional


def test_a_missing_submodule_of_the_package_itself_and_errors_at_import_fail(modules):
    (modules / "broken_itself").mkdir()
    (modules / "broken_itself" / "__init__.py").write_text("from broken_itself import missing_part\n")
    (modules / "raises_at_import.py").write_text("raise RuntimeError('bad build')\n")
    failure, optional = import_problem("broken_itself")
    assert optional is None and failure is not None and "missing_part" in failure
    failure, optional = import_problem("raises_at_import")
    assert optional is None and failure == "RuntimeError: bad build"


def test_run_as_a_script_the_runtime_directory_leaves_sys_path(monkeypatch: pytest.MonkeyPatch):
    """Else the runtime's own errors.py or model/ would be smoke-tested for an env's 'errors' or 'model'."""
    monkeypatch.setattr(sys, "path", [RUNTIME_ROOT, *sys.path])
    smoke._runtime_off_path()
    assert RUNTIME_ROOT not in sys.path
