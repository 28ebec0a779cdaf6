"""README's "Your first DAG", followed verbatim: its marked blocks become one bash script (files written
where their marker says, commands run in order) in a fresh HOME, through real Airflow (`airflow db
migrate`, `airflow dags test`) on the local config, then in Docker."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = [pytest.mark.airflow, pytest.mark.docker]

README = Path(__file__).resolve().parents[2] / "README.md"
BLOCK = re.compile(r"<!-- first-dag: (?P<target>[^>]+?) -->\n```\w*\n(?P<body>.*?)```\n", re.DOTALL)


def guide_script(readme: str) -> str:
    """The guide as bash: "run" blocks as they are, file blocks as heredocs to their marked path."""
    section = readme[readme.index("## Your first DAG") : readme.index("## How a task runs")]
    parts = ["set -euo pipefail"]
    for block in BLOCK.finditer(section):
        target, body = block["target"], block["body"]
        if target.startswith("run"):
            parts.append(body)
        else:
            parts.append(
                f'mkdir -p "$(dirname "{target}")"\ncat > "{target}" <<\'GUIDE_EOF\'\n{body}GUIDE_EOF'
            )
    return "\n".join(parts) + "\n"


def test_the_guide_has_every_step_marked():
    script = guide_script(README.read_text())
    for step in ("airflow db migrate", "airflow dags test shop_orders", "dss-airflow images build reporting"):
        assert step in script, f"{step!r} is not in a marked block of the guide"
    assert script.count("cat > ") == 4, "config, two recipes, the DAG"


def test_your_first_dag_runs_as_written(tmp_path, docker_engine):
    home = tmp_path / "home"
    home.mkdir()
    venv_bin = Path(sys.executable).parent
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("DSS_AIRFLOW", "AIRFLOW")) and key != "PYTHONPATH"
    }
    env.update(HOME=str(home), PATH=f"{venv_bin}:{env['PATH']}")
    completed = subprocess.run(
        ["bash", "-c", guide_script(README.read_text())],
        cwd=home,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )
    output = completed.stdout + completed.stderr
    assert completed.returncode == 0, output[-6000:]
    dss_home = home / "dss-first"
    north = (dss_home / "data" / "reports" / "north.txt").read_text()
    assert "12.5" in north and "30" in north and "40" not in north, north
    assert (dss_home / "data" / "reports" / "south.txt").exists(), "the mapped task's second instance"
    assert "4 orders kept; totals by region: {'north': 42.5, 'south': 47.5}" in output, output[-3000:]
    assert ": valid (2 execution configs, 1 code envs" in output, "config validate passed"
    runs = re.findall(r"dss-code-envs:reporting-[0-9a-f]{12}", output)
    assert runs, "the Docker run and `images status` name the env's image"
