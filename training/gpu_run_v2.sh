#!/usr/bin/env bash
# Model v2 on one H100: the GPU rows of training/table1_v2.py, then the served student's artifact.
#
# Inputs (the machine has no network): the payload of training/gpu_pack_v2.sh, staged call by call into
# $STAGE_DIR (default .gpu/recv: ignored files of the repository stay between calls on a warm machine; see
# that script's header); or, for a local dry run, MINILM= (and MPNET=, DATA=, LABELS=) pointing at
# folders, e.g.
#   CONFIG=smoke DEVICE=cpu DATA=tests/fixtures/data LABELS=tests/fixtures/labels SKIP_WHL=1 \
#     MINILM=$(python -c 'from homework_monitor.model import base_encoder_path as p; print(p())') \
#     OUT=/tmp/v2out bash training/gpu_run_v2.sh
#
# Order (each row is cached as it finishes; a row that would end after its deadline stops and is listed
# as skipped in the log):
#   stream A: minilm_finetuned_v2 (+ its fold models score the 21k unlabeled units: a teacher)
#   stream B, beside A on the same GPU (small models leave it mostly idle): mpnet_finetuned_v2 (only when
#             the payload holds MPNet; + unit scores), then minilm_finetuned_v2_ctx
#   then: minilm_student_v2 (distilled from the better teacher), the served student (all data, ONNX).
# Estimate (full config, H100, bf16 autocast): a fold trains on ~3.6k real + 1.2k synthetic + 2k clinical
# negatives = 6.8k items; MiniLM 3 epochs at batch 64 = 320 steps/fold, ~1.6k steps per row at ~60 ms
# (two views; v1 measured ~75 ms at batch 32) = ~100 s + scoring; the context row ~1.5x; MPNet 2 epochs
# at batch 32 = ~2.1k steps at ~90 ms = ~200 s + ~40 s unit scoring; the student CV 5 x (6.8k + 8k units)
# x 2 epochs / 64 = ~2.3k steps = ~140 s; the served student (10.5k items + 21k units, 2 epochs) ~60 s,
# ONNX export ~30 s. With A and B in parallel: ~7-8 min in all; BUDGET_S (default 480) bounds it.
#
# Writes under $OUT: gpu_v2.log, results_v2.tgz (rows' out-of-fold logits: untar into training/results_v2,
# then render the report here: python -m homework_monitor.training.table1_v2 --rows ''), and the served
# student as artifact.tgz.part-* (cat | tar xzf -; its model.json says how it was made).
set -uo pipefail
OUT=${OUT:-/tmp/out}; mkdir -p "$OUT"
CONFIG=${CONFIG:-full}; DEVICE=${DEVICE:-cuda}; BUDGET_S=${BUDGET_S:-480}
# CPU threads per stream (A and B run side by side): 8 of the GPU machine's 16 cores; a dry run on a
# small machine sets fewer (two streams of 8 threads on 2 cores spend most of their time switching).
STREAM_THREADS=${STREAM_THREADS:-8}
STAGE_DIR=${STAGE_DIR:-.gpu/recv}; UNPACK=${UNPACK:-/tmp/hwm}; WORK=${WORK:-/tmp/hwm_work}
RES=$WORK/results_v2; mkdir -p "$RES"
exec > >(tee "$OUT/gpu_v2.log") 2>&1
T0=$SECONDS
left() { echo $((BUDGET_S - (SECONDS - T0) - $1)); }  # seconds left, keeping $1 in reserve
bring_back() { tar czf "$OUT/results_v2.tgz" -C "$RES" --exclude='*.units.npz' . ; }

