"""Benchmark: loading a large config directory (5 MB, tens of thousands of managed folders).

    .venv/bin/python benchmarks/bench_config_load.py [--folders 46000] [--runs 5]

Sides, interleaved, medians: ``load_catalog`` (parse with line numbers, validate every entry, check
references) cold (no cached parse: the first process after a change) and warm (the parses cached on disk
by content: every later process, e.g. the DAG processor's), against the floor of a plain parse of the
same files with PyYAML's C loader and nothing else. A process pays ``load_catalog`` once (then the catalog
is cached in memory by the directory's fingerprint); Airflow's DAG import timeout is 30 s. Goal: a 5 MB
config loads in <= 1 s.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def write_config(directory: Path, folders: int) -> int:
    """A realistic large config: the example's sections plus ``folders`` managed folders in 4 files."""
    (directory / "base.yaml").write_text(
        (REPO / "examples" / "config" / "dss.yaml")
        .read_text(encoding="utf-8")
        .replace("../demo_project", str(REPO / "examples" / "demo_project")),  # root and allowed_roots
        encoding="utf-8",
    )
    per_file = folders // 4
    for part in range(4):
        lines = ["managed_folders:"]
        for index in range(part * per_file, (part + 1) * per_file):
            lines += [
                f"  folder-{index:06d}:",
                f"    path: zone-{index % 97}/team-{index % 13}/folder-{index:06d}",
                f"    pvc: dss-data-{index % 5}",
                f"    sub_path: zone-{index % 97}/folder-{index:06d}",
            ]
        (directory / f"folders-{part}.yaml").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return sum(path.stat().st_size for path in directory.glob("*.yaml"))


def timed(action: object) -> float:
    started = time.perf_counter()
    action()  # type: ignore[operator]
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--folders", type=int, default=46_000)
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="dss-bench-config-") as scratch:
        directory, cache = Path(scratch) / "config", Path(scratch) / "cache"
        directory.mkdir()
        os.environ["DSS_AIRFLOW_CACHE"] = str(cache)
        from dss_airflow.config.loader import load_catalog

        size = write_config(directory, args.folders)
        files = sorted(directory.glob("*.yaml"))

        def floor() -> None:
            for path in files:
                yaml.load(path.read_text(encoding="utf-8"), Loader=yaml.CSafeLoader)  # noqa: S506

        def ours() -> None:
            catalog = load_catalog(directory)
            assert len(catalog.managed_folders) >= args.folders

        def cold() -> None:
            shutil.rmtree(cache, ignore_errors=True)
            ours()

        samples: dict[str, list[float]] = {"floor": [], "cold": [], "warm": []}
        for _ in range(args.runs):
            samples["floor"].append(timed(floor))
            samples["cold"].append(timed(cold))
            samples["warm"].append(timed(ours))
    floor_s, cold_s, warm_s = (statistics.median(samples[key]) for key in ("floor", "cold", "warm"))
    print(f"config: {size / 1e6:.1f} MB in {len(files)} files, {args.folders} managed folders")
    print(f"PyYAML C loader alone (the floor): {floor_s:.2f} s (median of {args.runs})")
    print(f"load_catalog, cold:                {cold_s:.2f} s  ({cold_s / floor_s:.2f}x the floor)")
    print(
        f"load_catalog, warm:                {warm_s:.2f} s  ({warm_s / floor_s:.2f}x the floor; goal <= 1 s)"
    )


if __name__ == "__main__":
    main()
