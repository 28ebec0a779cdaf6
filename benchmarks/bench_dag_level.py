"""Benchmark: a 50-task DAG of DSSContainerRecipeOperator vs the same DAG of plain DockerOperator tasks,
through a real Airflow (api-server + scheduler + dag-processor, LocalExecutor, its own AIRFLOW_HOME on
SQLite) — what a user waits for, not only ``execute()``.

Run by hand (needs a Docker engine and the base image: scripts/ensure-base-image.sh):

    .venv/bin/python benchmarks/bench_dag_level.py [--rounds 3] [--tasks 50] [--parallelism 8]

Each task sleeps 1-2 s and writes one 260 KB file (the DSS one into a managed folder, promoted atomically;
the plain one into a bind mount). The two DAGs run alternately, one at a time, ``--rounds`` times each
after one unmeasured warm-up run of each; the figures are the medians over rounds, read from the metadata
database the scheduler writes: trigger->end (``dag_run.queued_at`` -> ``end_date``), and per task its
duration (start -> end) and its wait (queued -> start); and from the task logs, the time from the
start of the worker's DAG parse to "Starting docker container" (what the operator does before Docker).
"""

from __future__ import annotations

import argparse
import compileall
import json
import os
import signal
import statistics
import sys
import tempfile
import textwrap
from datetime import datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.airflow_cluster import AirflowCluster  # noqa: E402

BASE_IMAGE = "dss-airflow-base:bookworm-py311"
API_PORT = 18280
PAYLOAD_BYTES = 260_000

RECIPE = """\
import time

import dss_recipe

time.sleep(dss_recipe.params()["sleep"])
(dss_recipe.output_dir("out") / "data.bin").write_bytes(b"x" * PAYLOAD)
"""

DSS_DAG = '''\
"""50 DSS recipe tasks (one DAG file per side: each task process parses only its own DAG)."""
from airflow.sdk import DAG

from dss_airflow import DSSContainerRecipeOperator

with DAG("bench_dss", schedule=None, catchup=False, max_active_tasks={parallelism}):
    for i in range({tasks}):
        DSSContainerRecipeOperator(
            task_id=f"t{{i:03d}}",
            recipe="recipes/work.py",
            outputs={{"out": f"out/t{{i:03d}}"}},
            recipe_params={{"sleep": 1 + (i % 11) / 10}},
            execution_config="docker",
        )
'''

PLAIN_DAG = '''\
"""The same work as plain DockerOperator tasks writing into a bind mount."""
from docker.types import Mount

from airflow.providers.docker.operators.docker import DockerOperator
from airflow.sdk import DAG

with DAG("bench_plain", schedule=None, catchup=False, max_active_tasks={parallelism}):
    for i in range({tasks}):
        code = (
            "import os, time; time.sleep(%s); os.makedirs('/out/t%03d', exist_ok=True); "
            "open('/out/t%03d/data.bin', 'wb').write(b'x' * {payload})" % (1 + (i % 11) / 10, i, i)
        )
        DockerOperator(
            task_id=f"t{{i:03d}}",
            image={image!r},
            command=["python3", "-c", code],
            user="1000:1000",
            auto_remove="force",
            mount_tmp_dir=False,
            mounts=[Mount(target="/out", source={plain_out!r}, type="bind")],
        )
'''


def write_setup(work: Path, tasks: int, parallelism: int) -> tuple[Path, Path]:
    """The DSS config dir and project, the DAGs folder; returns (config_dir, dags_folder)."""
    config_dir, dags, plain_out = work / "config", work / "dags", work / "plain-out"
    (config_dir / "project" / "recipes").mkdir(parents=True)
    dags.mkdir()
    plain_out.mkdir()
    os.chmod(plain_out, 0o777)  # the plain tasks write as uid 1000
    (config_dir / "dss.yaml").write_text(
        textwrap.dedent(
            f"""
            defaults: {{project: bench, code_env: plain, data_dir: ../data}}
            base_images: {{base: {{image: "{BASE_IMAGE}"}}}}
            execution_configs: {{docker: {{type: docker, base_image: base}}}}
            code_envs: {{plain: {{}}}}
            managed_folders: {{out: {{path: out}}}}
            projects: {{bench: {{root: project}}}}
            """
        )
    )
    (config_dir / "project" / "recipes" / "work.py").write_text(RECIPE.replace("PAYLOAD", str(PAYLOAD_BYTES)))
    values = {"tasks": tasks, "parallelism": parallelism, "payload": PAYLOAD_BYTES, "image": BASE_IMAGE}
    (dags / "bench_dss.py").write_text(DSS_DAG.format(**values))
    (dags / "bench_plain.py").write_text(PLAIN_DAG.format(**values, plain_out=str(plain_out)))
    return config_dir, dags


def seconds(start: Any, end: Any) -> float:
    def parse(value: Any) -> datetime:
        return value if isinstance(value, datetime) else datetime.fromisoformat(str(value))

    return (parse(end) - parse(start)).total_seconds()


