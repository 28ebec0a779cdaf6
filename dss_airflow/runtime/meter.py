"""What a run used, from the engine's own accounting: peak memory, CPU seconds, wall time, throttling.

Standard library only, any Python >= 3.8: it runs inside the code env, started by the runner.

* **In a container or pod** (``source="cgroup"``): the container's own cgroup, the accounting Docker's
  stats API and the kubelet read too. cgroup v1: ``memory.max_usage_in_bytes`` (the kernel's exact peak),
  ``memory.limit_in_bytes``, ``cpuacct.usage``/``cpuacct.stat``, ``cpu.stat`` (throttling); cgroup v2:
  ``memory.peak`` (Linux >= 5.19; before that ``memory.current``, sampled), ``memory.max``, ``cpu.stat``.
  It covers every process of the container (an R child, a multiprocessing pool), and costs a few file
  reads at the end of the run.
* **Locally** (``source="process"``) the worker's cgroup is shared with everything else it runs, so:
  ``getrusage`` of the runner and its waited-for children (CPU seconds exact; ``ru_maxrss`` is the peak
  RSS of the *largest single process*), and the RSS of the runner's whole process tree, sampled while it
  runs; the peak reported is the larger of the two. Local runs have no CPU limit: nothing is throttled.

A daemon thread samples memory every 0.25 s (0.05 s above 80 % of the limit) and, when the peak grew,
writes a snapshot atomically to ``snapshot_file``: a recipe killed for memory leaves the worker the last
peak seen before the kill.
"""

import json
import os
import sys
import threading
import time
from typing import Any, Callable, Dict, Optional, Set

CGROUP_ROOT = "/sys/fs/cgroup"
SAMPLE_S = 0.25
NEAR_LIMIT_SAMPLE_S = 0.05
NEAR_LIMIT = 0.8
#: A snapshot is rewritten when the peak grew by this much (or after SNAPSHOT_EVERY_S).
SNAPSHOT_STEP = 1 << 20
SNAPSHOT_EVERY_S = 5.0
#: cgroup v1 says "no limit" with a page-rounded 2**63 - 1.
UNLIMITED = 1 << 62

#: Reads a file of the cgroup by its relative name; None when it does not exist or cannot be read.
Reader = Callable[[str], Optional[str]]


def parse_int(text: Optional[str]) -> Optional[int]:
    try:
        return int((text or "").strip())
    except ValueError:
        return None


def parse_keyed(text: Optional[str]) -> Dict[str, int]:
    """``key value`` lines (cpu.stat, cpuacct.stat, memory.events, memory.oom_control)."""
    values = {}
    for line in (text or "").splitlines():
        key, _, value = line.strip().partition(" ")
        number = parse_int(value)
        if key and number is not None:
            values[key] = number
    return values


def parse_memory_limit(text: Optional[str]) -> Optional[int]:
    """``memory.max`` ("max") or ``memory.limit_in_bytes`` (a huge number) as None when unlimited."""
    value = parse_int(text)
    return value if value is not None and value < UNLIMITED else None


def parse_cpu_max(text: Optional[str]) -> Optional[float]:
    """cgroup v2 ``cpu.max`` ("50000 100000" = 0.5 CPU; "max 100000" = no limit)."""
    quota, _, period = (text or "").strip().partition(" ")
    quota_us, period_us = parse_int(quota), parse_int(period)
    return quota_us / period_us if quota_us and period_us else None


def _seconds(value: Optional[int], per_second: float) -> Optional[float]:
    return None if value is None else round(value / per_second, 3)


def cgroup_v2_reading(read: Reader, sampled_peak: int = 0) -> Dict[str, Any]:
    """The run's figures from cgroup v2 files (``read("memory.peak")``...)."""
    peak = parse_int(read("memory.peak"))
    measured_by = "cgroup v2"
    if peak is None:  # Linux < 5.19: only the current usage exists, sampled while the run went on
        peak = max(sampled_peak, parse_int(read("memory.current")) or 0)
        measured_by = "cgroup v2 (memory.current sampled: no memory.peak before Linux 5.19)"
    cpu = parse_keyed(read("cpu.stat"))
    return {
        "measured_by": measured_by,
        "peak_memory_bytes": peak,
        "memory_limit_bytes": parse_memory_limit(read("memory.max")),
        "cpu_s": _seconds(cpu.get("usage_usec"), 1e6),
        "cpu_user_s": _seconds(cpu.get("user_usec"), 1e6),
        "cpu_system_s": _seconds(cpu.get("system_usec"), 1e6),
        "cpu_limit": parse_cpu_max(read("cpu.max")),
        "throttled_s": _seconds(cpu.get("throttled_usec"), 1e6),
        "throttled_periods": cpu.get("nr_throttled"),
        "oom_kills": parse_keyed(read("memory.events")).get("oom_kill"),
    }


