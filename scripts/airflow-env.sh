# Sourced by the scripts: an isolated Airflow home (SQLite) inside the repo, pointed at dags/ and the
# example config. Nothing here touches ~/airflow.
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
export AIRFLOW_HOME="${AIRFLOW_HOME:-$ROOT/.run/airflow}"
export AIRFLOW__CORE__DAGS_FOLDER="$ROOT/dags"
export AIRFLOW__CORE__LOAD_EXAMPLES=False
export AIRFLOW__CORE__UNIT_TEST_MODE="${AIRFLOW__CORE__UNIT_TEST_MODE:-False}"
export DSS_AIRFLOW_CONFIG="${DSS_AIRFLOW_CONFIG:-$ROOT/examples/config}"
export DSS_AIRFLOW_DATA_DIR="${DSS_AIRFLOW_DATA_DIR:-$ROOT/.run/data}"
export DSS_AIRFLOW_CACHE="${DSS_AIRFLOW_CACHE:-$ROOT/.cache/dss-airflow}"
export DSS_AIRFLOW_STATE="${DSS_AIRFLOW_STATE:-$ROOT/.run/state}"
export PATH="$ROOT/.venv/bin:$PATH"
