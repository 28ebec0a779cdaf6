"""``dss-airflow usage``: what recent runs of DSS tasks used, per (DAG, task, execution config), with advice.

Read back from the tasks' own XComs through Airflow's models, as Airflow's REST API reads them (no store
of ours): a successful try's ``return_value`` holds ``resources``; a failed try (out of memory, say)
recorded it under the XCom key ``resources``. (A custom XCom backend that keeps values elsewhere leaves
only references in the database: those runs are not seen.) Runs are grouped by (DAG, task, execution
config) — the task instances of a mapped task together — and summarised by the median and the p95
(nearest rank) of peak memory and CPU seconds; :func:`dss_airflow.usage.advise` is applied to the p95
figures (and to any out-of-memory run) against the config as it is today.
"""

from __future__ import annotations

import json
import math
import re
import statistics
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from dss_airflow.usage import Advice, Limits, Pressure, Usage, advise, seconds_text, size_text

if TYPE_CHECKING:
    from collections.abc import Sequence
    from datetime import datetime

    from dss_airflow.config.catalog import Catalog

_SINCE = re.compile(r"^\s*(\d+)\s*([mhdw])\s*$")
_UNITS = {"m": "minutes", "h": "hours", "d": "days", "w": "weeks"}


def parse_since(text: str) -> timedelta:
    """``30m``, ``12h``, ``7d``, ``2w``."""
    match = _SINCE.match(text)
    if not match or int(match[1]) == 0:
        raise ValueError(f"{text!r} is not a period: write a number and m, h, d or w, e.g. 7d or 12h")
    return timedelta(**{_UNITS[match[2]]: int(match[1])})


@dataclass(frozen=True)
class RecordedRun:
    """One task instance's recorded ``resources`` (see :func:`dss_airflow.usage.usage_record`)."""

    dag_id: str
    task_id: str
    run_id: str
    map_index: int
    record: Mapping[str, Any]


def recorded_resources(key: str, value: object) -> Mapping[str, Any] | None:
    """The ``resources`` record in an XCom value of a DSS task, None in anything else."""
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except ValueError:
            return None
    if key == "return_value" and isinstance(value, Mapping):
        value = value.get("resources")
    if isinstance(value, Mapping) and "peak_memory_bytes" in value and "execution_config" in value:
        return value
    return None


def read_recorded_runs(dag_id: str | None, since: datetime) -> list[RecordedRun]:
    """The recorded runs since ``since`` (of one DAG), from Airflow's metadata database."""
    from airflow.models.xcom import XComModel
    from airflow.utils.session import create_session
    from sqlalchemy import select

    columns = (XComModel.dag_id, XComModel.task_id, XComModel.run_id, XComModel.map_index)
    query = select(*columns, XComModel.key, XComModel.value).where(
        XComModel.key.in_(("return_value", "resources")), XComModel.timestamp >= since
    )
    if dag_id is not None:
        query = query.where(XComModel.dag_id == dag_id)
    with create_session() as session:
        rows = session.execute(query.order_by(XComModel.timestamp)).all()
    runs = []
    for dag, task, run_id, map_index, key, value in rows:
        record = recorded_resources(key, value)
        if record is not None:
            runs.append(RecordedRun(dag, task, run_id, map_index, record))
    return runs


def percentile(values: Sequence[float], fraction: float) -> float:
    """Nearest rank: the smallest value with at least ``fraction`` of the values at or below it."""
    ordered = sorted(values)
    return ordered[max(0, math.ceil(fraction * len(ordered)) - 1)]


@dataclass(frozen=True)
class UsageSummary:
    """Recent runs of one task on one execution config."""

    dag_id: str
    task_id: str
    execution_config: str
    runs: int
    out_of_memory: int
    peak_median: float
    peak_p95: float
    limits: Limits
    cpu_median: float | None
    cpu_p95: float | None
    throttled_p95: float | None
    advice: Advice | None


def _figures(records: Sequence[Mapping[str, Any]], key: str) -> list[float]:
    return [float(r[key]) for r in records if isinstance(r.get(key), int | float)]


