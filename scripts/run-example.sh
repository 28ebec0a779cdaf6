#!/usr/bin/env bash
# The main job: run the example pipeline dags/dss_example_recipes.py end to end through real Airflow
# (`airflow dags test`), on the embedded local default, or on another execution config:
#   scripts/run-example.sh                 # local virtualenv, no container engine needed
#   scripts/run-example.sh docker-small    # both recipes in Docker containers (starts dockerd if needed)
#   DAG=dss_model_retraining scripts/run-example.sh   # another example DAG of dags/ (same config argument)
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
CONFIG="${1:-inherit}"
DAG="${DAG:-dss_example_recipes}"
"$ROOT/scripts/bootstrap.sh"
# shellcheck source=scripts/airflow-env.sh
source "$ROOT/scripts/airflow-env.sh"
if [ "$CONFIG" != "inherit" ] && [ "$CONFIG" != "local" ]; then
  "$ROOT/scripts/ensure-base-image.sh" >/dev/null
fi
mkdir -p "$AIRFLOW_HOME"
airflow db migrate >"$AIRFLOW_HOME/db-migrate.log" 2>&1 || { tail -20 "$AIRFLOW_HOME/db-migrate.log"; exit 1; }
airflow dags test "$DAG" -c "{\"execution_config\": \"$CONFIG\"}"
echo
echo "Outputs (managed folders under $DSS_AIRFLOW_DATA_DIR):"
find "$DSS_AIRFLOW_DATA_DIR" -type f -newer "$AIRFLOW_HOME/db-migrate.log" | sort | sed 's/^/  /'
if [ "$DAG" = dss_example_recipes ]; then
  echo "Summary: $(cat "$DSS_AIRFLOW_DATA_DIR/curated/summary.json")"
fi
