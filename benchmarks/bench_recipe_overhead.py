"""Benchmark: DSSContainerRecipeOperator vs a plain DockerOperator, and the import cost of dss_airflow.

Run by hand (needs a Docker engine and the base image: scripts/ensure-base-image.sh):

    .venv/bin/python benchmarks/bench_recipe_overhead.py [--runs 15]

Both operators run the same image and the same Python statement; runs are interleaved and the medians
compared in one process, so machine noise hits both sides alike. Prints ratios (goal: <= 1.10x). A third
arm runs the DSS operator with the resource meter switched off (the runner's context without "meter", as
an older worker's), interleaved with the others: what measuring what a run used costs.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path
from types import SimpleNamespace
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from collections.abc import Callable

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

BASE_IMAGE = "dss-airflow-base:bookworm-py311"
STATEMENT = "print('hello from the container')"


def timed(action: Callable[[], object]) -> float:
    start = time.perf_counter()
    action()
    return time.perf_counter() - start


def import_seconds(before: str, measured: str, runs: int) -> float:
    """Median time of ``measured`` imports, timed inside a fresh interpreter after ``before``."""
    code = f"{before}\nimport time\nt = time.perf_counter()\n{measured}\nprint(time.perf_counter() - t)"
    samples = [
        float(subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True).stdout)
        for _ in range(runs)
    ]
    return statistics.median(samples)


def unmetered(action: Callable[[], object]) -> Callable[[], object]:
    """``action`` with the runner's context built without "meter": nothing measured, nothing reported."""
    from dss_airflow import spec

    def run() -> object:
        build = spec.build_context

        def without_meter(*args: Any, **kwargs: Any) -> dict[str, Any]:
            context = build(*args, **kwargs)
            context.pop("meter", None)
            return context

        spec.build_context = without_meter  # type: ignore[assignment]
        try:
            return action()
        finally:
            spec.build_context = build  # type: ignore[assignment]

    return run


def container_benchmark(runs: int) -> tuple[float, float, float]:
    from airflow.providers.docker.operators.docker import DockerOperator
    from airflow.sdk.bases.operator import ExecutorSafeguard

    from dss_airflow.operators.recipe import DSSContainerRecipeOperator

    ExecutorSafeguard.test_mode = True  # operators are executed directly here, as in Airflow's own tests
    config_dir = Path(tempfile.mkdtemp(prefix="dss-bench-"))
    (config_dir / "c.yaml").write_text(
        textwrap.dedent(
            f"""
            defaults: {{project: bench, code_env: plain, data_dir: data}}
            base_images: {{base: {{image: "{BASE_IMAGE}"}}}}
            execution_configs: {{docker: {{type: docker, base_image: base}}}}
            code_envs: {{plain: {{}}}}
            managed_folders: {{out: {{path: out}}}}
            projects: {{bench: {{root: project}}}}
            """
        )
    )
    (config_dir / "project" / "recipes").mkdir(parents=True)
    (config_dir / "project" / "recipes" / "hello.py").write_text(STATEMENT + "\n")
    ours = DSSContainerRecipeOperator(
        task_id="ours", recipe="recipes/hello.py", execution_config="docker", config_dir=str(config_dir)
    )

    def plain() -> DockerOperator:
        """A fresh operator per run, as each Airflow task run has (ours builds its DockerOperator per run)."""
        return DockerOperator(
            task_id="plain",
            image=BASE_IMAGE,
            command=["python3", "-c", STATEMENT],
            user="1000:1000",
            auto_remove="force",
            mount_tmp_dir=False,
        )

    task_instance = SimpleNamespace(dag_id="bench", task_id="ours", run_id="r", map_index=-1, try_number=1)
    context: Any = {"ti": task_instance}
    ours.execute(context)  # warm-up: image cache, docker client
    plain().execute(context)
    ours_samples, plain_samples, unmetered_samples = [], [], []
    for run in range(runs):
        context["ti"].run_id = f"r{run}"
        ours_samples.append(timed(lambda: ours.execute(context)))
        plain_samples.append(timed(lambda: plain().execute(context)))
        context["ti"].run_id = f"u{run}"
        unmetered_samples.append(timed(unmetered(lambda: ours.execute(context))))
    return (
        statistics.median(ours_samples),
        statistics.median(plain_samples),
        statistics.median(unmetered_samples),
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=15)
    args = parser.parse_args()

    package = import_seconds("pass", "import dss_airflow", args.runs)
    sdk = import_seconds("pass", "import airflow.sdk", args.runs)
    operator = import_seconds(
        "import airflow.sdk", "from dss_airflow import DSSContainerRecipeOperator", args.runs
    )
    print(f"import dss_airflow:                 {package * 1000:.1f} ms")
    print(f"import airflow.sdk:                 {sdk * 1000:.0f} ms (for scale)")
    print(f"then DSSContainerRecipeOperator:    +{operator * 1000:.0f} ms (pydantic, yaml, config layer)")
    ours, plain, bare = container_benchmark(args.runs)
    print(f"DSSContainerRecipeOperator.execute: {ours * 1000:.0f} ms (median of {args.runs})")
    print(f"DockerOperator.execute:             {plain * 1000:.0f} ms")
    print(f"the same DSS task, meter off:       {bare * 1000:.0f} ms")
    print(
        f"ratio: {ours / plain:.2f}x (goal <= 1.10x); metered vs not: {ours / bare:.2f}x (goal: within noise)"
    )


if __name__ == "__main__":
    main()
