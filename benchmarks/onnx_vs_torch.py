"""The served ONNX Runtime model against the torch model it replaced, on real labelled items.

Label agreement (argmax), event agreement (top class not none and p >= the event threshold), the
largest probability difference, and macro-F1 against the gold labels of
``$HWM_DATA_DIR/labeled/real_dev.jsonl`` (the final artifact was trained on these items too, so F1 is
in-sample: compare the two runtimes with it, not the model), then in-process speed of both on the same
requests, alternating rounds in one run so the ratio holds on a noisy machine. ``--int8`` also builds
dynamically quantised int8 variants of the graph and scores them the same way (kept only if >= 99%
label agreement). Prints numbers only, never text.

  python benchmarks/onnx_vs_torch.py --torch-rev 5525396 --batches 1,4,16 --rounds 3 --int8
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402

from homework_monitor.contract import CLASSES, NONE  # noqa: E402
from homework_monitor.stream.config import Settings  # noqa: E402
from homework_monitor.triton_models import SERVED_ARTIFACT  # noqa: E402

ARTIFACT_IN_REPO = "triton_models/homework_classifier/1/artifact"


def torch_artifact(rev: str, dest: Path) -> Path:
    """The artifact as it was at ``rev`` (the torch checkpoint), unpacked from git."""
    archive = subprocess.run(["git", "-C", str(ROOT), "archive", rev, ARTIFACT_IN_REPO], check=True,
                             capture_output=True).stdout
    subprocess.run(["tar", "-x", "-C", str(dest)], input=archive, check=True)
    out = dest / ARTIFACT_IN_REPO
    (out / "encoder" / "model.onnx").unlink(missing_ok=True)  # torch only
    return out


def events(p: np.ndarray, threshold: float) -> np.ndarray:
    top = p.argmax(1)
    return np.where((top != CLASSES.index(NONE)) & (p.max(1) >= threshold), top, -1)


def compare(name: str, p: np.ndarray, ref: np.ndarray, y: np.ndarray, threshold: float) -> dict:
    from sklearn.metrics import f1_score
    return {"model": name, "label_agreement": round(float((p.argmax(1) == ref.argmax(1)).mean()), 4),
            "event_agreement": round(float((events(p, threshold) == events(ref, threshold)).mean()), 4),
            "max_prob_diff": float(f"{np.abs(p - ref).max():.3g}"),
            "macro_f1_vs_gold": round(float(f1_score(y, p.argmax(1), average="macro")), 4)}


def rate(clf, examples, batch: int) -> float:
    t0 = time.perf_counter()
    for i in range(0, len(examples), batch):
        clf.predict_proba(examples[i:i + batch])
    return len(examples) / (time.perf_counter() - t0)


def int8_variants(artifact: Path, dest: Path) -> dict[str, Path]:
    """Copies of the artifact whose encoder graph is dynamically quantised to int8."""
    import shutil

    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    from homework_monitor.runtime import fp32_weights
    plain = dest / "fp32.onnx"
    onnx.save(fp32_weights(onnx.load(str(artifact / "encoder" / "model.onnx"))), str(plain))
    out = {}
    for name, kwargs in {"int8_per_tensor": {}, "int8_per_channel": {"per_channel": True},
                         "int8_matmul_only": {"per_channel": True, "op_types_to_quantize": ["MatMul"]}}.items():
        art = dest / name
        shutil.copytree(artifact, art)
        quantize_dynamic(str(plain), str(art / "encoder" / "model.onnx"), weight_type=QuantType.QInt8,
                         extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT}, **kwargs)
        out[name] = art
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--torch-rev", default="5525396", help="git revision holding the torch artifact")
    p.add_argument("--batches", default="1,4,16", help="microdialogues per call (a Triton dynamic batch)")
    p.add_argument("--timing-items", type=int, default=240)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--int8", action="store_true")
    a = p.parse_args()
    import torch

    from homework_monitor.model import HomeworkClassifier
    from homework_monitor.runtime import OnnxClassifier
    from homework_monitor.training.data import load_labeled
    torch.set_num_threads(a.threads)
    settings = Settings()
    items = load_labeled(settings.data_dir / "labeled" / "real_dev.jsonl", real=True)
    examples = [i.example for i in items]
    y = np.array([i.y for i in items])
    load = " ".join(f"{x:.2f}" for x in os.getloadavg())
    with tempfile.TemporaryDirectory() as tmp:
        torch_clf = HomeworkClassifier(torch_artifact(a.torch_rev, Path(tmp)))
        onnx_clf = OnnxClassifier(SERVED_ARTIFACT, threads=a.threads)
        ref = torch_clf.predict_proba(examples, 32)
        rows = [compare("torch (fp32 compute)", ref, ref, y, settings.event_threshold),
                compare("onnxruntime fp32 (served)", onnx_clf.predict_proba(examples), ref, y, settings.event_threshold)]
        if a.int8:
            for name, art in int8_variants(SERVED_ARTIFACT, Path(tmp)).items():
                rows.append(compare(f"onnxruntime {name}", OnnxClassifier(art, threads=a.threads).predict_proba(examples),
                                    ref, y, settings.event_threshold))
        timing = examples[: a.timing_items]
        speed = []
        for batch in map(int, a.batches.split(",")):
            t_rates, o_rates = [], []
            for _ in range(a.rounds):  # alternate, so both see the same background load
                t_rates.append(rate(torch_clf, timing, batch))
                o_rates.append(rate(onnx_clf, timing, batch))
            speed.append({"batch": batch, "torch_md_per_s": round(float(np.median(t_rates)), 1),
                          "onnx_md_per_s": round(float(np.median(o_rates)), 1),
                          "speedup": round(float(np.median(np.array(o_rates) / np.array(t_rates))), 2)})
    print(json.dumps({"command": " ".join(["python"] + sys.argv),
                      "machine": f"{platform.node()}: {os.cpu_count()} cores, threads {a.threads}; "
                                 f"load averages at start {load}",
                      "items": len(examples), "agreement_vs_torch": rows, "speed": speed}, indent=2))


if __name__ == "__main__":
    main()
