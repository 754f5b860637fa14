#!/usr/bin/env bash
# The benchmark command (see docs/performance.md):
#   bash benchmarks/run.sh [--runs N] [--quick] [--no-reference] [--only GROUP] [--output FILE]
# Installs what the project needs on a fresh machine first (scripts/setup.sh), then
# measures this package beside dicomtrolley 4.1.0, dicomweb-client and curl.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
if [ ! -x .venv/bin/python ] || ! command -v Orthanc >/dev/null; then
  bash scripts/setup.sh
fi
exec .venv/bin/python -m benchmarks.run "$@"
