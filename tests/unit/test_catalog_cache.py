"""What spares a task process the config work a DockerOperator task never does: the validated catalog on
disk (no pydantic validation in a fresh process), a change detector of a few stat calls (no walk of the
config directory per task), and one parse-time check per distinct task (1,000 tasks, one check)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

import dss_airflow.config.loader as loader
from dss_airflow.config import disk_cache
from dss_airflow.config.loader import get_catalog, load_catalog
from tests.helpers import BASE_CONFIG, make_project, write_config


def refuse_validation(monkeypatch: pytest.MonkeyPatch) -> None:
    def validated(*args: object, **kwargs: object) -> None:
        raise AssertionError("the catalog was validated again")

    monkeypatch.setattr(loader, "_validate_entry", validated)


def test_a_fresh_process_reuses_the_validated_catalog_until_an_input_changes(tmp_path, monkeypatch):
    monkeypatch.setenv("DSS_AIRFLOW_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("DSS_TEST_TEAM", "team-a")
    config = BASE_CONFIG.replace("raw: {path: raw}", "raw: {path: $DSS_TEST_TEAM/raw}")
    write_config(tmp_path / "config", {"base.yaml": config})
    first = load_catalog(tmp_path / "config")
    (entry,) = disk_cache.catalog_cache_dir().iterdir()
    assert entry.stat().st_mode & 0o077 == 0, "the pickle is private"
    with monkeypatch.context() as patched:
        refuse_validation(patched)
        again = load_catalog(tmp_path / "config")  # what a new task process does
        assert again == first and again.where("managed_folders", "raw") == first.where(
            "managed_folders", "raw"
        )
        patched.setenv("DSS_TEST_TEAM", "team-b")  # the YAML refers to it: a miss
        with pytest.raises(AssertionError, match="validated again"):
            load_catalog(tmp_path / "config")
    monkeypatch.setenv("DSS_TEST_TEAM", "team-b")
    assert load_catalog(tmp_path / "config").folder_path("raw") == tmp_path / "config/data/team-b/raw"


def test_an_entry_others_could_have_written_is_not_unpickled(tmp_path, monkeypatch):
    monkeypatch.setenv("DSS_AIRFLOW_CACHE", str(tmp_path / "cache"))
    write_config(tmp_path / "config", {"base.yaml": BASE_CONFIG})
    load_catalog(tmp_path / "config")
    (entry,) = disk_cache.catalog_cache_dir().iterdir()
    entry.chmod(0o666)
    with monkeypatch.context() as patched:
        refuse_validation(patched)
        with pytest.raises(AssertionError, match="validated again"):
            load_catalog(tmp_path / "config")


def test_a_changed_requirements_file_is_a_miss(tmp_path, monkeypatch):
    monkeypatch.setenv("DSS_AIRFLOW_CACHE", str(tmp_path / "cache"))
    config = BASE_CONFIG.replace("plain: {}", "plain: {requirements_file: reqs/plain.txt}")
    write_config(tmp_path / "config", {"base.yaml": config, "reqs/plain.txt": "pandas\n"})
    load_catalog(tmp_path / "config")
    (tmp_path / "config" / "reqs" / "plain.txt").write_text("pandas\n--index-url http://evil\n")
    with pytest.raises(Exception, match="pip option"):
        load_catalog(tmp_path / "config")


def test_the_process_cache_sees_new_changed_and_removed_files_but_not_hidden_ones(tmp_path):
    config_dir = write_config(tmp_path / "config", {"base.yaml": BASE_CONFIG})
    first = get_catalog(config_dir)
    assert get_catalog(config_dir) is first, "unchanged: the same object"
    (config_dir / ".git").mkdir()
    (config_dir / ".git" / "stray.yaml").write_text("managed_folders: {hidden: {path: h}}\n")
    assert "hidden" not in get_catalog(config_dir).managed_folders
    write_config(config_dir, {"teams/ml.yaml": "managed_folders: {ml: {path: ml}}\n"})  # a new subdirectory
    assert "ml" in get_catalog(config_dir).managed_folders
    (config_dir / "teams" / "ml.yaml").write_text("managed_folders: {ml2: {path: ml}}\n")
    os.utime(config_dir / "teams" / "ml.yaml", ns=(1, 1))  # even with an older mtime: the size changed
    assert set(get_catalog(config_dir).managed_folders) >= {"ml2"}
    (config_dir / "teams" / "ml.yaml").unlink()
    assert not {"ml", "ml2"} & set(get_catalog(config_dir).managed_folders)


def test_a_dag_of_a_thousand_tasks_checks_each_distinct_task_once(tmp_path, monkeypatch):
    from airflow.sdk import DAG

    from dss_airflow import DSSContainerRecipeOperator
    from dss_airflow.tasks.recipe import RecipeTask

    config_dir = write_config(tmp_path / "config", {"base.yaml": BASE_CONFIG})
    make_project(config_dir, {"recipes/clean.py": "print('clean')\n"})
    checks: list[RecipeTask] = []
    original = RecipeTask.check

    def counted(self: RecipeTask, catalog: object) -> object:
        checks.append(self)
        return original(self, catalog)  # type: ignore[arg-type]

    monkeypatch.setattr(RecipeTask, "check", counted)
    with DAG("many", schedule=None):
        for i in range(1000):
            DSSContainerRecipeOperator(
                task_id=f"t{i}",
                recipe="recipes/clean.py",
                outputs=["out"] if i % 2 else ["raw"],
                recipe_params={"i": i},  # not read by the check: shared
                execution_config="docker-small",
                config_dir=str(config_dir),
            )
        with pytest.raises(Exception, match="recipes/missing.py"):  # a failing check is not remembered
            DSSContainerRecipeOperator(
                task_id="bad",
                recipe="recipes/missing.py",
                execution_config="docker-small",
                config_dir=str(config_dir),
            )
    assert len(checks) == 3, "two distinct tasks and the failing one"
    assert Path(config_dir).is_dir()
