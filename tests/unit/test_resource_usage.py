"""Resource usage as plain data: the meter's cgroup and process readings, the task log's line, the advice
naming another permitted config, the XCom record, the metrics API's PodMetrics, the `usage` summary."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from kubernetes.client import models as k8s

from dss_airflow.backends.docker import exit_cause
from dss_airflow.backends.kubernetes import container_oom_killed
from dss_airflow.config.loader import load_catalog
from dss_airflow.config.models import DockerExecutionConfig, KubernetesExecutionConfig
from dss_airflow.runtime.meter import Cgroup, Meter, cgroup_v1_reading, cgroup_v2_reading, process_tree_rss
from dss_airflow.usage import (
    Limits,
    Pressure,
    Usage,
    advise,
    config_limits,
    pod_metrics_memory,
    usage_line,
    usage_record,
)
from dss_airflow.usage_report import (
    RecordedRun,
    parse_since,
    percentile,
    recorded_resources,
    summarise,
    usage_table,
)
from tests.helpers import write_config

MiB = 2**20

#: Recorded inside a container of this machine's Docker (cgroup v1, cgroupfs driver): `docker run -m 512m
#: --cpus 0.5`, a recipe touching 100 MiB, then spinning one second.
CGROUP_V1 = {
    "memory/memory.max_usage_in_bytes": "108515328\n",
    "memory/memory.limit_in_bytes": "536870912\n",
    "memory/memory.oom_control": "oom_kill_disable 0\nunder_oom 0\noom_kill 0\n",
    "cpuacct/cpuacct.usage": "597225679\n",
    "cpuacct/cpuacct.stat": "user 52\nsystem 7\n",
    "cpu/cpu.stat": "nr_periods 13\nnr_throttled 11\nthrottled_time 475467648\nnr_bursts 0\nburst_time 0\n",
    "cpu/cpu.cfs_quota_us": "50000\n",
    "cpu/cpu.cfs_period_us": "100000\n",
}
#: cgroup v2 files as Linux >= 5.19 writes them (Documentation/admin-guide/cgroup-v2.rst; this machine's
#: Docker runs cgroup v1, so these follow the kernel's documented format), for a 1 GiB, 1.5-CPU limit.
CGROUP_V2 = {
    "memory.peak": "734003200\n",
    "memory.current": "524288000\n",
    "memory.max": "1073741824\n",
    "memory.events": "low 0\nhigh 0\nmax 3\noom 1\noom_kill 1\noom_group_kill 0\n",
    "cpu.max": "150000 100000\n",
    "cpu.stat": (
        "usage_usec 4210000\nuser_usec 3900000\nsystem_usec 310000\ncore_sched.force_idle_usec 0\n"
        "nr_periods 61\nnr_throttled 12\nthrottled_usec 820000\nnr_bursts 0\nburst_usec 0\n"
    ),
}
#: A metrics-server response (GET /apis/metrics.k8s.io/v1beta1/namespaces/dss-jobs/pods/NAME) for a pod
#: with the provider's XCom sidecar, in the shape metrics-server returns (nanocores, KiB).
POD_METRICS = {
    "kind": "PodMetrics",
    "apiVersion": "metrics.k8s.io/v1beta1",
    "metadata": {
        "name": "dss-orders-clean-1a2b3c4d-u1",
        "namespace": "dss-jobs",
        "creationTimestamp": "2026-12-03T10:15:31Z",
        "labels": {"dss_airflow.dag_id": "orders"},
    },
    "timestamp": "2026-12-03T10:15:20Z",
    "window": "15.034s",
    "containers": [
        {"name": "base", "usage": {"cpu": "998123456n", "memory": "868352Ki"}},
        {"name": "airflow-xcom-sidecar", "usage": {"cpu": "0", "memory": "344Ki"}},
    ],
}


# ------------------------------------------------------------------------------------------ the meter
def test_cgroup_v1_files_give_the_peak_cpu_and_throttling():
    reading = cgroup_v1_reading(CGROUP_V1.get, ticks_per_second=100)
    assert reading["measured_by"] == "cgroup v1"
    assert reading["peak_memory_bytes"] == 108515328 and reading["memory_limit_bytes"] == 512 * MiB
    assert reading["cpu_s"] == 0.597 and (reading["cpu_user_s"], reading["cpu_system_s"]) == (0.52, 0.07)
    assert reading["cpu_limit"] == 0.5 and reading["throttled_s"] == 0.475
    assert reading["throttled_periods"] == 11 and reading["oom_kills"] == 0


def test_cgroup_v1_without_limits_reports_none():
    unlimited = {**CGROUP_V1, "memory/memory.limit_in_bytes": "9223372036854771712\n"}
    unlimited["cpu/cpu.cfs_quota_us"] = "-1\n"
    reading = cgroup_v1_reading(unlimited.get)
    assert reading["memory_limit_bytes"] is None and reading["cpu_limit"] is None


def test_cgroup_v2_files_give_the_peak_cpu_and_throttling():
    reading = cgroup_v2_reading(CGROUP_V2.get)
    assert reading["measured_by"] == "cgroup v2"
    assert reading["peak_memory_bytes"] == 700 * MiB and reading["memory_limit_bytes"] == 1024 * MiB
    assert (reading["cpu_s"], reading["cpu_user_s"], reading["cpu_system_s"]) == (4.21, 3.9, 0.31)
    assert reading["cpu_limit"] == 1.5 and reading["throttled_s"] == 0.82 and reading["oom_kills"] == 1


def test_cgroup_v2_before_memory_peak_uses_the_sampled_current_usage():
    old_kernel = {key: value for key, value in CGROUP_V2.items() if key != "memory.peak"}
    old_kernel.update({"memory.max": "max\n", "cpu.max": "max 100000\n"})
    reading = cgroup_v2_reading(old_kernel.get, sampled_peak=600 * MiB)
    assert reading["peak_memory_bytes"] == 600 * MiB, "the sampled peak beats today's current usage"
    assert reading["measured_by"].startswith("cgroup v2 (memory.current sampled")
    assert reading["memory_limit_bytes"] is None and reading["cpu_limit"] is None


def _tree(root, files):
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)


def test_the_containers_own_cgroup_is_found_in_each_layout(tmp_path):
    # cgroup v1: /proc/self/cgroup names the host's path; the container's mounts show it at their root.
    v1 = tmp_path / "v1"
    _tree(v1, CGROUP_V1)
    membership = tmp_path / "v1.cgroup"
    membership.write_text("4:memory:/docker/abc\n2:cpuacct:/docker/abc\n1:cpu:/docker/abc\n0::/docker/abc\n")
    found = Cgroup.find(str(v1), str(membership))
    assert found is not None and found.version == 1 and found.memory_limit() == 512 * MiB
    assert found.reading()["throttled_s"] == 0.475
    # cgroup v2 with a private cgroup namespace ("0::/"), and without one (the path under the root).
    v2 = tmp_path / "v2"
    _tree(v2, {"cgroup.controllers": "cpu memory\n", "memory.max": "max\n"})
    _tree(v2 / "system.slice" / "docker-abc.scope", CGROUP_V2)
    membership.write_text("0::/\n")
    own_namespace = Cgroup.find(str(v2), str(membership))
    assert own_namespace is not None and own_namespace.memory_limit() is None, "the namespace's root"
    membership.write_text("0::/system.slice/docker-abc.scope\n")
    host_namespace = Cgroup.find(str(v2), str(membership))
    assert host_namespace is not None and host_namespace.memory_limit() == 1024 * MiB
    assert Cgroup.find(str(tmp_path / "none"), str(membership)) is None


def test_sampling_keeps_the_peak_and_snapshots_it(tmp_path):
    """cgroup v2 before Linux 5.19: the sampler's peak of memory.current is the run's peak."""
    directory = tmp_path / "cg"
    _tree(directory, {k: v for k, v in CGROUP_V2.items() if k != "memory.peak"})
    snapshot = tmp_path / "usage.json"
    meter = Meter("cgroup", str(snapshot), cgroup=Cgroup(2, {"": str(directory)}))
    for current in (300, 900, 400):
        (directory / "memory.current").write_text(f"{current * MiB}\n")
        meter.sample()
    saved = json.loads(snapshot.read_text())
    assert saved["peak_memory_bytes"] == 900 * MiB and saved["memory_limit_bytes"] == 1024 * MiB
    assert saved["snapshot"] is True
    reading = meter.finish()
    assert reading is not None and reading["peak_memory_bytes"] == 900 * MiB and reading["wall_s"] >= 0


CHILD = """
import sys
held = bytearray(64 * 2**20)
held[::4096] = b"x" * len(held[::4096])  # every page touched: resident
print("ready", flush=True)
sys.stdin.read()
"""


def test_the_process_tree_counts_a_childs_memory():
    child = subprocess.Popen(
        [sys.executable, "-c", CHILD], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    try:
        assert child.stdout is not None and child.stdout.readline().strip() == "ready"
        alone = int(Path(f"/proc/{os.getpid()}/statm").read_text().split()[1]) * os.sysconf("SC_PAGE_SIZE")
        assert process_tree_rss(os.getpid()) >= alone + 64 * MiB
    finally:
        child.communicate("")
    reading = Meter("process").finish()
    assert reading is not None and reading["measured_by"].startswith("getrusage")
    assert reading["peak_memory_bytes"] >= 64 * MiB, "the waited-for child's peak RSS counts"
    assert reading["cpu_s"] > 0 and reading["throttled_s"] is None


# ---------------------------------------------------------------------------------- line and advice
def test_the_log_line_reads_as_the_issue_asks():
    usage = Usage(412 * MiB, "cgroup v1", wall_s=4.0, cpu_s=3.1, throttled_s=0.4)
    line = usage_line(usage, Limits(512 * MiB, 0.5))
    assert line == "used 412 MiB of 512 MiB (80 %), 3.1 CPU-s over 4.0 s wall, throttled 0.4 s"
    local = usage_line(Usage(2 * 2**30, "getrusage", wall_s=0.05, cpu_s=0.04), Limits())
    assert local == "used 2 GiB, 0.04 CPU-s over 0.05 s wall", "no limit: no share, no throttling"


CONFIGS = """
    defaults: {project: demo, code_env: plain}
    base_images: {base: {image: "dss-airflow-base:bookworm-py311"}}
    execution_configs:
      docker-small: {type: docker, base_image: base, resources: {memory: 512m, cpus: 0.5}}
      docker-medium: {type: docker, base_image: base, resources: {memory: 1g, cpus: 1}, allowed_groups: [ml]}
      docker-large: {type: docker, base_image: base, resources: {memory: 2g, cpus: 2}}
      docker-huge: {type: docker, base_image: base, resources: {memory: 8g, cpus: 4}}
      docker-fat-slow: {type: docker, base_image: base, resources: {memory: 16g, cpus: 0.25}}
      docker-gpu-only: {type: docker, base_image: base, resources: {memory: 4g, cpus: 2}}
      k8s: {type: kubernetes, base_image: base, resources: {limits: {memory: 1Gi, cpu: 500m}}}
    code_envs:
      plain: {build_for: [docker-small, docker-medium, docker-large, docker-huge, docker-fat-slow, k8s]}
    projects:
      demo: {root: project, groups: [analysts]}
      ml: {root: project, groups: [ml]}
