#!/usr/bin/env bash
# GPU throughput of the served model, in one run: tritonserver with the GPU config (configs/gpu.pbtxt),
# driven over gRPC by a concurrent tritonclient load generator at several concurrencies, then a large
# synthetic corpus scored offline in process. Prints microdialogues/s and latency p50/p95/p99 per
# concurrency and the projected time for the paper's 2.83 million microdialogues; writes
# $OUT/gpu_throughput.json, $OUT/gpu_throughput.log and $OUT/tritonserver.log. The steps are in
# benchmarks/gpu_throughput.py; docs/SCALING.md ("GPU path") has the figures.
#
#   bash benchmarks/gpu_throughput.sh                       # on the GPU host: DEVICE=cuda, the defaults below
#   DEVICE=cpu bash benchmarks/gpu_throughput.sh            # the dry run: same code path, KIND_CPU, small counts
#
# Knobs (environment), GPU default / CPU default:
#   DEVICE        cuda | tensorrt | cpu                       (cuda)
#   CONCURRENCY   requests in flight, comma-separated          (64,128,256 / 1,4)
#   BATCH         microdialogues per request                   (64 / 4)
#   DURATION      seconds measured per concurrency             (20 / 10), WARMUP before each (5 / 2)
#   INSTANCES     Triton model instances on the GPU            (4 / 1)
#   COUNT         microdialogues scored offline                (500000 / 256)
#   CHUNK, WORKERS  offline microdialogues per call, calls in flight   (8192, 4 / 64, 1)
#   OUT           results folder                               (var/gpu-throughput-<time>)
#   TIME_LIMIT_S  the whole run is stopped after this          (480: fits a 10-minute device command)
#   TRITONSERVER  tritonserver binary                          (nvidia-pytriton's bundle if installed, else PATH)
#   PYTHON        interpreter with the packages below          (python3)
#
# Needs, all checked before anything starts (nothing is installed; the host may have no network):
# numpy, tokenizers, safetensors, onnx, onnxruntime-gpu (CUDA execution provider; onnxruntime on
# DEVICE=cpu), tritonclient[grpc] (grpcio, protobuf), and a tritonserver with the python backend: the
# nvidia-pytriton 0.7.0 bundle (deploy/triton_runtime.py), or NVIDIA's container's /opt/tritonserver.
# The checkout itself is made importable by benchmarks/source_layout.py (no install needed).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PYTHON="${PYTHON:-python3}"
DEVICE="${DEVICE:-cuda}"
if [ "$DEVICE" = cpu ]; then
  d_conc=1,4 d_batch=4 d_duration=10 d_warmup=2 d_instances=1 d_count=256 d_chunk=64 d_workers=1
else
  d_conc=64,128,256 d_batch=64 d_duration=20 d_warmup=5 d_instances=4 d_count=500000 d_chunk=8192 d_workers=4
fi
OUT="${OUT:-$ROOT/var/gpu-throughput-$(date +%Y%m%d-%H%M%S)}"
mkdir -p "$OUT"
OUT="$(cd "$OUT" && pwd)"
scratch="$(mktemp -d "${TMPDIR:-/tmp}/hwm-gpu-layout.XXXXXX")"
trap 'rm -rf "$scratch"' EXIT
export PYTHONPATH="$("$PYTHON" "$ROOT/benchmarks/source_layout.py" "$scratch")${PYTHONPATH:+:$PYTHONPATH}"
export PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=true

args=(--device "$DEVICE" --concurrency "${CONCURRENCY:-$d_conc}" --batch "${BATCH:-$d_batch}"
      --duration "${DURATION:-$d_duration}" --warmup "${WARMUP:-$d_warmup}" --instances "${INSTANCES:-$d_instances}"
      --count "${COUNT:-$d_count}" --chunk "${CHUNK:-$d_chunk}" --workers "${WORKERS:-$d_workers}"
      --dist-dir "${TRITON_DIST_DIR:-$ROOT/var/triton-dist}" --out "$OUT")
[ -n "${TRITONSERVER:-}" ] && args+=(--tritonserver "$TRITONSERVER")
# The layout on PYTHONPATH comes before any installed homework_monitor (no -P: Python 3.10 lacks it).
timeout --signal=TERM --kill-after=30 "${TIME_LIMIT_S:-480}" \
  "$PYTHON" "$ROOT/benchmarks/gpu_throughput.py" "${args[@]}" 2>&1 | tee "$OUT/gpu_throughput.log"
