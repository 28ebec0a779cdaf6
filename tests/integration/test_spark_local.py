"""A real local-mode PySpark job through Airflow (`airflow dags test`): code env venv with pyspark, inputs,
atomic outputs, dss_recipe.spark()."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from tests.helpers import leftover_staging, write_config

pytestmark = pytest.mark.airflow

CONFIG = """
defaults: {project: p, data_dir: data}
spark_configs:
  local-spark:
    type: local
    master: "local[2]"
    conf: {spark.sql.shuffle.partitions: 2}
code_envs:
  spark: {packages: ["pyspark==4.0.1"]}
managed_folders:
  texts: {path: texts}
  counts: {path: counts}
projects:
  p: {root: project}
"""

JOB = """
import json

import dss_recipe
from pyspark.sql import functions as F

spark = dss_recipe.spark()
assert spark.sparkContext.master == "local[2]", spark.sparkContext.master
lines = spark.read.csv(str(dss_recipe.input_path("lines")), header=True)
words = lines.select(F.explode(F.split(F.lower(F.col("text")), r"\\s+")).alias("word"))
counts = {row["word"]: row["count"] for row in words.groupBy("word").count().collect()}
out = dss_recipe.output_dir("counts")
(out / "wordcount.json").write_text(json.dumps(counts, sort_keys=True))
if dss_recipe.params().get("fail"):
    raise RuntimeError("asked to fail after writing")
dss_recipe.set_result({"words": len(counts)})
"""

DAG = """
from airflow.sdk import DAG, Param
from dss_airflow import DSSSparkOperator

with DAG("spark_wordcount", schedule=None, params={"fail": Param(False, type="boolean")},
         render_template_as_native_obj=True):
    DSSSparkOperator(
        task_id="wordcount",
        application="jobs/wordcount.py",
        spark_config="local-spark",
        code_env="spark",
        inputs={"lines": "texts/lines.csv"},
        outputs={"counts": "counts/run"},
        recipe_params={"fail": "{{ params.fail }}"},
    )
"""


@pytest.fixture
def spark_env(tmp_path: Path, shared_cache: Path) -> dict[str, str]:
    if shutil.which("java") is None and not os.environ.get("JAVA_HOME"):
        pytest.skip("local Spark needs Java on the worker (no java on PATH and no JAVA_HOME)")
    config = write_config(tmp_path / "config", {"dss.yaml": CONFIG})
    (config / "project" / "jobs").mkdir(parents=True)
    (config / "project" / "jobs" / "wordcount.py").write_text(textwrap.dedent(JOB))
    texts = config / "data" / "texts"
    texts.mkdir(parents=True)
    rows = ["the quick brown fox", "The lazy dog", "the fox"]
    (texts / "lines.csv").write_text("text\n" + "\n".join(rows) + "\n")
    dags = tmp_path / "dags"
    dags.mkdir()
    (dags / "spark_wordcount.py").write_text(textwrap.dedent(DAG))
    env = {
        **os.environ,
        "AIRFLOW_HOME": str(tmp_path / "airflow"),
        "AIRFLOW__CORE__DAGS_FOLDER": str(dags),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "DSS_AIRFLOW_CONFIG": str(config),
        "DSS_AIRFLOW_STATE": str(tmp_path / "state"),
        "DSS_AIRFLOW_CACHE": str(shared_cache),
        "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}",
    }
    env.pop("AIRFLOW__CORE__UNIT_TEST_MODE", None)
    subprocess.run(["airflow", "db", "migrate"], env=env, check=True, capture_output=True, timeout=600)
    return env


def dags_test(env: dict[str, str], conf: dict[str, object]) -> tuple[subprocess.CompletedProcess[str], float]:
    started = time.monotonic()
    run = subprocess.run(
        ["airflow", "dags", "test", "spark_wordcount", "-c", json.dumps(conf)],
        env=env,
        capture_output=True,
        text=True,
        timeout=1200,
    )
    return run, time.monotonic() - started


def test_local_pyspark_job_through_airflow(spark_env, tmp_path):
    counts_dir = tmp_path / "config" / "data" / "counts"
    failed, failed_s = dags_test(spark_env, {"fail": True})
    output = failed.stdout + failed.stderr
    assert failed.returncode != 0, output[-4000:]
    assert "asked to fail after writing" in output
    assert not list(counts_dir.rglob("*.json")), "a failed job leaves no partial file"

    run, run_s = dags_test(spark_env, {"fail": False})
    output = run.stdout + run.stderr
    assert run.returncode == 0, output[-6000:]
    print(f"first run (venv build + failed job): {failed_s:.0f}s; second run (venv cached): {run_s:.0f}s")
    counts = json.loads((counts_dir / "run" / "wordcount.json").read_text())
    assert counts == {"brown": 1, "dog": 1, "fox": 2, "lazy": 1, "quick": 1, "the": 3}
    assert leftover_staging(counts_dir.parent) == [], "no staging directory left behind"
    assert "wrote" not in output or "to its working directory" not in output, "Spark kept out of the cwd"
