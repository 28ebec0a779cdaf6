"""Benchmark: parsing a 1,000-task DAG of DSSContainerRecipeOperator vs the same DAG of DockerOperator,
the way the DAG processor does it — a fresh process per parse (Airflow already imported, as in the
processor's forked child), the DAG file executed, then the DAG serialized as the processor stores it.

Run by hand (no Docker needed):

    .venv/bin/python benchmarks/bench_dag_parse.py [--tasks 1000] [--runs 7]

The two sides run alternately, ``--runs`` times each; the figures are medians. Also printed: the cost
per task once the imports are paid (1,000 more distinct tasks built in the same process), whose
difference is what the parse-time checks cost per task after the first.
"""

from __future__ import annotations

import argparse
import compileall
import json
import os
import statistics
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

DSS_DAG = """
from airflow.sdk import DAG
from dss_airflow import DSSContainerRecipeOperator

def build(dag_id, tasks):
    with DAG(dag_id, schedule=None, catchup=False) as dag:
        for i in range(tasks):
            DSSContainerRecipeOperator(  # every task its own output: 1,000 distinct parse-time checks
                task_id=f"t{i:04d}", recipe="recipes/work.py", outputs={"out": f"out/{dag_id}-{i:04d}"},
                recipe_params={"i": i}, execution_config="docker",
            )
    return dag

dag = build("parse_dss", TASKS)
"""

PLAIN_DAG = """
from docker.types import Mount
from airflow.providers.docker.operators.docker import DockerOperator
from airflow.sdk import DAG

def build(dag_id, tasks):
    with DAG(dag_id, schedule=None, catchup=False) as dag:
        for i in range(tasks):
            DockerOperator(
                task_id=f"t{i:04d}", image="dss-airflow-base:bookworm-py311",
                command=["python3", "-c", f"print({dag_id!r}, {i})"], user="1000:1000", auto_remove="force",
                mount_tmp_dir=False, mounts=[Mount(target="/out", source="/tmp/out", type="bind")],
            )
    return dag

dag = build("parse_plain", TASKS)
"""

#: Runs in a fresh interpreter: Airflow imported first (the processor's child has it), then the clock.
MEASURE = """
import json, runpy, sys, time
import airflow.sdk
from airflow.serialization.serialized_objects import DagSerialization
start = time.perf_counter()
module = runpy.run_path(sys.argv[1])
DagSerialization.to_dict(module["dag"])
parse = time.perf_counter() - start
tasks = int(sys.argv[2])
start = time.perf_counter()
module["build"]("again", tasks)
again = time.perf_counter() - start
print(json.dumps({"parse": parse, "per_task": again / tasks}))
"""


def write_dags(work: Path, tasks: int) -> dict[str, Path]:
    config = work / "config"
    (config / "project" / "recipes").mkdir(parents=True)
    (config / "project" / "recipes" / "work.py").write_text("print('work')\n")
    (config / "dss.yaml").write_text(
        textwrap.dedent(
            """
            defaults: {project: bench, code_env: plain, data_dir: ../data}
            base_images: {base: {image: "dss-airflow-base:bookworm-py311"}}
            execution_configs: {docker: {type: docker, base_image: base}}
            code_envs: {plain: {}}
            managed_folders: {out: {path: out}}
            projects: {bench: {root: project}}
            """
        )
    )
    paths = {}
    for name, text in (("dss", DSS_DAG), ("plain", PLAIN_DAG)):
        paths[name] = work / f"parse_{name}.py"
        paths[name].write_text(text.replace("TASKS", str(tasks)))
    return paths


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--tasks", type=int, default=1000)
    parser.add_argument("--runs", type=int, default=7)
    args = parser.parse_args()
    compileall.compile_dir(ROOT / "dss_airflow", quiet=1)  # as scripts/bootstrap.sh leaves it
    work = Path(tempfile.mkdtemp(prefix="dss-bench-parse-"))
    dags = write_dags(work, args.tasks)
    env = {
        **os.environ,
        "DSS_AIRFLOW_CONFIG": str(work / "config"),
        "DSS_AIRFLOW_CACHE": str(work / "cache"),
        "AIRFLOW_HOME": str(work / "airflow"),
    }
    samples: dict[str, list[dict[str, float]]] = {"dss": [], "plain": []}
    for run in range(args.runs + 1):  # the first run of each warms the disk caches, unmeasured
        for name, path in dags.items():
            out = subprocess.run(
                [sys.executable, "-c", MEASURE, str(path), str(args.tasks)],
                env=env,
                capture_output=True,
                text=True,
                check=True,
            ).stdout
            if run:
                samples[name].append(json.loads(out.splitlines()[-1]))

    def median(name: str, key: str) -> float:
        return statistics.median(sample[key] for sample in samples[name])

    print(f"{args.tasks}-task DAG, {args.runs} interleaved runs each, {os.cpu_count()} cores")
    dss, plain = median("dss", "parse"), median("plain", "parse")
    print(
        f"parse + serialize, fresh process: DSS {dss:.3f} s  DockerOperator {plain:.3f} s"
        f"  ratio {dss / plain:.2f}x"
    )
    dss_task, plain_task = median("dss", "per_task") * 1000, median("plain", "per_task") * 1000
    print(
        f"per task, imports paid:          DSS {dss_task:.3f} ms DockerOperator {plain_task:.3f} ms"
        f"  ratio {dss_task / plain_task:.2f}x  (checks and all: +{dss_task - plain_task:.3f} ms/task)"
    )
    print("goal: parse ratio <= 1.10x; checks <= 0.1 ms per task after the first")


if __name__ == "__main__":
    main()
