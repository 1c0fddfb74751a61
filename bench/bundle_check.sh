#!/bin/bash
# Issue 18's "the bundle runs with nothing else installed", end to end on this host: write the
# quickstart space's bundle, measure it in a venv holding only numpy and onnxruntime (where
# `import torch` and `import hwsearch` fail), SIGKILL the measurement after 20 s and resume it,
# import the timings as a profile, and check it with latency-check (measured afresh here, and from
# the bundle's own check networks), and the same timings imported without the layers' layouts.
# Usage (from the repository root, hwsearch's venv active, or HWSEARCH and PYTHON set):
#   bash bench/bundle_check.sh [WORK_DIR]
set -u
W=${1:-/tmp/bundle_check}; H=${HWSEARCH:-hwsearch}
mkdir -p "$W" && export HWSEARCH_CACHE="$W/cache"
echo "== host: $(lscpu | grep 'Model name' | sed 's/ \+/ /g'), $(date -u +%FT%TZ)"
rm -rf "$W/qb"
$H profile --bundle "$W/qb" --spec examples/quickstart.yaml --threads 1 2>&1 | tail -2
ORT=$(${PYTHON:-python} -c 'import onnxruntime; print(onnxruntime.__version__)')  # the version hwsearch uses
rm -rf "$W/m" && python3 -m venv "$W/m" && "$W/m/bin/pip" install -q numpy "onnxruntime==$ORT"
"$W/m/bin/pip" list 2>/dev/null | grep -v "^-\|^Package"
"$W/m/bin/python" -c "import torch" 2>&1 | tail -1
"$W/m/bin/python" -c "import hwsearch" 2>&1 | tail -1
("$W/m/bin/python" "$W/qb/measure.py" > "$W/measure1.log" 2>&1 &); sleep 20; pkill -9 -f "$W/qb/measure.py"; sleep 1
echo "== SIGKILL after 20 s:"; tail -c 300 "$W/measure1.log" | tr '\r' '\n' | tail -1
"$W/m/bin/python" "$W/qb/measure.py" > "$W/measure2.log" 2>&1; echo "== resumed: rc $?"
head -c 400 "$W/measure2.log" | tr '\r' '\n' | head -1; tail -c 300 "$W/measure2.log" | tr '\r' '\n' | tail -1
$H profile --import "$W/qb/timings.json" --out "$W/qdev.json" 2>&1 | tail -3
echo "== latency-check, measured afresh here:"
$H latency-check --target "$W/qdev.json" --spec examples/quickstart.yaml --n 50 --no-progress 2>&1 | head -12
echo "== latency-check, the bundle's own check networks:"
$H latency-check --target "$W/qdev.json" --timings "$W/qb/timings.json" 2>&1 | head -6
echo "== the same timings without the layers' optimised graphs (as an older measure.py wrote them):"
mkdir -p "$W/nolayouts" && cp "$W/qb/manifest.json" "$W/nolayouts/"
${PYTHON:-python} -c "
import json, sys
t = json.load(open(sys.argv[1]))
for r in t['readings'].values():
    r.pop('graph', None)
json.dump(t, open(sys.argv[2], 'w'))" "$W/qb/timings.json" "$W/nolayouts/timings.json"
$H profile --import "$W/nolayouts/timings.json" --out "$W/qdev-nolayouts.json" 2>&1 | tail -2 | head -1
$H latency-check --target "$W/qdev-nolayouts.json" --timings "$W/qb/timings.json" 2>&1 | head -4
