#!/bin/sh
# tritonserver for homework_classifier, as the images and manifests run it. Extra arguments are
# appended (a later flag wins), e.g. `serve.sh --model-config-name=cpu` on a machine without a GPU.
#
# - The GPU config (configs/gpu.pbtxt: 4 KIND_GPU instances, ONNX Runtime CUDA fp16, batches up to 1,024,
#   warmup) is selected explicitly:
#   without it Triton loads config.pbtxt, the CPU one, and the reserved GPU sits idle.
# - explicit model control + --load-model: only our model loads (the repository folder may also
#   hold Python package files such as __init__.py and __pycache__ when it is mounted from a checkout).
# - The admin APIs nobody here uses (runtime log settings, tracing, model load/unload, shared-memory
#   registration) require a header whose value is random per start and never handed out, so they are
#   refused (403). POST /v2/logging could otherwise switch on verbose logging of request contents.
#   Set TRITON_ADMIN_KEY (from a secret) only if an operator really needs them.
set -eu
key="${TRITON_ADMIN_KEY:-$(od -An -N24 -tx1 /dev/urandom | tr -d ' \n')}"
unset TRITON_ADMIN_KEY
restricted="logging,trace,model-repository,shared-memory"
exec tritonserver \
  --model-repository="${TRITON_MODEL_REPOSITORY:-/models}" \
  --model-config-name=gpu \
  --model-control-mode=explicit \
  --load-model=homework_classifier \
  --disable-auto-complete-config \
  --http-restricted-api="${restricted}:hwm-admin-key=${key}" \
  --grpc-restricted-protocol="${restricted}:hwm-admin-key=${key}" \
  "$@"
