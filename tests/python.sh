#!/usr/bin/env bash
# The Python half of the README's test command (`cargo test &&
# tests/python.sh`): the package built from this checkout into a virtual
# environment, then its pytest suite.
#
# The package is built with the test profile (`--profile dev`), so it reuses
# the library `cargo test` just compiled; `pip install .` (what users run)
# builds the release one. Set CONVPOOL_VENV to reuse another environment.
set -euo pipefail
cd "$(dirname "$0")/.."

venv=$(realpath -m "${CONVPOOL_VENV:-target/python-venv}")
if [ ! -x "$venv/bin/python" ]; then
  python3 -m venv "$venv"
fi
"$venv/bin/python" -m pip install -q --upgrade pip
"$venv/bin/python" -m pip install -q --config-settings=build-args="--profile dev" ".[test]"
"$venv/bin/python" -m pytest -q -p no:cacheprovider python/tests
