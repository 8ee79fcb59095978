"""Triton python-backend model: microdialogue texts in (BYTES), 5-class probabilities out.

All requests of one dynamic batch are classified together: both views of every microdialogue are
tokenized in one call, bucketed by length and run through ONNX Runtime (``homework_monitor.runtime``;
no torch in this process). The artifact beside this file is the one ``homework-monitor classify``
uses in process. Tensor names and the class order come from ``homework_monitor.contract``;
``initialize`` refuses a config or artifact whose class order differs.

Config parameters: ``threads`` (ONNX Runtime intra-op threads), ``fp16`` (GPU instances),
``execution_provider`` (GPU instances: ``cuda`` or ``tensorrt``), ``max_bucket`` and ``max_waste``
(length buckets: at most that many sequences, at most that share of a row padded). A GPU instance
(``KIND_GPU``) runs on the device Triton gives it (``model_instance_device_id``); a GPU provider that
does not load fails the model's load instead of serving from the CPU (``homework_monitor.runtime``).
An artifact without an ONNX encoder (a torch training output) runs on torch (``torch_threads``).
"""
import json
import os
import sys
from pathlib import Path

# The stub's embedded Python runs isolated and ignores PYTHONPATH; honour it by hand so that
# ``homework_monitor`` imports from a source checkout without an install (the NGC image sets it).
for _p in reversed([p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]):
    if _p not in sys.path:
        sys.path.insert(0, _p)

import numpy as np  # noqa: E402
import triton_python_backend_utils as pb_utils  # noqa: E402

from homework_monitor.contract import (  # noqa: E402
    CLASSES_PARAMETER,
    INPUT_CLIENT,
    INPUT_CONTEXT,
    INPUT_THERAPIST,
    OUTPUT_PROBS,
    Example,
    check_classes,
)
from homework_monitor.runtime import ModelSpec, OnnxClassifier, has_onnx_encoder  # noqa: E402


def _strings(request, name):
    arr = pb_utils.get_input_tensor_by_name(request, name).as_numpy().reshape(-1)
    return [x.decode("utf-8", "replace") if isinstance(x, bytes) else str(x) for x in arr]


def _context(raw: str):
    if not raw:
        return ()
    return tuple((t["speaker"], t["text"]) for t in json.loads(raw))


class TritonPythonModel:
    def initialize(self, args):
        config = json.loads(args["model_config"])
        params = {k: v["string_value"] for k, v in config.get("parameters", {}).items()}
        check_classes(params.get(CLASSES_PARAMETER, "").split(","), "config.pbtxt")
        artifact = Path(args["model_repository"]) / args["model_version"] / params.get("artifact", "artifact")
        gpu = args.get("model_instance_kind") == "GPU"
        fp16 = gpu and params.get("fp16", "false") == "true"
        device_id = args.get("model_instance_device_id", "0")
        if has_onnx_encoder(artifact):  # checks the artifact's own class order against the contract
            device = f"{params.get('execution_provider', 'cuda')}:{device_id}" if gpu else "cpu"
            self.classifier = OnnxClassifier(artifact, device=device, fp16=fp16,
                                             threads=int(params.get("threads", "0")) or None,
                                             max_bucket=int(params.get("max_bucket", "64")),
                                             max_waste=float(params.get("max_waste", "0.25")))
            pb_utils.Logger.log_info(
                f"{args['model_name']} instance {args['model_instance_name']}: device {device}, fp16 {fp16}, "
                f"providers {list(self.classifier.encoder.providers)}, max_bucket {self.classifier.encoder.max_bucket}")
        else:
            import torch

            from homework_monitor.model import HomeworkClassifier
            torch.set_num_threads(int(params.get("torch_threads", "2")))
            self.classifier = HomeworkClassifier(artifact, device=f"cuda:{device_id}" if gpu else "cpu", fp16=fp16)
        # The context turns are sent as JSON; parse them only for a model that reads them.
        self.reads_context = "context" in ModelSpec.load(artifact).views
        self.max_batch = int(config.get("max_batch_size", 32))

    def execute(self, requests):
        examples, sizes = [], []
        for request in requests:
            th, cl = _strings(request, INPUT_THERAPIST), _strings(request, INPUT_CLIENT)
            ctx = _strings(request, INPUT_CONTEXT) if self.reads_context else [""] * len(th)
            examples += [Example(therapist=t, client=c or None, context=_context(x))
                         for t, c, x in zip(th, cl, ctx)]
            sizes.append(len(th))
        probs = self.classifier.predict_proba(examples, batch_size=self.max_batch).astype(np.float32)
        responses, i = [], 0
        for n in sizes:
            out = pb_utils.Tensor(OUTPUT_PROBS, probs[i:i + n])
            responses.append(pb_utils.InferenceResponse(output_tensors=[out]))
            i += n
        return responses
