"""dss_recipe.spark(): local mode (the config names a master) vs cluster mode (no master: spark-submit or the
spark-operator set it), checked on a stand-in for pyspark, without starting Spark."""

from __future__ import annotations

import atexit
import json
import sys
import types
from typing import TYPE_CHECKING, Any

import pytest

from dss_airflow.runtime import dss_recipe

if TYPE_CHECKING:
    from pathlib import Path

CONF = {"spark.sql.shuffle.partitions": 4}


def test_local_mode_keeps_spark_scratch_files_in_the_run_unless_the_config_says_otherwise():
    settings = {"master": "local[2]", "conf": {**CONF, "spark.local.dir": "/fast-disk"}}

    master, conf = dss_recipe._session_options(settings, "/run/spark")

    assert master == "local[2]"
    assert conf == {
        "spark.local.dir": "/fast-disk",
        "spark.sql.warehouse.dir": "/run/spark/warehouse",
        "spark.sql.shuffle.partitions": 4,
    }


@pytest.mark.parametrize("settings", [{"conf": CONF}, {"master": None, "conf": CONF}], ids=["absent", "null"])
def test_cluster_mode_has_no_master_and_no_local_scratch_defaults(settings):
    assert dss_recipe._session_options(settings, "/run/spark") == (None, CONF)


class RecordingBuilder:
    """SparkSession.builder's chained calls, recorded."""

    def __init__(self) -> None:
        self.calls: list[tuple[Any, ...]] = []

    def master(self, value: str) -> RecordingBuilder:
        self.calls.append(("master", value))
        return self

    def appName(self, value: str) -> RecordingBuilder:
        self.calls.append(("appName", value))
        return self

    def config(self, key: str, value: Any) -> RecordingBuilder:
        self.calls.append(("config", key, value))
        return self

    def getOrCreate(self) -> Any:
        return types.SimpleNamespace(stop=lambda: None)


@pytest.fixture
def builder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> RecordingBuilder:
    """A run's context and a pyspark whose SparkSession.builder records what spark() asks of it."""
    context = tmp_path / "context.json"
    context.write_text(json.dumps({"result_file": str(tmp_path / "xcom" / "return.json")}))
    monkeypatch.setenv("DSS_CONTEXT", str(context))
    recording = RecordingBuilder()
    pyspark_sql = types.ModuleType("pyspark.sql")
    pyspark_sql.SparkSession = types.SimpleNamespace(builder=recording)  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "pyspark", types.ModuleType("pyspark"))
    monkeypatch.setitem(sys.modules, "pyspark.sql", pyspark_sql)
    monkeypatch.setattr(dss_recipe, "_SPARK_SESSION", None)
    monkeypatch.setattr(atexit, "register", lambda stop: None)
    return recording


def test_spark_sets_the_master_of_a_local_config(builder: RecordingBuilder, tmp_path: Path, monkeypatch):
    monkeypatch.setenv("DSS_SPARK", json.dumps({"master": "local[2]", "app_name": "job", "conf": CONF}))

    dss_recipe.spark()

    scratch = tmp_path / "xcom" / "spark"
    assert builder.calls == [
        ("master", "local[2]"),
        ("appName", "job"),
        ("config", "spark.local.dir", str(scratch / "local")),
        ("config", "spark.sql.warehouse.dir", str(scratch / "warehouse")),
        ("config", "spark.sql.shuffle.partitions", 4),
    ]


def test_spark_in_cluster_mode_leaves_the_master_to_spark_submit(builder: RecordingBuilder, monkeypatch):
    monkeypatch.setenv("DSS_SPARK", json.dumps({"master": None, "app_name": "job", "conf": CONF}))

    dss_recipe.spark()

    assert builder.calls == [("appName", "job"), ("config", "spark.sql.shuffle.partitions", 4)]