if [ -z "${MINILM:-}" ]; then  # unpack the staged payload
  mkdir -p "$STAGE_DIR"; cp "${CARRIED:-.gpu/stage}"/* "$STAGE_DIR"/ 2>/dev/null  # this call's own part
  if ! (cd "$STAGE_DIR" && sha256sum -c --quiet PARTS.sha256 >/dev/null 2>&1); then
    echo "payload: parts missing or corrupt (send these again, then rerun):"
    (cd "$STAGE_DIR" && sha256sum -c PARTS.sha256 2>&1 | grep -v ': OK$'); exit 2
  fi
  rm -rf "$UNPACK"; mkdir -p "$UNPACK"
  cat "$STAGE_DIR"/payload.tar.* | tar xf - -C "$UNPACK" || exit 2
  (cd "$UNPACK/payload" && sha256sum -c --quiet MANIFEST.files) || { echo "payload: a file differs from its manifest"; exit 2; }
  P=$UNPACK/payload; DATA=${DATA:-$P/data}; MINILM=$P/minilm; WHL=$P/whl
  [ -d "$P/mpnet" ] && MPNET=${MPNET:-$P/mpnet}
fi
DATA=${DATA:-$PWD/.gpu/data}; LABELS=${LABELS:-$PWD/training/labels}; MPNET=${MPNET:-}; WHL=${WHL:-.whl}
[ -n "${SKIP_WHL:-}" ] || python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site "$WHL"/*.whl || exit 1
PY=${PY:-python3}  # word-split on purpose: PY="python -P" works
# The package without installing it: homework_monitor/ with the repository folders that pyproject.toml maps
# under it (homework_monitor.training = training/, ...) linked in, first on the path.
$PY - "$WORK/pkg" <<'PYEOF' || exit 1
import shutil
import sys
import tomllib
from pathlib import Path

dirs = tomllib.loads(Path("pyproject.toml").read_text())["tool"]["setuptools"]["package-dir"]
pkg = Path(sys.argv[1]) / "homework_monitor"
shutil.rmtree(pkg.parent, ignore_errors=True)
pkg.mkdir(parents=True)
for f in Path(dirs["homework_monitor"]).iterdir():
    (pkg / f.name).symlink_to(f.resolve())
for name, folder in dirs.items():
    if name.count(".") == 1:
        (pkg / name.split(".")[1]).symlink_to(Path(folder).resolve())
PYEOF
export PYTHONPATH=/tmp/site:$WORK/pkg${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1 HWM_DATA_DIR=$DATA TOKENIZERS_PARALLELISM=false
$PY -c 'import homework_monitor.training.table1_v2 as m; print("package", m.__file__)' || exit 1
nvidia-smi -L 2>/dev/null || true
$PY -c 'import torch,transformers;print("torch",torch.__version__,"transformers",transformers.__version__,"cuda",torch.cuda.is_available())'

# fp32 master copies of the (fp16) encoders: training autocasts to bf16 on the GPU.
$PY - "$WORK/enc" "$MINILM" "$MPNET" <<'PYEOF' || exit 1
import sys
from pathlib import Path

import torch
from transformers import AutoModel, AutoTokenizer

out = Path(sys.argv[1])
for name, src in (("minilm", sys.argv[2]), ("mpnet", sys.argv[3])):
    if src and Path(src, "config.json").exists():
        AutoModel.from_pretrained(src, dtype=torch.float32).save_pretrained(str(out / name))
        AutoTokenizer.from_pretrained(src).save_pretrained(str(out / name))
        print("encoder", name, "ready")
PYEOF
export HWM_BASE_ENCODER=$WORK/enc/minilm
V2="$PY -m homework_monitor.training.table1_v2 --config $CONFIG --device $DEVICE --data-dir $DATA --labels-dir $LABELS --results-dir $RES --work-dir $WORK/v2 --no-report"
RESERVE=${RESERVE:-240}  # kept for the student's CV and the served student

echo "== rows A and B ($(left 0) s left)"
OMP_NUM_THREADS=$STREAM_THREADS $V2 --rows minilm_finetuned_v2 --deadline-s "$(left "$RESERVE")" > "$WORK/a.log" 2>&1 &
A=$!
OMP_NUM_THREADS=$STREAM_THREADS $V2 --rows mpnet_finetuned_v2,minilm_finetuned_v2_ctx --mpnet "$WORK/enc/mpnet" \
  --deadline-s "$(left "$RESERVE")" > "$WORK/b.log" 2>&1 &
B=$!
wait $A; RA=$?; wait $B; RB=$?; echo "stream A rc $RA, stream B rc $RB"
grep -h -E "table1_v2\]|Error|error" "$WORK/a.log" "$WORK/b.log" | grep -v "it/s" | tail -40
[ $RA = 0 ] || tail -n 25 "$WORK/a.log"; [ $RB = 0 ] || tail -n 25 "$WORK/b.log"
bring_back
echo "== rows A+B done at $((SECONDS - T0)) s"

echo "== student ($(left 0) s left)"
$V2 --rows minilm_student_v2 --deadline-s "$(left 90)" --export-student "$WORK/artifact" || echo "student/export rc $?"
bring_back
echo "== student done at $((SECONDS - T0)) s"
if [ -f "$WORK/artifact/model.json" ]; then
  (cd "$WORK" && tar czf - artifact) | split -b 15M - "$OUT/artifact.tgz.part-"
  head -c 1500 "$WORK/artifact/model.json"; echo
fi
ls -la "$OUT" "$RES"
echo "total $((SECONDS - T0)) s"
