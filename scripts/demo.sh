#!/usr/bin/env bash
# The main job on a local default: installs what it needs, starts a local
# Orthanc loaded with sample studies, then searches it and downloads a study
# with the dicomtrolley command, and prints what it did.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/setup.sh"

WORK="$REPO/.data/demo"
rm -rf "$WORK/orthanc" "$WORK/download" "$WORK/export"
mkdir -p "$WORK/orthanc"

echo "== starting a local Orthanc with sample studies"
python -m dicomtrolley.demo serve --data "$REPO/.data/sample-demo" --workdir "$WORK/orthanc" \
  --port 0 --dicom-port 0 > "$WORK/orthanc.out" 2>&1 &
SERVER=$!
trap 'kill $SERVER 2>/dev/null; wait $SERVER 2>/dev/null || true' EXIT
for _ in $(seq 1 600); do
  [ -f "$WORK/orthanc/ready.json" ] && break
  kill -0 $SERVER 2>/dev/null || { cat "$WORK/orthanc.out"; exit 1; }
  sleep 0.1
done
[ -f "$WORK/orthanc/ready.json" ] || { echo "Orthanc did not become ready"; cat "$WORK/orthanc.out"; exit 1; }
URL=$(python -c 'import json,sys; print(json.load(open(sys.argv[1]))["dicomweb_url"])' "$WORK/orthanc/ready.json")
echo "   DICOMweb at $URL"

echo "== dicomtrolley search $URL"
dicomtrolley search "$URL"

STUDY=$(dicomtrolley search "$URL" --PatientID PAT003 --json \
        | python -c 'import json,sys; print(json.load(sys.stdin)[0]["uid"])')
echo "== dicomtrolley download $URL $STUDY -o $WORK/download --template ..."
dicomtrolley download "$URL" "$STUDY" -o "$WORK/download" --no-progress \
  --template '{PatientID}/{StudyDate}_{AccessionNumber}/{SeriesNumber:03d}_{Modality}/{InstanceNumber:05d}.dcm'

echo "== files written"
(cd "$WORK/download" && find . -type f | sort)

echo "== dicomtrolley export $URL worklist.csv -o $WORK/export"
printf 'PatientID,AccessionNumber\nPAT001,\nPAT002,ACC2001\nNOBODY,\n' > "$WORK/worklist.csv"
cat "$WORK/worklist.csv"
dicomtrolley export "$URL" "$WORK/worklist.csv" -o "$WORK/export" --no-progress || echo "   (exit status $?: the row NOBODY matches no study)"
echo "== report.csv"
cat "$WORK/export/report.csv"