def cgroup_v1_reading(read: Reader, ticks_per_second: float = 100.0) -> Dict[str, Any]:
    """The run's figures from cgroup v1 files, one directory per controller (``read("memory/...")``)."""
    ticks = parse_keyed(read("cpuacct/cpuacct.stat"))  # USER_HZ ticks
    throttling = parse_keyed(read("cpu/cpu.stat"))
    quota, period = parse_int(read("cpu/cpu.cfs_quota_us")), parse_int(read("cpu/cpu.cfs_period_us"))
    return {
        "measured_by": "cgroup v1",
        "peak_memory_bytes": parse_int(read("memory/memory.max_usage_in_bytes")) or 0,
        "memory_limit_bytes": parse_memory_limit(read("memory/memory.limit_in_bytes")),
        "cpu_s": _seconds(parse_int(read("cpuacct/cpuacct.usage")), 1e9),
        "cpu_user_s": _seconds(ticks.get("user"), ticks_per_second),
        "cpu_system_s": _seconds(ticks.get("system"), ticks_per_second),
        "cpu_limit": quota / period if quota and quota > 0 and period else None,
        "throttled_s": _seconds(throttling.get("throttled_time"), 1e9),
        "throttled_periods": throttling.get("nr_throttled"),
        "oom_kills": parse_keyed(read("memory/memory.oom_control")).get("oom_kill"),
    }


def _read_file(path: str) -> Optional[str]:
    try:
        with open(path, encoding="ascii") as handle:
            return handle.read()
    except (OSError, UnicodeDecodeError):
        return None


class Cgroup:
    """This process's cgroup: ``version`` 2 (one directory) or 1 (one directory per controller)."""

    def __init__(self, version: int, directories: Dict[str, str]) -> None:
        self.version = version
        self.directories = directories  # v2: {"": dir}; v1: {"memory": dir, "cpu": dir, "cpuacct": dir}

    def read(self, name: str) -> Optional[str]:
        controller, _, file = name.rpartition("/")
        directory = self.directories.get(controller)
        return None if directory is None else _read_file(os.path.join(directory, file))

    def memory_now(self) -> Optional[int]:
        """The peak so far (or, without memory.peak, the current usage): what the sampler watches."""
        if self.version == 1:
            return parse_int(self.read("memory/memory.max_usage_in_bytes"))
        peak = parse_int(self.read("memory.peak"))
        return peak if peak is not None else parse_int(self.read("memory.current"))

    def memory_limit(self) -> Optional[int]:
        name = "memory/memory.limit_in_bytes" if self.version == 1 else "memory.max"
        return parse_memory_limit(self.read(name))

    def reading(self, sampled_peak: int = 0) -> Dict[str, Any]:
        if self.version == 1:
            return cgroup_v1_reading(self.read, float(os.sysconf("SC_CLK_TCK")))
        return cgroup_v2_reading(self.read, sampled_peak)

    @classmethod
    def find(cls, root: str = CGROUP_ROOT, membership: str = "/proc/self/cgroup") -> Optional["Cgroup"]:
        """The cgroup of this process as mounted in its container: ``/proc/self/cgroup`` names it; a
        container with its own cgroup namespace, or cgroup v1's per-container mounts, shows it at the
        mount's root instead."""
        paths = {}
        for line in (_read_file(membership) or "").splitlines():
            _, controllers, path = line.split(":", 2) if line.count(":") >= 2 else ("", "", "")
            for controller in controllers.split(",") if controllers else [""]:
                paths[controller] = path

        def located(mount: str, controller: str) -> str:
            own = os.path.join(mount, paths.get(controller, "/").lstrip("/"))
            return own if os.path.isdir(own) else mount

        if os.path.isfile(os.path.join(root, "cgroup.controllers")):
            return cls(2, {"": located(root, "")})
        if os.path.isdir(os.path.join(root, "memory")):
            names = ("memory", "cpu", "cpuacct")
            return cls(1, {name: located(os.path.join(root, name), name) for name in names})
        return None


def process_tree_rss(pid: int, proc: str = "/proc") -> int:
    """The resident memory of ``pid`` and all its descendants now (shared pages count in each process)."""
    page = os.sysconf("SC_PAGE_SIZE")
    total, pending = 0, [pid]
    seen: Set[int] = set()
    while pending:
        current = pending.pop()
        if current in seen:
            continue
        seen.add(current)
        base = "%s/%d" % (proc, current)
        statm = _read_file(base + "/statm")
        if statm is None:
            continue  # exited meanwhile
        total += int(statm.split()[1]) * page
        try:
            threads = os.listdir(base + "/task")
        except OSError:
            continue
        for thread in threads:  # each thread's children (Linux's /proc/PID/task/TID/children)
            pending.extend(
                int(child) for child in (_read_file("%s/task/%s/children" % (base, thread)) or "").split()
            )
    return total


