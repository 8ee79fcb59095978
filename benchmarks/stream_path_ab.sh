#!/usr/bin/env bash
# The stream path of two revisions, alternating in one run (this machine is noisy: compare ratios).
#   bash benchmarks/stream_path_ab.sh BASE_REV [SESSIONS=1000] [ROUNDS=2]
# BASE_REV is exported with `git archive`; both sides run this checkout's benchmarks/stream_path.py (one
# harness) with the package laid out from their own tree (benchmarks/source_layout.py), so the worker
# process runs that revision's code.
set -euo pipefail
cd "$(dirname "$0")/.."
BASE=${1:?usage: stream_path_ab.sh BASE_REV [SESSIONS] [ROUNDS]}; SESSIONS=${2:-1000}; ROUNDS=${3:-2}
PY=${PYTHON:-.venv/bin/python}
work=$(mktemp -d /tmp/hwm-ab.XXXXXX); trap 'rm -rf "$work"' EXIT
mkdir -p "$work/base"
git archive "$BASE" | tar -x -C "$work/base"
layout() {  # $1 = tree, $2 = dest: prints the folder to put on PYTHONPATH
  "$PY" -P -c 'import sys; sys.path.insert(0, "benchmarks"); from pathlib import Path; from source_layout import source_layout; print(source_layout(Path(sys.argv[2]), Path(sys.argv[1]).resolve()))' "$1" "$2"
}
base_path=$(layout "$work/base" "$work/layout-base"); new_path=$(layout . "$work/layout-new")
for path in "$base_path" "$new_path"; do  # each side must import its own tree, whatever the harness imports first
  got=$(PYTHONPATH=$path "$PY" -P -c 'import sys; sys.path.append(sys.argv[1]); import stream_path; from homework_monitor.stream import app; print(app.__file__)' benchmarks)
  case "$got" in "$path"/*) ;; *) echo "stream_path_ab: $path imports the worker from $got" >&2; exit 1;; esac
done
echo "base $(git rev-parse --short "$BASE") vs working tree $(git rev-parse --short HEAD)$(git diff --quiet || echo +changes), $SESSIONS sessions"
for round in $(seq "$ROUNDS"); do
  for side in base new; do
    path=$base_path; [ "$side" = new ] && path=$new_path
    PYTHONPATH=$path "$PY" -P benchmarks/stream_path.py --sessions "$SESSIONS" 2>/dev/null \
      | "$PY" -c 'import json,sys; d=json.load(sys.stdin); print(json.dumps({"side": sys.argv[1], "round": int(sys.argv[2]), **{k: d[k] for k in ("utterances_per_s", "cores_busy", "summaries", "machine")}}))' "$side" "$round"
  done
done
