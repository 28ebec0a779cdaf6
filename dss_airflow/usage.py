"""What a run used against what its execution config allows, and which config would fit it better.

Pure. The runner measures (``runtime/meter.py``: the container's cgroup, or getrusage locally); this
module turns its figures and the config's limits into

* the task log's line: "used 412 MiB of 512 MiB (80 %), 3.1 CPU-s over 4.0 s wall, throttled 0.4 s";
* the ``resources`` entry of the task's XCom (:func:`usage_record`), which ``dss-airflow usage`` reads
  back through Airflow;
* advice (:func:`advise`). Above 90 % of the memory limit (or out of memory), or throttled more than
  25 % of the wall time: a warning naming the *next larger* config — same type, the project may use it
  (``allowed_groups``), the code env runs on it (``build_for``), no smaller in memory or CPUs, larger in
  what ran short; the smallest such. Below 10 % of the memory limit of a *large* config — one that has a
  smaller sibling holding twice the peak, with 1.25 times the CPUs the run kept busy, and not throttled —
  a hint naming the smallest such sibling.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from dss_airflow.config.models import DockerExecutionConfig, KubernetesExecutionConfig
from dss_airflow.config.quantities import parse_k8s_quantity
from dss_airflow.config.resolve import check_env_fits_config, usable_execution_configs
from dss_airflow.errors import ConfigError

if TYPE_CHECKING:
    from dss_airflow.config.catalog import Catalog
    from dss_airflow.config.models import ExecutionConfig

MEMORY_WARNING = 0.90
THROTTLED_WARNING = 0.25
MEMORY_HINT = 0.10
#: A smaller config is suggested only when it holds this many times the peak ...
MEMORY_HEADROOM = 2.0
#: ... and this many times the CPUs the run kept busy on average.
CPU_HEADROOM = 1.25


def size_text(size: float) -> str:
    """Bytes for people: '412 MiB', '1.5 GiB'."""
    if size >= 2**30:
        return f"{size / 2**30:.1f}".removesuffix(".0") + " GiB"
    mib = size / 2**20
    return f"{mib:.0f} MiB" if mib >= 10 or mib == 0 else f"{mib:.1f} MiB"


def seconds_text(value: float) -> str:
    return f"{value:.2f}" if 0 < value < 0.1 else f"{value:.1f}"


def cpus_text(cpus: float) -> str:
    return f"{cpus:g} CPU" + ("" if cpus == 1 else "s")


def percent_text(share: float) -> str:
    return f"{share * 100:.0f} %"


@dataclass(frozen=True)
class Limits:
    """Memory (bytes) and CPUs a run may use; None: no limit."""

    memory_bytes: int | None = None
    cpus: float | None = None

    def describe(self) -> str:
        memory = size_text(self.memory_bytes) if self.memory_bytes else "no memory limit"
        return f"{memory}, {cpus_text(self.cpus) if self.cpus else 'no CPU limit'}"

    def size(self) -> tuple[float, float]:
        """For comparing configs: no limit is larger than any."""
        return (self.memory_bytes or math.inf, self.cpus or math.inf)


def config_limits(config: ExecutionConfig) -> Limits:
    """What the config gives a run: Docker ``resources.memory``/``cpus``, Kubernetes ``limits``."""
    if isinstance(config, DockerExecutionConfig):
        return Limits(config.resources.memory, config.resources.cpus)
    if isinstance(config, KubernetesExecutionConfig):
        limits = config.resources.limits
        memory, cpu = limits.get("memory"), limits.get("cpu")
        return Limits(
            int(parse_k8s_quantity(memory)) if memory else None,
            float(parse_k8s_quantity(cpu)) if cpu else None,
        )
    return Limits()


@dataclass(frozen=True)
class Pressure:
    """What runs asked of their config: one run's figures, or the p95 of several."""

    peak_memory_bytes: int
    #: Throttled time over wall time.
    throttled_share: float | None = None
    #: CPUs kept busy on average (CPU seconds over wall seconds).
    cpu_busy: float | None = None
    out_of_memory: bool = False


def _number(reading: Mapping[str, Any], key: str) -> float | None:
    value = reading.get(key)
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


