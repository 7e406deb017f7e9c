#!/usr/bin/env bash
# The whole study, headless: sets up .venv (pinned), then runs the notebooks with papermill.
#   ./run_all.sh                                   phantom study, quick profile, CPU
#   ./run_all.sh --profile smoke|quick|paper
#   ./run_all.sh --study brats2020 --data PATH     (or --study figshare --data PATH)
# See ./run_all.sh --help for all options.
set -euo pipefail
cd "$(dirname "$0")"
source scripts/setup_env.sh
exec python -m gpcore.study "$@"
