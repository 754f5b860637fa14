#!/usr/bin/env bash
# Sourced by test.sh and demo.sh: installs what the project needs on a fresh Debian machine.
#   - Debian packages: Orthanc, its DICOMweb plugin, and DCMTK (the real server the tests and demo use)
#   - a virtual environment in .venv with this package and its development extras
set -euo pipefail
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$REPO"

# Also what the tests and benchmarks call: openssl (test certificates), curl and
# GNU time (benchmark rows), which most Debian images have but a minimal one may not.
if ! command -v Orthanc >/dev/null || ! command -v getscu >/dev/null \
   || [ ! -e /usr/share/orthanc/plugins/libOrthancDicomWeb.so ] \
   || ! command -v openssl >/dev/null || ! command -v curl >/dev/null || [ ! -x /usr/bin/time ]; then
  echo "== installing orthanc, orthanc-dicomweb, dcmtk, openssl, curl, time (apt)"
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends \
    orthanc orthanc-dicomweb dcmtk openssl curl time >/dev/null
fi

PYTHON="${PYTHON:-python3}"
if [ ! -x .venv/bin/python ]; then
  echo "== creating .venv"
  "$PYTHON" -m venv .venv
fi
echo "== installing dicomtrolley[dev] into .venv"
.venv/bin/python -m pip install -q --disable-pip-version-check -e ".[dev]"
export PATH="$REPO/.venv/bin:$PATH"