@dataclass(frozen=True)
class Usage:
    """The runner's figures (its result's ``resources``), or its last snapshot before a kill."""

    peak_memory_bytes: int
    measured_by: str
    wall_s: float | None = None
    cpu_s: float | None = None
    throttled_s: float | None = None
    #: The limits the engine enforced (the container's cgroup), beside what the config says.
    memory_limit_bytes: int | None = None
    cpu_limit: float | None = None
    oom_kills: int | None = None
    snapshot: bool = False

    @classmethod
    def from_reading(cls, reading: object) -> Usage | None:
        """None for anything else than a reading (an older runtime wrote none)."""
        if not isinstance(reading, Mapping):
            return None
        peak = _number(reading, "peak_memory_bytes")
        if peak is None:
            return None
        limit, kills = _number(reading, "memory_limit_bytes"), _number(reading, "oom_kills")
        return cls(
            peak_memory_bytes=int(peak),
            measured_by=str(reading.get("measured_by", "")),
            wall_s=_number(reading, "wall_s"),
            cpu_s=_number(reading, "cpu_s"),
            throttled_s=_number(reading, "throttled_s"),
            memory_limit_bytes=int(limit) if limit else None,
            cpu_limit=_number(reading, "cpu_limit"),
            oom_kills=int(kills) if kills is not None else None,
            snapshot=bool(reading.get("snapshot")),
        )

    def limits(self, configured: Limits) -> Limits:
        """The config's limits, else those the engine enforced (e.g. a namespace's LimitRange)."""
        return Limits(configured.memory_bytes or self.memory_limit_bytes, configured.cpus or self.cpu_limit)

    def pressure(self, out_of_memory: bool = False) -> Pressure:
        wall = self.wall_s if self.wall_s else None
        return Pressure(
            self.peak_memory_bytes,
            throttled_share=self.throttled_s / wall if wall and self.throttled_s is not None else None,
            cpu_busy=self.cpu_s / wall if wall and self.cpu_s is not None else None,
            out_of_memory=out_of_memory,
        )


def usage_line(usage: Usage, limits: Limits) -> str:
    """ "used 412 MiB of 512 MiB (80 %), 3.1 CPU-s over 4.0 s wall, throttled 0.4 s"."""
    memory = f"used {size_text(usage.peak_memory_bytes)}"
    if limits.memory_bytes:
        share = usage.peak_memory_bytes / limits.memory_bytes
        memory += f" of {size_text(limits.memory_bytes)} ({percent_text(share)})"
    parts = [memory]
    if usage.cpu_s is not None and usage.wall_s is not None:
        parts.append(f"{seconds_text(usage.cpu_s)} CPU-s over {seconds_text(usage.wall_s)} s wall")
    if usage.throttled_s is not None and limits.cpus:
        parts.append(f"throttled {seconds_text(usage.throttled_s)} s")
    if usage.oom_kills:
        parts.append(f"{usage.oom_kills} process(es) killed by the OOM killer")
    return ", ".join(parts)


def out_of_memory_text(limit: str, config_name: str, setting: str, larger: str | None, seen: str = "") -> str:
    """The sentence of a run killed for its memory limit, as every backend says it: the limit, what was
    seen before the kill (``seen``: "; ..."), the setting to raise and the next larger permitted config."""
    instead = f"use execution config {larger!r}" if larger else "use a larger config"
    return (
        f"the recipe ran out of memory (limit {limit} of execution config {config_name!r}{seen}): raise "
        f"{setting} or {instead}"
    )


def last_reading_text(usage: Usage) -> str:
    """How a snapshot reads in an out-of-memory message."""
    after = f" after {seconds_text(usage.wall_s)} s" if usage.wall_s is not None else ""
    return f"the last reading before the kill: {size_text(usage.peak_memory_bytes)}{after}"


@dataclass(frozen=True)
class Advice:
    """A warning (the config is too small) or a hint (a smaller one would do), and the config named."""

    level: Literal["warning", "hint"]
    text: str
    config: str | None = None


def _siblings(catalog: Catalog, project: str, config_name: str, code_env: str | None) -> dict[str, Limits]:
    """The other configs of the same type that the project may use and the code env runs on."""
    kind = catalog.execution_configs[config_name].type
    found = {}
    for name in usable_execution_configs(catalog, project):
        config = catalog.execution_configs[name]
        if name == config_name or config.type != kind:
            continue
        if code_env is not None and code_env in catalog.code_envs:
            try:
                check_env_fits_config(catalog, code_env, name)
            except ConfigError:
                continue
        found[name] = config_limits(config)
    return found


def _smallest(siblings: Mapping[str, Limits], fits: Callable[[tuple[float, float]], bool]) -> str | None:
    fitting = sorted((limits.size(), name) for name, limits in siblings.items() if fits(limits.size()))
    return fitting[0][1] if fitting else None


def larger_config(
    catalog: Catalog,
    *,
    project: str,
    config_name: str,
    code_env: str | None,
    memory: bool = True,
    cpus: bool = False,
) -> str | None:
    """The smallest permitted sibling no smaller than ``config_name``'s limits in anything and larger in
    memory and/or CPUs; None when there is none."""
    if config_name not in catalog.execution_configs or project not in catalog.projects:
        return None
    current_memory, current_cpus = config_limits(catalog.execution_configs[config_name]).size()

    def larger(size: tuple[float, float]) -> bool:
        more_memory, more_cpus = size[0] > current_memory, size[1] > current_cpus
        no_less = size[0] >= current_memory and size[1] >= current_cpus
        return no_less and (more_memory or not memory) and (more_cpus or not cpus)

    return _smallest(_siblings(catalog, project, config_name, code_env), larger)


