"""Packaging: the committed uv.lock matches pyproject.toml, and Airflow accepts the provider's metadata."""

from __future__ import annotations

import json
import shutil
import subprocess
import tomllib
from importlib.metadata import entry_points
from importlib.resources import files
from pathlib import Path

from packaging.utils import canonicalize_name

import dss_airflow

ROOT = Path(__file__).resolve().parents[2]
PROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]


def lock_check(project: Path) -> subprocess.CompletedProcess[str]:
    """What scripts/bootstrap.sh runs first: does uv.lock still satisfy pyproject.toml (no network)?"""
    from uv import find_uv_bin

    return subprocess.run(
        [str(find_uv_bin()), "lock", "--check", "--offline", "--project", str(project)],
        capture_output=True,
        text=True,
        check=False,
    )


def test_committed_lock_matches_pyproject():
    result = lock_check(ROOT)
    assert result.returncode == 0, f"uv.lock is stale: run scripts/lock.sh and commit it\n{result.stderr}"


def test_a_dependency_added_without_relocking_is_caught(tmp_path):
    for name in ("pyproject.toml", "uv.lock"):
        shutil.copy(ROOT / name, tmp_path / name)
    pyproject = tmp_path / "pyproject.toml"
    text = pyproject.read_text(encoding="utf-8")
    line = '    "pyyaml>=6",\n'
    assert line in text, "sanity: the dependency line this test extends"
    pyproject.write_text(text.replace(line, line + '    "six",\n'), encoding="utf-8")
    result = lock_check(tmp_path)
    assert result.returncode != 0
    assert "needs to be updated" in result.stderr


def test_provider_info_validates_against_airflows_schema():
    """The schema Airflow validates every provider's info with (it ships in the airflow package)."""
    import jsonschema

    schema = json.loads((files("airflow") / "provider_info.schema.json").read_text(encoding="utf-8"))
    validator = jsonschema.validators.validator_for(schema)(schema)
    info = dss_airflow.get_provider_info()
    assert [error.message for error in validator.iter_errors(info)] == []
    assert info["versions"] == [PROJECT["version"]]


def test_provider_entry_point_belongs_to_the_distribution_it_names():
    """Airflow refuses a provider whose package-name differs from its distribution's name."""
    (provider,) = [ep for ep in entry_points(group="apache_airflow_provider") if ep.module == "dss_airflow"]
    assert provider.dist is not None
    assert canonicalize_name(provider.dist.name) == dss_airflow.get_provider_info()["package-name"]
    assert dss_airflow.get_provider_info()["package-name"] == PROJECT["name"]
    plugins = {ep.name: ep.value for ep in entry_points(group="airflow.plugins")}
    assert plugins["dss_airflow"] == "dss_airflow.plugin:DSSAirflowPlugin"


def test_airflow_discovers_the_provider_and_its_documentation():
    """Through Airflow's own discovery: schema, distribution name, and the Documentation link that its
    Providers page shows (read from [project.urls], the same address as external-doc-url)."""
    from airflow.providers_manager import ProvidersManager

    documentation = PROJECT["urls"]["Documentation"]
    manager = ProvidersManager()
    manager.initialize_providers_list()
    provider = manager.providers["dss-airflow"]
    assert provider.version == PROJECT["version"]
    assert provider.data["documentation-url"] == documentation
    assert {i["external-doc-url"] for i in provider.data["integrations"]} == {documentation}
