"""Benchmark: a model training task in a container vs the same training in-process.

Run by hand (needs a Docker engine and the base image: scripts/ensure-base-image.sh; builds the ``ml``
code-env image once when it is not current):

    .venv/bin/python benchmarks/bench_model_train.py [--runs 7]

Same data (scikit-learn's bundled breast-cancer set), same definition (the example ``breast-cancer``
model), same engine code (``dss_airflow/runtime/model/``). Sides, interleaved, medians of one run:

* in-process: ``model.train()`` called in this process (libraries already imported);
* fresh process: ``python -c "train(...)"`` -- interpreter start and imports, no container;
* DSSTrainModelOperator on the built-in local config (code env virtualenv, a subprocess);
* DSSTrainModelOperator on a Docker config (the code env's image).

Prints the ratios to the in-process training: the container overhead is docker / in-process, and
docker / fresh process isolates what the container itself adds to any out-of-process run.
"""

from __future__ import annotations

import argparse
import json
import shutil
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

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
MODEL = "breast-cancer"


def write_config(root: Path) -> Path:
    """The example config's ml env and model, plus a docker config, on a private data directory."""
    example = REPO / "examples" / "config"
    (root / "config").mkdir(parents=True)
    text = (example / "ml.yaml").read_text().replace("[docker-small, k8s-small]", "[docker-small]")
    (root / "config" / "ml.yaml").write_text(text)
    (root / "config" / "bench.yaml").write_text(
        textwrap.dedent(
            """
            defaults: {project: bench, data_dir: ../data}
            base_images: {debian-py311: {image: "dss-airflow-base:bookworm-py311"}}
            execution_configs:
              docker-small: {type: docker, base_image: debian-py311, resources: {memory: 1g, cpus: 2}}
            projects: {bench: {root: ../project}}
            """
        )
    )
    (root / "project").mkdir()
    return root / "config"


def write_data(root: Path) -> Path:
    from sklearn.datasets import load_breast_cancer

    frame = load_breast_cancer(as_frame=True).frame
    frame["diagnosis"] = frame.pop("target").map({1: "benign", 0: "malignant"})
    frame.insert(0, "patient_id", [f"P{index:04d}" for index in range(len(frame))])
    frame.insert(1, "clinic", ["north", "south", "east"] * (len(frame) // 3) + ["north"] * (len(frame) % 3))
    path = root / "data" / "ml_data" / "train.csv"
    path.parent.mkdir(parents=True)
    frame.to_csv(path, index=False)
    return path


def timed(action: Any) -> float:
    start = time.perf_counter()
    action()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=7)
    args = parser.parse_args()

    from airflow.sdk.bases.operator import ExecutorSafeguard

    from dss_airflow.config.loader import load_catalog
    from dss_airflow.images.service import ImageService
    from dss_airflow.operators.model import DSSTrainModelOperator

    ExecutorSafeguard.test_mode = True  # operators are executed directly here, as in Airflow's own tests
    root = Path(tempfile.mkdtemp(prefix="dss-bench-model-"))
    config_dir = write_config(root)
    data = write_data(root)
    catalog = load_catalog(config_dir)
    report = ImageService(catalog).build(envs=["ml"], configs=["docker-small"])
    if not report.ok:
        raise SystemExit(f"cannot build the ml image: {report}")
    definition = catalog.models[MODEL].for_runtime()

    from dss_airflow.runtime.model.train import train

    def in_process() -> None:
        scratch = Path(tempfile.mkdtemp(dir=root))
        train(
            definition,
            str(data),
            str(scratch / "model"),
            str(scratch / "versions"),
            str(scratch / "pointer"),
            promotion="never",
            model_id=MODEL,
        )

    fresh_code = (
        f"import sys, json, tempfile; sys.path.insert(0, {str(REPO)!r}); "
        "from dss_airflow.runtime.model.train import train; "
        f"d = tempfile.mkdtemp(dir={str(root)!r}); "
        f"train(json.loads({json.dumps(json.dumps(definition))}), {str(data)!r}, d + '/m', "
        f"d + '/v', d + '/p', promotion='never', model_id={MODEL!r})"
    )

    def fresh_process() -> None:
        subprocess.run([sys.executable, "-c", fresh_code], check=True, capture_output=True)

    operators = {
        name: DSSTrainModelOperator(
            task_id=f"train_{name.replace('-', '_')}",
            model=MODEL,
            data="ml_data/train.csv",
            promotion="never",
            execution_config=name,
            config_dir=str(config_dir),
        )
        for name in ("local", "docker-small")
    }
    ti = SimpleNamespace(dag_id="bench", task_id="train", run_id="r", map_index=-1, try_number=1)
    context: Any = {"ti": ti}
    sides: dict[str, Callable[[], object]] = {
        "in-process": in_process,
        "fresh process": fresh_process,
        "operator, local venv": lambda: operators["local"].execute(context),
        "operator, docker": lambda: operators["docker-small"].execute(context),
    }
    for action in sides.values():  # warm-up: imports, the local venv, the image cache
        action()
    samples: dict[str, list[float]] = {name: [] for name in sides}
    for run in range(args.runs):
        ti.run_id = f"r{run}"
        for name, action in sides.items():
            samples[name].append(timed(action))
    medians = {name: statistics.median(values) for name, values in samples.items()}
    base = medians["in-process"]
    print(f"training {MODEL} (random forest, 569 rows), median of {args.runs} interleaved runs:")
    for name, seconds in medians.items():
        print(f"  {name:<22} {seconds:6.2f} s  {seconds / base:5.2f}x in-process")
    print(f"container overhead: docker / in-process = {medians['operator, docker'] / base:.2f}x; ")
    print(
        f"docker / fresh process = {medians['operator, docker'] / medians['fresh process']:.2f}x "
        "(what the container adds beyond starting Python and importing the libraries)"
    )
    shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
