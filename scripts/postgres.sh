#!/usr/bin/env bash
# Run the local PostgreSQL for alloop (127.0.0.1, no system service; holds the `mlflow` and
# `labelstudio` databases).
#   scripts/postgres.sh start [--port 5433]    create the cluster if needed, start it, print its settings
#   scripts/postgres.sh stop | status | env
# The same as `alloop postgres ...`, after setting up the project venv if it is missing.
# Files in .alloop/postgres, settings in .alloop/postgres.json ($ALLOOP_STATE_DIR overrides);
# then `export ALLOOP_DB=postgres` puts Label Studio and the demo's MLflow on it.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ $# -eq 0 ]; then
  echo "usage: scripts/postgres.sh start|stop|status|env [options]" >&2
  exit 2
fi
[ -x .venv/bin/alloop ] || scripts/setup.sh
exec .venv/bin/alloop postgres "$@"