def to_container(log: str) -> float | None:
    """Seconds from "Filling up the DagBag" to "Starting docker container" in a task's JSON log."""
    stamps: dict[str, float] = {}
    for line in log.splitlines():
        if not line.startswith("{"):
            continue
        record = json.loads(line)
        event = str(record.get("event", ""))
        for key, prefix in (("parse", "Filling up the DagBag"), ("container", "Starting docker container")):
            if event.startswith(prefix) and key not in stamps:
                stamps[key] = datetime.fromisoformat(record["timestamp"].replace("Z", "+00:00")).timestamp()
    return stamps["container"] - stamps["parse"] if len(stamps) == 2 else None


def run_once(cluster: AirflowCluster, dag_id: str) -> dict[str, float]:
    run_id = cluster.trigger(dag_id)
    state = cluster.wait_run(dag_id, run_id, timeout=1800)
    if state != "success":
        raise RuntimeError(f"{dag_id} run {run_id} ended {state}\n{cluster.tails()}")
    [(queued, end)] = cluster.query(
        "SELECT queued_at, end_date FROM dag_run WHERE dag_id = :d AND run_id = :r", d=dag_id, r=run_id
    )
    rows = cluster.query(
        "SELECT task_id, queued_dttm, start_date, end_date FROM task_instance"
        " WHERE dag_id = :d AND run_id = :r",
        d=dag_id,
        r=run_id,
    )
    before_docker = [to_container(cluster.task_log(dag_id, run_id, task_id)) for task_id, *_ in rows]
    return {
        "trigger_to_end": seconds(queued, end),
        "task_duration": statistics.median(seconds(start, stop) for _, _, start, stop in rows),
        "task_wait": statistics.median(seconds(q, start) for _, q, start, _ in rows),
        "parse_to_container": statistics.median(v for v in before_docker if v is not None),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--tasks", type=int, default=50)
    parser.add_argument("--parallelism", type=int, default=8)
    parser.add_argument("--keep", action="store_true", help="keep the work directory (logs)")
    args = parser.parse_args()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # a stopped benchmark still stops Airflow

    # What scripts/bootstrap.sh does: tasks must not pay for compiling edited modules in every process.
    compileall.compile_dir(ROOT / "dss_airflow", quiet=1)
    work = Path(tempfile.mkdtemp(prefix="dss-bench-dag-"))
    config_dir, dags = write_setup(work, args.tasks, args.parallelism)
    cluster = AirflowCluster.create(
        work / "airflow",
        dags_folder=dags,
        api_port=API_PORT,
        extra_env={
            "DSS_AIRFLOW_CONFIG": str(config_dir),
            "DSS_AIRFLOW_STATE": str(work / "state"),
            "DSS_AIRFLOW_CACHE": str(work / "cache"),
            "AIRFLOW__CORE__PARALLELISM": str(args.parallelism),
            "AIRFLOW__CORE__MAX_ACTIVE_TASKS_PER_DAG": str(args.parallelism),
        },
    )
    samples: dict[str, list[dict[str, float]]] = {"bench_dss": [], "bench_plain": []}
    try:
        cluster.airflow("db", "migrate")
        cluster.start_core()
        cluster.wait_parsed(list(samples))
        for dag_id in samples:  # warm-up: images in the page cache, first processes compiled
            run_once(cluster, dag_id)
        for round_number in range(args.rounds):
            for dag_id in samples:
                figures = run_once(cluster, dag_id)
                samples[dag_id].append(figures)
                print(
                    f"round {round_number + 1} {dag_id:12s} trigger->end {figures['trigger_to_end']:6.1f} s"
                    f"  task median {figures['task_duration']:5.2f} s  wait {figures['task_wait']:5.2f} s"
                    f"  parse->container {figures['parse_to_container']:5.2f} s",
                    flush=True,
                )
    finally:
        cluster.stop()
        if not args.keep:
            import shutil

            shutil.rmtree(work, ignore_errors=True)
        else:
            print(f"kept {work}")

    def median(dag_id: str, key: str) -> float:
        return statistics.median(sample[key] for sample in samples[dag_id])

    load = os.getloadavg()[0]
    print(f"\n{args.tasks} tasks, parallelism {args.parallelism}, {os.cpu_count()} cores, load {load:.2f}")
    for key, label in (
        ("trigger_to_end", "trigger->end"),
        ("task_duration", "task duration"),
        ("task_wait", "task wait"),
        ("parse_to_container", "parse->docker"),
    ):
        ours, plain = median("bench_dss", key), median("bench_plain", key)
        ratio = f"{ours / plain:.2f}x" if plain else "n/a"
        print(f"{label:14s} DSS {ours:6.2f} s  DockerOperator {plain:6.2f} s  ratio {ratio}")
    print("goal: trigger->end <= 1.10x")


if __name__ == "__main__":
    main()
