"""Speed-up of the served model through Triton, measured in one run against a git revision's model.

Serves the model repository of ``--baseline-rev`` (the torch model: ``5525396``) and the current one,
alternately for ``--rounds`` rounds (one tritonserver at a time, same CPU config, same requests), drives
each with ``triton_load`` at every concurrency, and prints the median microdialogues/s and p50/p99 of
each, and their ratio. Both runs share the machine's background load, so the ratio is what counts.

  python benchmarks/triton_speedup.py --baseline-rev 5525396 --concurrency 1,4 --batch 4 --duration 20 --rounds 2
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import triton_load  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--baseline-rev", default="5525396")
    p.add_argument("--concurrency", default="1,4")
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--duration", type=float, default=20)
    p.add_argument("--rounds", type=int, default=2)
    a = p.parse_args()
    import numpy as np
    levels = [int(x) for x in a.concurrency.split(",")]
    load = " ".join(f"{x:.2f}" for x in os.getloadavg())
    runs: dict[str, list[list[dict]]] = {"baseline": [], "current": []}
    with tempfile.TemporaryDirectory(prefix="hwm-speedup-") as tmp:
        tmp = Path(tmp)
        archive = subprocess.run(["git", "-C", str(ROOT), "archive", a.baseline_rev, "triton_models"], check=True,
                                 capture_output=True).stdout
        subprocess.run(["tar", "-x", "-C", str(tmp)], input=archive, check=True)
        repos = {"baseline": tmp / "triton_models", "current": None}
        for r in range(a.rounds):
            for name, repo in repos.items():
                run_dir = tmp / f"{name}-{r}"
                run_dir.mkdir()
                with triton_load.served("cpu", run_dir, repository=repo) as (url, metrics_url, _pid):
                    print(f"round {r} {name}", file=sys.stderr, flush=True)
                    runs[name].append(triton_load.run_levels(url, metrics_url, levels, a.batch, a.duration, 3.0, 13, echo=False))
    rows = []
    for i, c in enumerate(levels):
        med = {name: {k: float(np.median([run[i][k] if k == "microdialogues_per_s" else run[i]["latency_ms"][k]
                                          for run in rs]))
                      for k in ("microdialogues_per_s", "p50", "p99")} for name, rs in runs.items()}
        rows.append({"concurrency": c, "batch": a.batch, **med,
                     "throughput_ratio": round(med["current"]["microdialogues_per_s"] /
                                               med["baseline"]["microdialogues_per_s"], 2),
                     "p50_ratio": round(med["baseline"]["p50"] / med["current"]["p50"], 2)})
    print(json.dumps({"command": " ".join(["python"] + sys.argv), "machine": triton_load.machine("cpu"),
                      "load_averages_at_start": load, "baseline_rev": a.baseline_rev, "results": rows}, indent=2))


if __name__ == "__main__":
    main()
