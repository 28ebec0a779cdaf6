"""Benchmark: code-env image planning at scale, and a warm rebuild after one package change vs a cold build.

Run by hand (needs a Docker engine, the base image — scripts/ensure-base-image.sh — and network to PyPI):

    .venv/bin/python benchmarks/bench_images.py [--envs 500] [--runs 5]

1. ``plan`` for N code envs x 3 docker execution configs with nothing to do (goal: <= 1 s, zero builds).
   The ledger is seeded with records whose build hashes match the plan's inputs, so no image is built; each
   timed run loads the catalog and plans in a fresh ImageService's planner (cold base-digest cache, new
   Docker client), as `dss-airflow images plan` does.
2. A code env with pandas, built cold (empty uv caches, no image with that hash), then rebuilt after one
   package is added, with the same uv cache (goal: warm <= 0.3x cold).

Everything runs against temporary state, cache and uv directories (DSS_AIRFLOW_STATE, DSS_AIRFLOW_CACHE and
UV_CACHE_DIR are set before any ImageService exists); the images built are removed at the end. The machine
is noisy: figures are printed, not asserted.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
import textwrap
import time
import uuid
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from dss_airflow.images.service import BuildReport, ImageService

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

BASE_IMAGE = "dss-airflow-base:bookworm-py311"
MEMORY_LIMITS = ("256m", "512m", "1g")
#: A handful of pinned lists shared by all envs, so locks resolve only a few times.
PINNED_LISTS = (["six==1.16.0"], ["attrs==25.1.0"], ["six==1.16.0", "attrs==25.1.0"])
#: The realistic env, and the package added for the warm rebuild: one outside pandas' closure, so the lock
#: (hence the image) changes; six is not safe here, older python-dateutil releases depend on it.
COLD_PACKAGES = ["pandas==2.2.3"]
ADDED_PACKAGE = "attrs==25.1.0"
HEADER = """
defaults: {{project: p, data_dir: data}}
base_images:
  base: {{image: "{base}", bootstrap: {{}}}}
execution_configs:
{configs}
projects:
  p: {{root: project}}
