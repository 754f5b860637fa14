#!/usr/bin/env bash
# The test command: sets everything up, then runs every check and every test.
# Fails when anything fails, and when any test was skipped (a skipped
# integration test proves nothing).
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/setup.sh"

echo "== ruff";  ruff check .
echo "== mypy";  mypy
echo "== docs";  NO_MKDOCS_2_WARNING=1 mkdocs build --strict --quiet --site-dir .data/site
echo "== pytest"
mkdir -p .data
pytest --junitxml=.data/junit.xml "$@"
python - <<'PY'
import sys
import xml.etree.ElementTree as ET
suite = ET.parse(".data/junit.xml").getroot()
suite = suite if suite.tag == "testsuite" else suite.find("testsuite")
tests, skipped = int(suite.get("tests", 0)), int(suite.get("skipped", 0))
if tests == 0:
    sys.exit("no tests ran")
if skipped:
    sys.exit(f"{skipped} test(s) were skipped; every test must run")
print(f"all {tests} tests ran, none skipped")
PY
