"""Classifier throughput (microdialogues/s) of the served artifact, in process, by batch size.

  python benchmarks/classifier_throughput.py --device cpu
  python benchmarks/classifier_throughput.py --device cuda --fp16     # GPU figure (H100 run)

Texts are generated from a fixed template (no corpus text), about 40-60 tokens per view.
"""
from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch  # noqa: E402

from homework_monitor.model import Example, HomeworkClassifier  # noqa: E402
from homework_monitor.stream.config import DEFAULT_ARTIFACT  # noqa: E402

WORDS = ("so this week maybe you could try the breathing exercise when you notice the worry coming "
         "up and write down what happened and how strong the feeling was okay").split()


def example(i: int) -> Example:
    n = 20 + i % 25
    t = " ".join(WORDS[(i + k) % len(WORDS)] for k in range(n))
    return Example(therapist=t, client="yeah I can do that", context=(("client", "it was a hard week"),))


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--artifact", type=Path, default=DEFAULT_ARTIFACT)
    p.add_argument("--device", default="cpu")
    p.add_argument("--fp16", action="store_true")
    p.add_argument("--batches", default="1,8,32,64")
    p.add_argument("--n", type=int, default=256)
    a = p.parse_args()
    clf = HomeworkClassifier(a.artifact, a.device, a.fp16)
    rows = []
    for bs in map(int, a.batches.split(",")):
        exs = [example(i) for i in range(max(a.n, bs))]
        clf.predict_proba(exs[:bs], bs)  # warm-up
        if a.device.startswith("cuda"):
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        for i in range(0, len(exs), bs):
            clf.predict_proba(exs[i:i + bs], bs)
        if a.device.startswith("cuda"):
            torch.cuda.synchronize()
        dt = time.perf_counter() - t0
        rows.append({"batch": bs, "microdialogues_per_s": round(len(exs) / dt, 1),
                     "ms_per_batch": round(1000 * dt / (len(exs) / bs), 2)})
    dev = torch.cuda.get_device_name() if a.device.startswith("cuda") else platform.processor() or "cpu"
    print(json.dumps({"command": " ".join(sys.argv), "machine": f"{platform.node()} {dev}",
                      "threads": torch.get_num_threads(), "views": clf.spec.views,
                      "fp16": a.fp16, "results": rows}, indent=2))


if __name__ == "__main__":
    main()
