"""Outputs are staged and promoted atomically; a failed run leaves nothing in the managed folder."""

from __future__ import annotations

import pytest

from dss_airflow.config.loader import load_catalog
from dss_airflow.errors import ConfigError
from dss_airflow.staging import (
    discard_staging,
    plan_inputs,
    plan_outputs,
    promote_outputs,
    validate_folder_refs,
)
from tests.helpers import BASE_CONFIG, write_config


@pytest.fixture
def catalog(tmp_path):
    write_config(tmp_path, {"c.yaml": BASE_CONFIG})
    return load_catalog(tmp_path)


def test_promote_moves_files_and_keeps_existing_ones(catalog, tmp_path):
    (out,) = plan_outputs(catalog, {"o": "out/reports"}, run_key="k")
    out.host_destination.mkdir(parents=True)
    (out.host_destination / "old.txt").write_text("old")
    (out.host_destination / "same.txt").write_text("previous")
    out.host_staging.mkdir(parents=True)
    (out.host_staging / "same.txt").write_text("new")
    (out.host_staging / "sub").mkdir()
    (out.host_staging / "sub" / "x.csv").write_text("a,b")
    promoted = promote_outputs([out])
    discard_staging([out])
    root = tmp_path / "data" / "out"
    assert promoted == {"o": [str(root / "reports" / "same.txt"), str(root / "reports" / "sub" / "x.csv")]}
    assert (root / "reports" / "same.txt").read_text() == "new"
    assert (root / "reports" / "old.txt").read_text() == "old"
    assert not (root / ".dss-staging").exists()


def test_discard_after_failure_leaves_no_partial_file(catalog, tmp_path):
    (out,) = plan_outputs(catalog, ["out"], run_key="k")
    out.host_staging.mkdir(parents=True)
    (out.host_staging / "partial.csv").write_text("half")
    discard_staging([out])
    assert list((tmp_path / "data" / "out").rglob("*")) == []


@pytest.mark.parametrize(
    ("refs", "expected"),
    [
        ({"x": "raw/../../etc/passwd"}, "path escapes its managed folder"),
        ({"x": "raw/.dss-staging/other"}, "path escapes its managed folder"),
        ({"bad name": "raw"}, "invalid input/output name"),
        ({"x": "rwa/file.csv"}, "unknown managed folder 'rwa'"),
        ({"x": "/srv/raw"}, "inputs and outputs name managed folders, not host paths"),
        (["/srv/raw"], "inputs and outputs name managed folders, not host paths"),
    ],
)
def test_bad_folder_refs(catalog, refs, expected):
    with pytest.raises(ConfigError, match=expected):
        validate_folder_refs(catalog, refs, None)
    with pytest.raises(ConfigError, match=expected):
        plan_inputs(catalog, refs)
