"""Length-bucket and thread settings of the ONNX encoder, in process, on real labelled items.

Calls ``OnnxClassifier.predict_proba`` on consecutive slices of ``--batch`` microdialogues of
``$HWM_DATA_DIR/labeled/real_dev.jsonl`` (what a Triton dynamic batch hands the model) under each
setting, rounds alternating so all settings see the same background load, and prints the median
microdialogues/s of each. Numbers only, never text.

  python benchmarks/bucket_sweep.py --batches 4,16 --rounds 3
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np  # noqa: E402

from homework_monitor.runtime import OnnxClassifier  # noqa: E402
from homework_monitor.stream.config import Settings  # noqa: E402
from homework_monitor.triton_models import SERVED_ARTIFACT  # noqa: E402

SETTINGS = {  # name: OnnxClassifier keyword arguments
    "one bucket (pad to longest of the call)": {"max_bucket": 10_000, "max_waste": 1.0},
    "max_bucket 64, max_waste 0.25 (served)": {"max_bucket": 64, "max_waste": 0.25},
    "max_bucket 64, max_waste 0.10": {"max_bucket": 64, "max_waste": 0.10},
    "max_bucket 64, max_waste 0.50": {"max_bucket": 64, "max_waste": 0.50},
    "max_bucket 16, max_waste 0.25": {"max_bucket": 16, "max_waste": 0.25},
}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--batches", default="4,16")
    p.add_argument("--items", type=int, default=320)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--threads", type=int, default=2)
    a = p.parse_args()
    from homework_monitor.training.data import load_labeled
    items = load_labeled(Settings().data_dir / "labeled" / "real_dev.jsonl", real=True)[: a.items]
    examples = [i.example for i in items]
    load = " ".join(f"{x:.2f}" for x in os.getloadavg())
    models = {name: OnnxClassifier(SERVED_ARTIFACT, threads=a.threads, **kw) for name, kw in SETTINGS.items()}
    rows = []
    for batch in map(int, a.batches.split(",")):
        rates: dict[str, list[float]] = {name: [] for name in models}
        for _ in range(a.rounds):
            for name, clf in models.items():
                t0 = time.perf_counter()
                for i in range(0, len(examples), batch):
                    clf.predict_proba(examples[i:i + batch])
                rates[name].append(len(examples) / (time.perf_counter() - t0))
        rows += [{"batch": batch, "setting": name, "md_per_s": round(float(np.median(r)), 1)} for name, r in rates.items()]
    print(json.dumps({"command": " ".join(["python"] + sys.argv), "load_averages_at_start": load,
                      "cores": os.cpu_count(), "threads": a.threads, "results": rows}, indent=2))


if __name__ == "__main__":
    main()
