#!/usr/bin/env bash
# Run the local Label Studio server for alloop (own venv, 127.0.0.1, offline, local files).
#   scripts/labelstudio.sh start [--port 8080] [--legacy-token] ...   install if needed, start, get a token
#   scripts/labelstudio.sh stop | status | env | install
# The same as `alloop labelstudio ...`, after setting up the project venv if it is missing.
# Settings land in .alloop/labelstudio.json and .alloop/labelstudio.env ($ALLOOP_STATE_DIR overrides);
# load them in a shell with: source .alloop/labelstudio.env
set -euo pipefail
cd "$(dirname "$0")/.."
if [ $# -eq 0 ]; then
  echo "usage: scripts/labelstudio.sh start|stop|status|env|install [options]" >&2
  exit 2
fi
[ -x .venv/bin/alloop ] || scripts/setup.sh   # the project venv runs the manager (it has the SDK)
exec .venv/bin/alloop labelstudio "$@"
