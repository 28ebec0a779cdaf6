"""The runner (a real subprocess): context from DSS_CONTEXT_JSON with "-", in-pod promotion, and the
result as the last line of stdout when asked (how a Spark driver's result reaches the worker)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from dss_airflow.spec import HOST_RUNTIME_DIR

RUNNER = HOST_RUNTIME_DIR / "runner.py"

RECIPE_OK = """
import dss_recipe
out = dss_recipe.output_dir("clean")
(out / "sub").mkdir()
(out / "a.csv").write_text("a")
(out / "sub" / "b.csv").write_text("b")
(dss_recipe.output_dir("summary") / "s.txt").write_text(str(dss_recipe.params()["n"]))
dss_recipe.set_result({"rows": 2})
"""

RECIPE_FAIL = """
import dss_recipe
(dss_recipe.output_dir("clean") / "partial.csv").write_text("half")
raise ValueError("boom")
"""


def make_context(tmp_path: Path, recipe: str) -> tuple[dict, Path, Path]:
    (tmp_path / "recipe.py").write_text(recipe)
    folder = tmp_path / "out-root" / "curated"
    staging = folder / ".dss-staging" / "t-1-abcd"
    (folder / "orders").mkdir(parents=True)
    (folder / "orders" / "old.csv").write_text("old")
    (tmp_path / "xcom").mkdir()
    context = {
        "recipe": str(tmp_path / "recipe.py"),
        "recipe_name": "recipe.py",
        "language": "python",
        "inputs": {},
        "outputs": {"clean": str(staging / "clean"), "summary": str(staging / "summary")},
        "params": {"n": 7},
        "python_path": [],
        "workdir": str(tmp_path / "run" / "cwd"),
        "result_file": str(tmp_path / "xcom" / "return.json"),
        "promote": [
            [str(staging / "clean"), str(folder / "orders")],
            [str(staging / "summary"), str(folder)],
        ],
    }
    return context, folder, staging


def run_runner(context: dict) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "DSS_CONTEXT_JSON": json.dumps(context)}
    return subprocess.run(
        [sys.executable, str(RUNNER), "-"], env=env, capture_output=True, text=True, check=False, timeout=60
    )


def test_context_from_env_and_success_promotes(tmp_path):
    context, folder, staging = make_context(tmp_path, RECIPE_OK)
    completed = run_runner(context)
    assert completed.returncode == 0, completed.stderr
    result = json.loads(Path(context["result_file"]).read_text())
    assert result["status"] == "success"
    assert result["result"] == {"rows": 2}, "user_result.json next to return.json"
    assert result["outputs"] == {"clean": ["a.csv", "sub/b.csv"], "summary": ["s.txt"]}
    assert (folder / "orders" / "a.csv").read_text() == "a"
    assert (folder / "orders" / "sub" / "b.csv").read_text() == "b"
    assert (folder / "orders" / "old.csv").read_text() == "old", "other files stay"
    assert (folder / "s.txt").read_text() == "7"
    assert not staging.exists() and not (folder / ".dss-staging").exists(), "staging removed"
    assert not (tmp_path / "xcom" / "user_result.json").exists()
    assert json.loads((tmp_path / "run" / "context.json").read_text()) == context, "file for dss_recipe"


def test_failure_promotes_nothing_and_removes_staging(tmp_path):
    context, folder, staging = make_context(tmp_path, RECIPE_FAIL)
    completed = run_runner(context)
    assert completed.returncode == 1
    result = json.loads(Path(context["result_file"]).read_text())
    assert result["status"] == "failed" and "ValueError: boom" in result["error"]
    assert sorted(p.name for p in (folder / "orders").iterdir()) == ["old.csv"], "destination untouched"
    assert not (folder / "partial.csv").exists()
    assert not (folder / ".dss-staging").exists(), "staging removed after a failure too"


def test_dash_without_env_is_a_clear_error(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "DSS_CONTEXT_JSON"}
    completed = subprocess.run(
        [sys.executable, str(RUNNER), "-"], env=env, capture_output=True, text=True, check=False, timeout=60
    )
    assert completed.returncode != 0
    assert "DSS_CONTEXT_JSON" in completed.stderr


def test_file_mode_is_unchanged_and_does_not_promote(tmp_path):
    context, folder, staging = make_context(tmp_path, RECIPE_OK)
    del context["promote"]
    for path in context["outputs"].values():
        Path(path).mkdir(parents=True)
    context_file = tmp_path / "context.json"
    context_file.write_text(json.dumps(context))
    completed = subprocess.run(
        [sys.executable, str(RUNNER), str(context_file)],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    assert completed.returncode == 0, completed.stderr
    assert (staging / "clean" / "a.csv").exists(), "without 'promote' the worker promotes, not the runner"
    assert not (folder / "orders" / "a.csv").exists()


RESULT_LINE = "[dss-airflow] result-json: "


def test_print_result_ends_stdout_with_the_result_as_one_compact_json_line(tmp_path):
    context, _folder, _staging = make_context(tmp_path, RECIPE_OK)
    completed = run_runner(dict(context, print_result=True))
    assert completed.returncode == 0, completed.stderr
    last = completed.stdout.splitlines()[-1]
    assert last.startswith(RESULT_LINE) and " " not in last[len(RESULT_LINE) :], "compact"
    printed = json.loads(last[len(RESULT_LINE) :])
    assert printed == json.loads(Path(context["result_file"]).read_text()), "the result file, as written"
    assert printed["status"] == "success" and printed["result"] == {"rows": 2}


def test_print_result_reports_a_failure_too(tmp_path):
    context, _folder, _staging = make_context(tmp_path, RECIPE_FAIL)
    completed = run_runner(dict(context, print_result=True))
    assert completed.returncode == 1
    last = completed.stdout.splitlines()[-1]
    assert last.startswith(RESULT_LINE)
    printed = json.loads(last[len(RESULT_LINE) :])
    assert printed["status"] == "failed" and "ValueError: boom" in printed["error"]


def test_no_result_line_unless_asked(tmp_path):
    context, _folder, _staging = make_context(tmp_path, RECIPE_OK)
    completed = run_runner(context)
    assert completed.returncode == 0, completed.stderr
    assert RESULT_LINE not in completed.stdout