code_envs:
"""


def quiet(event: str, subject: str, message: str) -> None:
    """Progress callback that prints nothing."""


class Timeline:
    """A quiet progress callback that keeps when each build event happened, for a breakdown."""

    def __init__(self) -> None:
        self.events: list[tuple[float, str, str]] = []

    def __call__(self, event: str, subject: str, message: str) -> None:
        self.events.append((time.perf_counter(), event, message))

    def first(self, event: str) -> float | None:
        return next((t for t, name, _ in self.events if name == event), None)

    def breakdown(self, start: float, end: float) -> str:
        """resolve (lock + checks) | builder container (venv + install) | commit + smoke test | switch."""
        building, smoke_start, smoke = self.first("building"), self.first("committed"), self.first("smoke")
        logs = [(t, message) for t, name, message in self.events if name == "log"]
        if building is None or smoke_start is None or smoke is None or not logs:
            return "(no breakdown: build events missing)"
        last_log = logs[-1][0]
        uv = "; ".join(
            m.strip() for _, m in logs if m.strip().startswith(("Resolved", "Prepared", "Installed"))
        )
        return (
            f"resolve {building - start:.1f}s | builder {last_log - building:.1f}s"
            f" | commit {smoke_start - last_log:.1f}s | smoke {smoke - smoke_start:.1f}s"
            f" | switch {end - smoke:.1f}s  (uv: {uv or '?'})"
        )


def write_config(directory: Path, configs: dict[str, str], envs: dict[str, list[str]]) -> Path:
    """A config directory: one base image, docker configs (name -> memory limit), code envs, a project."""
    config_lines = "\n".join(
        f"  {name}: {{type: docker, base_image: base, resources: {{memory: {memory}}}}}"
        for name, memory in configs.items()
    )
    env_lines = "".join(
        f"  {name}: {{packages: {json.dumps(packages)}}}\n" for name, packages in envs.items()
    )
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "project").mkdir(exist_ok=True)
    text = textwrap.dedent(HEADER).format(base=BASE_IMAGE, configs=config_lines) + env_lines
    (directory / "c.yaml").write_text(text, encoding="utf-8")
    return directory


def seed_up_to_date(service: ImageService) -> int:
    """Ledger records for every pair, as if each had been built: build hashes computed, nothing built."""
    from dss_airflow.images.identity import image_tag
    from dss_airflow.images.ledger import ImageRecord, PairState, switch_current
    from dss_airflow.images.plan import Target

    by_env: dict[str, list[str]] = {}
    planner = service.planner
    for target in planner.targets():
        by_env.setdefault(target.env, []).append(target.config)
    for env_name, configs in by_env.items():
        with service.ledger.update(env_name) as pairs:
            for config in configs:
                base_digest = planner.base_digest(config)
                if base_digest is None:
                    raise SystemExit(f"{BASE_IMAGE} is missing: run scripts/ensure-base-image.sh")
                target = Target(env_name, config)
                lock = planner.lock_of(target)
                inputs = planner.inputs(target, lock.sha256, base_digest)
                tag = image_tag(env_name, inputs.build_hash())
                record = ImageRecord.built_from(inputs, lock, image=tag, tag=tag)
                switch_current(pairs.setdefault(config, PairState()), record)
    return sum(len(configs) for configs in by_env.values())


def plan_benchmark(root: Path, envs: int, runs: int) -> None:
    from dss_airflow.config.loader import load_catalog
    from dss_airflow.images.service import ImageService

    configs = {f"docker-{memory}": memory for memory in MEMORY_LIMITS}
    env_packages = {f"env-{i:04d}": PINNED_LISTS[i % len(PINNED_LISTS)] for i in range(envs)}
    config_dir = write_config(root / "plan-config", configs, env_packages)
    started = time.perf_counter()
    pairs = seed_up_to_date(ImageService(load_catalog(config_dir), progress=quiet))
    print(
        f"seeded {pairs} up-to-date pairs in {time.perf_counter() - started:.1f}s (locks resolved, no build)"
    )

    totals, plans = [], []
    for _ in range(runs):
        start = time.perf_counter()
        catalog = load_catalog(config_dir)
        loaded = time.perf_counter()
        items = ImageService(catalog, progress=quiet).planner.plan()
        end = time.perf_counter()
        not_up_to_date = [
            f"{item.target}: {item.action} {item.reasons}" for item in items if item.action != "up to date"
        ]
        if len(items) != pairs or not_up_to_date:
            raise RuntimeError(f"plan is wrong: {len(items)} items, not up to date: {not_up_to_date[:5]}")
        totals.append(end - start)
        plans.append(end - loaded)
    total, plan = statistics.median(totals), statistics.median(plans)
    print(
        f"plan, {envs} envs x {len(configs)} configs = {pairs} pairs, all up to date, 0 builds:"
        f" {total:.3f} s (goal <= 1 s; median of {runs}, min {min(totals):.3f} s, max {max(totals):.3f} s)"
    )
    print(f"  of which load_catalog {total - plan:.3f} s, Planner.plan {plan:.3f} s (medians)")


def poke_benchmark(root: Path, envs: int, runs: int) -> None:
    """CodeEnvChangeSensor.poke with nothing changed: the per-poke cost once the catalog is cached."""
    from types import SimpleNamespace

    from airflow.sdk.bases.operator import ExecutorSafeguard

    from dss_airflow.config.loader import load_catalog
    from dss_airflow.images.service import ImageService
    from dss_airflow.sensors.code_env import CodeEnvChangeSensor

    ExecutorSafeguard.test_mode = True
    env_packages = {f"env-{i:04d}": PINNED_LISTS[i % len(PINNED_LISTS)] for i in range(envs)}
    config_dir = write_config(root / "poke-config", {"docker-512m": "512m"}, env_packages)
    pairs = seed_up_to_date(ImageService(load_catalog(config_dir), progress=quiet))
    context: Any = {
        "ti": SimpleNamespace(dag_id="bench", task_id="poke", run_id="r", map_index=-1, try_number=1)
    }
    for check_base in (False, True):
        sensor = CodeEnvChangeSensor(
            task_id="poke", config_dir=str(config_dir), check_base_digests=check_base
        )
        if sensor.poke(context):  # warm-up, and a check that nothing is stale
            raise RuntimeError("the poke found stale pairs in an up-to-date ledger")
        samples = []
        for _ in range(runs):
            start = time.perf_counter()
            sensor.poke(context)
            samples.append(time.perf_counter() - start)
        label = "with base-digest checks" if check_base else "without base-digest checks"
        goal = "" if check_base else " (goal <= 50 ms)"
        print(
            f"poke, {envs} envs ({pairs} pairs), nothing changed, {label}: "
            f"{statistics.median(samples) * 1000:.0f} ms{goal}; median of {runs}"
        )


def remove_env_images(env: str) -> None:
    import docker

    client = docker.from_env()
    for image in client.images.list(filters={"reference": f"dss-code-envs:{env}-*"}):
        for tag in image.tags:
            client.images.remove(tag, force=True)


def timed_build(service: ImageService, env: str, timeline: Timeline, label: str) -> float:
    start = time.perf_counter()
    report: BuildReport = service.build(envs=[env])
    end = time.perf_counter()
    if not report.ok or len(report.built) != 1:
        raise RuntimeError(
            f"{label} build: ok={report.ok} built={report.built} reused={report.reused}"
            f" up_to_date={report.up_to_date} failed={report.failed}"
        )
    print(f"  {label}: {timeline.breakdown(start, end)}")
    return end - start


def rebuild_benchmark(root: Path) -> None:
    import docker

    from dss_airflow.config.loader import load_catalog
    from dss_airflow.images.service import ImageService

    env = f"bench-{uuid.uuid4().hex[:10]}"
    os.environ["DSS_AIRFLOW_CACHE"] = str(root / "rebuild-cache")  # empty uv cache for the builder
    os.environ["UV_CACHE_DIR"] = str(root / "rebuild-uv-host")  # empty uv cache for `uv pip compile`
    config_dir = root / "rebuild-config"
    configs = {"docker-512m": "512m"}
    remove_env_images(env)
    tags: list[str] = []
    try:
        write_config(config_dir, configs, {env: COLD_PACKAGES})
        cold_timeline = Timeline()
        cold_service = ImageService(load_catalog(config_dir), progress=cold_timeline)
        cold = timed_build(cold_service, env, cold_timeline, "cold")
        tags += [s.current.tag for s in cold_service.ledger.read(env).values() if s.current]

        write_config(config_dir, configs, {env: [*COLD_PACKAGES, ADDED_PACKAGE]})
        warm_timeline = Timeline()
        warm_service = ImageService(load_catalog(config_dir), progress=warm_timeline)
        warm = timed_build(warm_service, env, warm_timeline, "warm")
        tags += [s.current.tag for s in warm_service.ledger.read(env).values() if s.current]
        print(f"cold build ({', '.join(COLD_PACKAGES)}, empty caches): {cold:.1f} s")
        print(f"warm rebuild (+{ADDED_PACKAGE}, same uv cache):     {warm:.1f} s")
        print(f"ratio warm/cold: {warm / cold:.2f}x (goal <= 0.3x)")
    finally:
        client = docker.from_env()
        for tag in dict.fromkeys(tags):
            client.images.remove(tag, force=True)
        remove_env_images(env)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--envs", type=int, default=500)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--poke-envs", type=int, default=200)
    args = parser.parse_args()

    root = Path(tempfile.mkdtemp(prefix="dss-bench-images-"))
    os.environ["DSS_AIRFLOW_STATE"] = str(root / "state")
    os.environ["DSS_AIRFLOW_CACHE"] = str(root / "cache")
    os.environ["UV_CACHE_DIR"] = str(root / "uv-host")
    try:
        plan_benchmark(root, args.envs, args.runs)
        poke_benchmark(root, args.poke_envs, max(args.runs, 11))
        rebuild_benchmark(root)
    finally:
        shutil.rmtree(root, ignore_errors=True)  # builder-written cache files are root-owned


if __name__ == "__main__":
    main()