def summarise(runs: Sequence[RecordedRun], catalog: Catalog) -> list[UsageSummary]:
    """One summary per (DAG, task, execution config), sorted, with the advice for its p95."""
    groups: dict[tuple[str, str, str], list[Mapping[str, Any]]] = {}
    for run in runs:
        groups.setdefault((run.dag_id, run.task_id, str(run.record["execution_config"])), []).append(
            run.record
        )
    summaries = []
    for (dag_id, task_id, config), records in sorted(groups.items()):
        latest = records[-1]
        recorded_limits = latest.get("limits") or {}
        limits = Limits(recorded_limits.get("memory_bytes"), recorded_limits.get("cpus"))
        peaks, cpu = _figures(records, "peak_memory_bytes"), _figures(records, "cpu_s")
        # Each run's shares of its wall time, as one run's advice computes them.
        pressures = [usage.pressure() for usage in map(Usage.from_reading, records) if usage is not None]
        throttled = [p.throttled_share for p in pressures if p.throttled_share is not None]
        busy = [p.cpu_busy for p in pressures if p.cpu_busy is not None]
        out_of_memory = sum(bool(r.get("out_of_memory")) for r in records)
        pressure = Pressure(
            int(percentile(peaks, 0.95)),
            throttled_share=percentile(throttled, 0.95) if throttled else None,
            cpu_busy=percentile(busy, 0.95) if busy else None,
            out_of_memory=out_of_memory > 0,
        )
        advice = None
        if latest.get("backend") != "spark":
            advice = advise(
                catalog,
                project=str(latest.get("project")),
                config_name=config,
                code_env=latest.get("code_env"),
                limits=limits,
                pressure=pressure,
            )
        summaries.append(
            UsageSummary(
                dag_id,
                task_id,
                config,
                runs=len(records),
                out_of_memory=out_of_memory,
                peak_median=statistics.median(peaks),
                peak_p95=percentile(peaks, 0.95),
                limits=limits,
                cpu_median=statistics.median(cpu) if cpu else None,
                cpu_p95=percentile(cpu, 0.95) if cpu else None,
                throttled_p95=pressure.throttled_share,
                advice=advice,
            )
        )
    return summaries


HEADERS = (
    "DAG",
    "TASK",
    "EXECUTION CONFIG",
    "RUNS",
    "PEAK MEMORY p50 / p95",
    "LIMIT",
    "CPU-s p50 / p95",
    "THROTTLED p95",
    "ADVICE",
)


def table_row(summary: UsageSummary) -> tuple[str, ...]:
    """One summary as the cells of :data:`HEADERS` (the CLI's table and the admin page's)."""
    runs = str(summary.runs) + (f" ({summary.out_of_memory} out of memory)" if summary.out_of_memory else "")
    cpu = "-"
    if summary.cpu_median is not None and summary.cpu_p95 is not None:
        cpu = f"{seconds_text(summary.cpu_median)} / {seconds_text(summary.cpu_p95)}"
    throttled = "-" if summary.throttled_p95 is None else f"{summary.throttled_p95 * 100:.0f} %"
    advice = "-"
    if summary.advice is not None:
        advice = f"{summary.advice.level}: {summary.advice.text}"
    return (
        summary.dag_id,
        summary.task_id,
        summary.execution_config,
        runs,
        f"{size_text(summary.peak_median)} / {size_text(summary.peak_p95)}",
        summary.limits.describe(),
        cpu,
        throttled,
        advice,
    )


def usage_table(summaries: Sequence[UsageSummary]) -> str:
    """A plain-text table, one line per summary; the advice last, uncut."""
    rows = [HEADERS, *(table_row(summary) for summary in summaries)]
    widths = [max(len(row[column]) for row in rows) for column in range(len(HEADERS) - 1)]
    lines = [
        "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=False)) + "  " + row[-1]
        for row in rows
    ]
    return "\n".join(line.rstrip() for line in lines)
