#!/usr/bin/env bash
# Set up the environment (see scripts/setup_env.sh), then run the test suite.
# Extra arguments go to pytest, e.g. ./run_tests.sh -k vectors, or -m slow for the slow tests.
set -euo pipefail
cd "$(dirname "$0")"
source scripts/setup_env.sh
exec python -m pytest "$@"