"""


@pytest.fixture
def catalog(tmp_path):
    write_config(tmp_path, {"c.yaml": CONFIGS})
    (tmp_path / "project").mkdir()
    return load_catalog(tmp_path)


def _advise(catalog, config, pressure, project="demo"):
    limits = config_limits(catalog.execution_configs[config])
    return advise(
        catalog, project=project, config_name=config, code_env="plain", limits=limits, pressure=pressure
    )


def test_near_the_memory_limit_the_next_larger_permitted_config_is_named(catalog):
    advice = _advise(catalog, "docker-small", Pressure(490 * MiB))
    assert advice is not None and advice.level == "warning" and advice.config == "docker-large"
    assert advice.text == (
        "used 96 % of its memory limit (490 MiB of 512 MiB): use execution config 'docker-large' "
        "(2 GiB, 2 CPUs), the next larger one project 'demo' may use"
    ), "docker-medium is restricted to group ml; docker-gpu-only is not built for the env; k8s is no docker"
    in_ml = _advise(catalog, "docker-small", Pressure(490 * MiB), project="ml")
    assert in_ml is not None and in_ml.config == "docker-medium", "the ml project may use it"


def test_throttling_asks_for_more_cpus_without_less_memory(catalog):
    advice = _advise(catalog, "docker-large", Pressure(100 * MiB, throttled_share=0.4, cpu_busy=1.9))
    assert advice is not None and advice.config == "docker-huge", "docker-fat-slow has fewer CPUs"
    assert advice.text.startswith("was throttled 40 % of its wall time at 2 CPUs: use execution config")
    both = _advise(catalog, "docker-small", Pressure(500 * MiB, throttled_share=0.5), project="ml")
    assert both is not None and both.text.startswith(
        "used 98 % of its memory limit (500 MiB of 512 MiB) and "
    )


def test_nothing_larger_says_so(catalog):
    advice = _advise(catalog, "k8s", Pressure(1000 * MiB, out_of_memory=True))
    assert advice is not None and advice.config is None
    assert advice.text == (
        "ran out of memory at its limit of 1 GiB: no larger kubernetes execution config is available to "
        "project 'demo': raise the limits of 'k8s'"
    )


def test_a_large_config_used_lightly_gets_a_hint_naming_a_smaller_one(catalog):
    advice = _advise(catalog, "docker-huge", Pressure(200 * MiB, cpu_busy=0.3))
    assert advice is not None and advice.level == "hint" and advice.config == "docker-small"
    assert advice.text == (
        "used only 2 % of its memory limit (200 MiB of 8 GiB): execution config 'docker-small' "
        "(512 MiB, 0.5 CPUs) would hold twice this peak"
    )
    busy = _advise(catalog, "docker-huge", Pressure(200 * MiB, cpu_busy=1.5))
    assert busy is not None and busy.config == "docker-large", "0.5 CPU would throttle a run busy on 1.5"
    assert _advise(catalog, "docker-small", Pressure(40 * MiB)) is None, "nothing smaller exists"
    assert _advise(catalog, "docker-large", Pressure(1 * 2**30)) is None, "50 %: nothing to say"


def test_the_xcom_record_stands_alone_and_is_json(catalog):
    usage = Usage.from_reading(cgroup_v1_reading(CGROUP_V1.get))
    assert usage is not None
    limits = usage.limits(config_limits(catalog.execution_configs["docker-small"]))
    advice = _advise(catalog, "docker-small", usage.pressure())
    record = usage_record(
        usage, limits, execution_config="docker-small", backend="docker", project="demo", code_env="plain",
        advice=advice,
    )  # fmt: skip
    assert json.loads(json.dumps(record)) == record
    assert record["limits"] == {"memory_bytes": 512 * MiB, "cpus": 0.5}
    assert record["memory_used_pct"] == 20.2 and record["throttled_pct"] is None, "no wall time recorded"
    assert record["summary"] == "used 103 MiB of 512 MiB (20 %), throttled 0.5 s", "no wall time: no CPU-s"
    assert record["advice"] is None and record["out_of_memory"] is False
    assert Usage.from_reading({"status": "success"}) is None and Usage.from_reading(None) is None


def test_kubernetes_limits_and_metrics_are_read_as_quantities():
    config = KubernetesExecutionConfig(
        type="kubernetes", base_image="b", resources={"limits": {"memory": "1536Mi", "cpu": "250m"}}
    )
    assert config_limits(config) == Limits(1536 * MiB, 0.25)
    assert pod_metrics_memory(POD_METRICS, "base") == 868352 * 1024
    assert pod_metrics_memory(POD_METRICS, "missing") is None and pod_metrics_memory("404", "base") is None


def _pod(reason):
    terminated = k8s.V1ContainerStateTerminated(exit_code=137, reason=reason)
    status = k8s.V1ContainerStatus(
        name="base", image="i", image_id="", ready=False, restart_count=0,
        state=k8s.V1ContainerState(terminated=terminated),
    )  # fmt: skip
    return k8s.V1Pod(status=k8s.V1PodStatus(phase="Failed", container_statuses=[status]))


def test_an_oom_killed_pod_is_recognised():
    assert container_oom_killed(_pod("OOMKilled"))
    assert not container_oom_killed(_pod("Error")) and not container_oom_killed(None)


def test_the_docker_oom_message_names_the_peak_seen_and_a_larger_config():
    config = DockerExecutionConfig(type="docker", base_image="b", resources={"memory": "256m"})
    seen = Usage.from_reading({"peak_memory_bytes": 250 * MiB, "wall_s": 1.3, "snapshot": True})
    cause = exit_cause({"OOMKilled": True}, False, config, "docker-tiny", seen=seen, larger="docker-small")
    assert cause == (
        "the recipe ran out of memory (limit 256m of execution config 'docker-tiny'; the last reading "
        "before the kill: 250 MiB after 1.3 s): raise resources.memory or use execution config 'docker-small'"
    )


# ---------------------------------------------------------------------------------------- the summary
def test_periods_and_percentiles():
    assert parse_since("7d").days == 7 and parse_since("12h").seconds == 12 * 3600
    with pytest.raises(ValueError, match="e.g. 7d or 12h"):
        parse_since("a week")
    assert percentile([5, 1, 3, 2, 4], 0.95) == 5 and percentile([1, 2], 0.5) == 1
    assert percentile(list(range(1, 101)), 0.95) == 95


def test_records_are_found_in_dss_xcoms_only():
    record = {"execution_config": "docker-small", "peak_memory_bytes": 1}
    assert recorded_resources("return_value", {"status": "success", "resources": record}) == record
    assert recorded_resources("resources", json.dumps(record)) == record, "a failed try's own key"
    assert recorded_resources("return_value", {"rows": 3}) is None
    assert recorded_resources("return_value", "s3://bucket/xcom/ref") is None


def _run(task, peak_mib, cpu, wall, *, throttled=None, oom=False, config="docker-small"):
    limits = {"memory_bytes": 512 * MiB, "cpus": 0.5}
    record = {
        "execution_config": config, "backend": "docker", "project": "demo", "code_env": "plain",
        "limits": limits, "peak_memory_bytes": peak_mib * MiB, "cpu_s": cpu, "wall_s": wall,
        "throttled_s": throttled, "out_of_memory": oom,
    }  # fmt: skip
    return RecordedRun("orders", task, "r", -1, record)


def test_the_summary_gives_median_p95_and_advice_per_task_and_config(catalog):
    runs = [_run("clean", peak, 1.0, 4.0, throttled=0.1) for peak in (100, 120, 110)]
    runs += [_run("train", 300, 2.0, 4.0, throttled=2.0), _run("train", 500, None, None, oom=True)]
    (clean, train) = summarise(runs, catalog)
    assert (clean.task_id, clean.runs, clean.peak_median, clean.peak_p95) == (
        "clean",
        3,
        110 * MiB,
        120 * MiB,
    )
    assert (clean.cpu_median, clean.throttled_p95, clean.advice) == (1.0, 0.025, None)
    assert (train.runs, train.out_of_memory) == (2, 1)
    assert train.advice is not None and train.advice.config == "docker-large"
    assert train.advice.text.startswith("ran out of memory at its limit of 512 MiB and was throttled 50 %")
    table = usage_table([clean, train]).splitlines()
    assert table[0].split() == [
        "DAG", "TASK", "EXECUTION", "CONFIG", "RUNS", "PEAK", "MEMORY", "p50", "/", "p95", "LIMIT",
        "CPU-s", "p50", "/", "p95", "THROTTLED", "p95", "ADVICE",
    ]  # fmt: skip
    assert table[1].split()[:8] == ["orders", "clean", "docker-small", "3", "110", "MiB", "/", "120"]
    assert "2 (1 out of memory)" in table[2] and "warning: ran out of memory" in table[2]
    assert table[1].endswith("  -"), "no advice"


def test_runs_of_a_removed_config_are_summarised_without_advice(catalog):
    (summary,) = summarise([_run("clean", 500, 1.0, 2.0, config="docker-gone")], catalog)
    assert summary.advice is None and summary.runs == 1
    assert summary.limits == Limits(512 * MiB, 0.5), "the limits the runs were recorded with"