def rusage_reading(sampled_peak: int = 0) -> Dict[str, Any]:
    """The runner's and its waited-for children's CPU time, and the larger of the largest process's peak
    RSS (exact) and the process tree's RSS (sampled)."""
    import resource  # local runs only: containers read their cgroup

    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    unit = 1 if sys.platform == "darwin" else 1024  # ru_maxrss: bytes on macOS, KiB on Linux
    largest = max(own.ru_maxrss, children.ru_maxrss) * unit
    user, system = own.ru_utime + children.ru_utime, own.ru_stime + children.ru_stime
    return {
        "measured_by": "getrusage (largest process's peak RSS) and the process tree's RSS sampled",
        "peak_memory_bytes": max(largest, sampled_peak),
        "memory_limit_bytes": None,
        "cpu_s": round(user + system, 3),
        "cpu_user_s": round(user, 3),
        "cpu_system_s": round(system, 3),
        "cpu_limit": None,
        "throttled_s": None,
        "throttled_periods": None,
        "oom_kills": None,
    }


def process_age_s() -> float:
    """Seconds since this process started (its interpreter's start-up included), 0 if unknown."""
    stat, uptime = _read_file("/proc/self/stat"), _read_file("/proc/uptime")
    try:
        started_ticks = int(str(stat).rsplit(")", 1)[1].split()[19])  # field 22: starttime
        return max(0.0, float(str(uptime).split()[0]) - started_ticks / os.sysconf("SC_CLK_TCK"))
    except (IndexError, ValueError, OSError):
        return 0.0


class Meter:
    """Measures this run from now (wall time from the process's start) until :meth:`finish`."""

    def __init__(self, source: str, snapshot_file: Optional[str] = None, cgroup: Optional[Cgroup] = None):
        self._started = time.monotonic() - process_age_s()
        self._cgroup = cgroup or (Cgroup.find() if source == "cgroup" else None)
        self._snapshot_file = snapshot_file
        self._limit = self._cgroup.memory_limit() if self._cgroup else None
        self._sampled_peak = 0
        self._written = (0, 0.0)  # (peak, monotonic time) of the last snapshot
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample_until_stopped, name="dss-meter", daemon=True)

    def start(self) -> "Meter":
        self._thread.start()
        return self

    def finish(self) -> Optional[Dict[str, Any]]:
        """Stop sampling; the figures of the whole run (None, with a warning, if they cannot be read)."""
        self._stop.set()
        try:
            self._read_memory()  # the result carries the figures: no last snapshot to write
            return self.reading()
        except Exception as exc:  # noqa: BLE001 - no figures is better than a failed recipe
            print("[dss-airflow] WARNING: resource usage not measured: %s" % exc, flush=True)
            return None

    def reading(self) -> Dict[str, Any]:
        figures = (
            self._cgroup.reading(self._sampled_peak) if self._cgroup else rusage_reading(self._sampled_peak)
        )
        figures["wall_s"] = round(time.monotonic() - self._started, 3)
        return figures

    def sample(self) -> Optional[int]:
        """One reading of memory (the peak so far, or the current usage) and, when the peak grew, a new
        snapshot; what the sampling thread does at each tick."""
        memory = self._read_memory()
        self._write_snapshot()
        return memory

    def _read_memory(self) -> Optional[int]:
        memory = self._cgroup.memory_now() if self._cgroup else process_tree_rss(os.getpid())
        if memory is not None and memory > self._sampled_peak:
            self._sampled_peak = memory
        return memory

    def _sample_until_stopped(self) -> None:
        interval = SAMPLE_S
        while not self._stop.wait(interval):
            try:
                memory = self.sample()
            except Exception:  # noqa: BLE001 - measuring must never disturb the recipe
                return
            near = self._limit is not None and (memory or 0) > NEAR_LIMIT * self._limit
            interval = NEAR_LIMIT_SAMPLE_S if near else SAMPLE_S

    def _write_snapshot(self) -> None:
        """The peak so far, atomically, when it grew (what the worker reads if the run is killed)."""
        peak, now = self._sampled_peak, time.monotonic()
        written_peak, written_at = self._written
        if self._snapshot_file is None or (
            peak < written_peak + SNAPSHOT_STEP and now - written_at < SNAPSHOT_EVERY_S
        ):
            return
        snapshot = {
            "measured_by": ("cgroup v%d" % self._cgroup.version) if self._cgroup else "process tree RSS",
            "peak_memory_bytes": peak,
            "memory_limit_bytes": self._limit,
            "wall_s": round(now - self._started, 3),
            "snapshot": True,
        }
        temporary = "%s.tmp-%d" % (self._snapshot_file, os.getpid())
        with open(temporary, "w", encoding="utf-8") as handle:
            json.dump(snapshot, handle)
        os.replace(temporary, self._snapshot_file)
        self._written = (peak, now)


def start_meter(context: Dict[str, Any]) -> Optional[Meter]:
    """The meter the context asks for (``"meter"``: ``cgroup`` in containers and pods, ``process``
    locally; absent from an older worker's context), started; None if it cannot run here."""
    source = context.get("meter")
    if not source:
        return None
    try:
        return Meter(source, context.get("usage_file")).start()
    except Exception as exc:  # noqa: BLE001 - no figures is better than a failed recipe
        print("[dss-airflow] WARNING: resource usage not measured: %s" % exc, flush=True)
        return None
