"""`dss-airflow config validate/show`: the admin's check before deploying a config change."""

from __future__ import annotations

from dss_airflow.cli import main
from tests.helpers import BASE_CONFIG, EXAMPLE_CONFIG, write_config


def test_validate_reports_every_problem_and_fails(tmp_path, capsys):
    write_config(
        tmp_path,
        {
            "a.yaml": BASE_CONFIG,
            "b.yaml": "code_envs:\n  x:\n    pyhton: '3.11'\n  y:\n    packages: ['-e .']\n",
        },
    )
    assert main(["config", "validate", "--config-dir", str(tmp_path)]) == 1
    err = capsys.readouterr().err
    assert "2 problem(s)" in err
    assert "b.yaml:3: code_envs.x.pyhton: unknown key 'pyhton'" in err and "Did you mean 'python'?" in err
    assert "code_envs.y.packages.0" in err and "is a pip option" in err


def test_validate_and_show_a_good_config(capsys):
    assert main(["config", "validate", "--config-dir", str(EXAMPLE_CONFIG)]) == 0
    out = capsys.readouterr().out
    assert "valid (4 execution configs, 5 code envs" in out and "2 models" in out
    assert main(["config", "show", "--config-dir", str(EXAMPLE_CONFIG)]) == 0
    out = capsys.readouterr().out
    assert "docker-small (docker)  [" in out and "dss.yaml:" in out


def test_a_config_dir_that_does_not_exist_is_an_error_not_the_default(tmp_path, capsys):
    (tmp_path / "config").mkdir()
    assert main(["config", "validate", "--config-dir", str(tmp_path / "confg")]) == 1
    err = capsys.readouterr().err
    assert "config_dir: config directory not found" in err and "Did you mean 'config'?" in err
    assert main(["images", "plan", "--config-dir", str(tmp_path / "confg")]) == 1


def test_validate_prints_warnings(tmp_path, capsys):
    write_config(tmp_path, {"a.yaml": BASE_CONFIG, "b.yaml": ""})
    assert main(["config", "validate", "--config-dir", str(tmp_path)]) == 0
    assert "warning: " in capsys.readouterr().err


CONNECTIONS_CONFIG = """
    base_images:
      base: {image: dss-airflow-base:bookworm-py311}
    execution_configs:
      docker-reg:
        type: docker
        base_image: base
        registry:
          url: registry.example.internal:5000
          connection_id: dss_registry
      k8s:
        type: kubernetes
        base_image: base
        kubernetes_conn_id: cluster_a
    clusters:
      far: {kubernetes_conn_id: cluster_far}
"""


def test_the_config_names_its_airflow_connections_where_they_are_written(tmp_path):
    from dss_airflow.config.loader import load_catalog

    write_config(tmp_path, {"c.yaml": CONNECTIONS_CONFIG})
    file = str(tmp_path / "c.yaml")
    assert sorted(load_catalog(tmp_path).named_connections()) == [
        ("cluster_a", "execution_configs.k8s.kubernetes_conn_id", (file, 14)),
        ("cluster_far", "clusters.far.kubernetes_conn_id", (file, 16)),
        ("dss_registry", "execution_configs.docker-reg.registry.connection_id", (file, 10)),
    ]


def test_check_connections_passes_when_airflow_has_them_all(tmp_path, monkeypatch, capsys):
    """Real Airflow lookup (the environment-variable backend answers first: no metadata DB needed)."""
    write_config(tmp_path, {"c.yaml": CONNECTIONS_CONFIG})
    monkeypatch.setenv(
        "AIRFLOW_CONN_DSS_REGISTRY", '{"conn_type": "docker", "host": "registry.example.internal"}'
    )
    monkeypatch.setenv("AIRFLOW_CONN_CLUSTER_A", '{"conn_type": "kubernetes"}')
    monkeypatch.setenv("AIRFLOW_CONN_CLUSTER_FAR", '{"conn_type": "http"}')
    assert main(["config", "validate", "--config-dir", str(tmp_path), "--check-connections"]) == 0
    captured = capsys.readouterr()
    assert "connections: 3 named, 0 missing" in captured.out
    assert (
        "clusters.far.kubernetes_conn_id: connection 'cluster_far' is of type 'http', not 'kubernetes'"
        in (captured.err)
    )