def smaller_config(
    catalog: Catalog, *, project: str, config_name: str, code_env: str | None, pressure: Pressure
) -> str | None:
    """The smallest permitted sibling, no larger in anything, that holds MEMORY_HEADROOM times the peak
    and CPU_HEADROOM times the busy CPUs."""
    current_memory, current_cpus = config_limits(catalog.execution_configs[config_name]).size()
    memory_needed = MEMORY_HEADROOM * pressure.peak_memory_bytes
    cpus_needed = CPU_HEADROOM * (pressure.cpu_busy or 0)

    def holds(size: tuple[float, float]) -> bool:
        return memory_needed <= size[0] < current_memory and cpus_needed <= size[1] <= current_cpus

    return _smallest(_siblings(catalog, project, config_name, code_env), holds)


def advise(
    catalog: Catalog,
    *,
    project: str,
    config_name: str,
    code_env: str | None,
    limits: Limits,
    pressure: Pressure,
) -> Advice | None:
    """A warning naming a larger config, a hint naming a smaller one, or None (see the module)."""
    if config_name not in catalog.execution_configs or project not in catalog.projects:
        return None  # renamed or removed since the runs were recorded
    peak, limit = pressure.peak_memory_bytes, limits.memory_bytes
    memory_share = peak / limit if limit else None
    short_of_memory = pressure.out_of_memory or (memory_share or 0) > MEMORY_WARNING
    share = pressure.throttled_share
    throttled = bool(limits.cpus) and share is not None and share > THROTTLED_WARNING
    if short_of_memory or throttled:
        reasons = []
        if pressure.out_of_memory:
            reasons.append(f"ran out of memory at its limit of {size_text(limit or peak)}")
        elif short_of_memory and limit:
            reasons.append(
                f"used {percent_text(peak / limit)} of its memory limit ({size_text(peak)} of "
                f"{size_text(limit)})"
            )
        if throttled and share is not None and limits.cpus:
            reasons.append(
                f"was throttled {percent_text(share)} of its wall time at {cpus_text(limits.cpus)}"
            )
        larger = larger_config(
            catalog,
            project=project,
            config_name=config_name,
            code_env=code_env,
            memory=short_of_memory,
            cpus=throttled,
        )
        if larger is None:
            kind = catalog.execution_configs[config_name].type
            fix = (
                f"no larger {kind} execution config is available to project {project!r}: raise the "
                f"limits of {config_name!r}"
            )
        else:
            described = config_limits(catalog.execution_configs[larger]).describe()
            fix = (
                f"use execution config {larger!r} ({described}), the next larger one project {project!r} "
                "may use"
            )
        return Advice("warning", f"{' and '.join(reasons)}: {fix}", larger)
    if memory_share is not None and memory_share < MEMORY_HINT:
        smaller = smaller_config(
            catalog, project=project, config_name=config_name, code_env=code_env, pressure=pressure
        )
        if smaller is not None:
            described = config_limits(catalog.execution_configs[smaller]).describe()
            return Advice(
                "hint",
                f"used only {percent_text(memory_share)} of its memory limit ({size_text(peak)} of "
                f"{size_text(limit or 0)}): execution config {smaller!r} ({described}) would hold twice "
                "this peak",
                smaller,
            )
    return None


def usage_record(
    usage: Usage,
    limits: Limits,
    *,
    execution_config: str,
    backend: str,
    project: str,
    code_env: str,
    advice: Advice | None,
    out_of_memory: bool = False,
) -> dict[str, Any]:
    """The ``resources`` entry of the task's XCom: the figures, the limits they are measured against,
    what the config and project were (so the record stands alone) and the advice."""
    pressure = usage.pressure(out_of_memory)
    return {
        "execution_config": execution_config,
        "backend": backend,
        "project": project,
        "code_env": code_env,
        "limits": {"memory_bytes": limits.memory_bytes, "cpus": limits.cpus},
        "peak_memory_bytes": usage.peak_memory_bytes,
        "memory_used_pct": (
            round(100 * usage.peak_memory_bytes / limits.memory_bytes, 1) if limits.memory_bytes else None
        ),
        "cpu_s": usage.cpu_s,
        "wall_s": usage.wall_s,
        "throttled_s": usage.throttled_s,
        "throttled_pct": (
            round(100 * pressure.throttled_share, 1) if pressure.throttled_share is not None else None
        ),
        "oom_kills": usage.oom_kills,
        "out_of_memory": out_of_memory,
        "measured_by": usage.measured_by,
        "summary": usage_line(usage, limits),
        "advice": advice.text if advice else None,
        "advice_level": advice.level if advice else None,
        "suggested_config": advice.config if advice else None,
    }


def pod_metrics_memory(body: object, container: str) -> int | None:
    """A container's memory in a ``metrics.k8s.io/v1beta1`` PodMetrics: the working set the kubelet saw
    at its last scrape (every 15 s or so), in bytes; None when it is not there."""
    if not isinstance(body, Mapping):
        return None
    for entry in body.get("containers") or []:
        if isinstance(entry, Mapping) and entry.get("name") == container:
            usage = entry.get("usage")
            memory = usage.get("memory") if isinstance(usage, Mapping) else None
            try:
                return int(parse_k8s_quantity(str(memory)))
            except ValueError:
                return None
    return None
