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
