"""Triton python-backend model: microdialogue texts in (BYTES), 5-class probabilities out.

All requests of one dynamic batch are classified in a single encoder pass (batching in one place:
here). The artifact beside this file is the one ``homework-monitor classify`` uses in process.
Tensor names and the class order come from ``homework_monitor.contract``; ``initialize`` refuses a
config or artifact whose class order differs.
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
import torch  # noqa: E402
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
from homework_monitor.model import HomeworkClassifier  # noqa: E402


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
        torch.set_num_threads(int(params.get("torch_threads", "2")))
        artifact = Path(args["model_repository"]) / args["model_version"] / params.get("artifact", "artifact")
        gpu = args.get("model_instance_kind") == "GPU"
        device = f"cuda:{args['model_instance_device_id']}" if gpu else "cpu"
        # HomeworkClassifier checks the artifact's own class order against the contract.
        self.classifier = HomeworkClassifier(artifact, device=device,
                                             fp16=gpu and params.get("fp16", "false") == "true")
        self.max_batch = int(config.get("max_batch_size", 32))

    def execute(self, requests):
        examples, sizes = [], []
        for request in requests:
            th, cl, ctx = (_strings(request, n) for n in (INPUT_THERAPIST, INPUT_CLIENT, INPUT_CONTEXT))
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
