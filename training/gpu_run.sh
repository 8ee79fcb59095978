#!/usr/bin/env bash
# The one prepared GPU script (device tool, H100): pretraining + encoder rows of Table 1 + export.
# Expects, in the repo root: .gpu/data (gzipped copy of ../shared/data), .gpu/minilm (fp16 base
# encoder), .whl (pydantic wheels for the image's Python 3.12). Writes under $OUT.
set -uo pipefail
OUT=${OUT:-/tmp/out}; mkdir -p "$OUT/results"
CONFIG=${CONFIG:-full}; DEVICE=${DEVICE:-cuda}   # CONFIG=smoke DEVICE=cpu DATA=tests/fixtures/data: a local dry run
[ -n "${SKIP_WHL:-}" ] || python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1 HWM_DATA_DIR=${DATA:-$PWD/.gpu/data} HWM_BASE_ENCODER=/tmp/minilm32
exec > >(tee "$OUT/gpu.log") 2>&1
nvidia-smi -L || true; python3 -c 'import torch,transformers,sentence_transformers as s;print(torch.__version__,transformers.__version__,s.__version__)'
python3 - <<'P'
import torch
from transformers import AutoModel, AutoTokenizer
m = AutoModel.from_pretrained(".gpu/minilm", dtype=torch.float32); m.save_pretrained("/tmp/minilm32")
AutoTokenizer.from_pretrained(".gpu/minilm").save_pretrained("/tmp/minilm32")
P
T0=$SECONDS
python3 -m homework_monitor.training.table1 --config $CONFIG --device $DEVICE --rows ${ROWS:-tsdae_nsp,tsdae_only,minilm_finetuned,minilm_frozen} \
  --results-dir "$OUT/results" --work-dir /tmp/t1work --no-report
echo "table1 rows: $((SECONDS-T0)) s"
for r in tsdae_nsp tsdae_only; do cat /tmp/t1work/$CONFIG/$r/pretrain.json 2>/dev/null | head -c 1500; echo; done
python3 -m homework_monitor.training.export --row best --config $CONFIG --device $DEVICE --results-dir "$OUT/results" \
  --work-dir /tmp/t1work --out /tmp/artifact
echo "export done: $((SECONDS-T0)) s"
python3 benchmarks/classifier_throughput.py --artifact /tmp/artifact --device $DEVICE $([ $DEVICE = cuda ] && echo --fp16) --batches 1,8,32,64,128 --n 1024
(cd /tmp && tar czf - artifact) | split -b 15M - "$OUT/artifact.tgz.part-"
ls -la "$OUT" "$OUT/results"
