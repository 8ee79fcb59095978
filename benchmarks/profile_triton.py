"""Where the Triton python backend spends its time under load: py-spy on the model's stub process.

Starts tritonserver (``triton_load.served``), drives it at one concurrency with the worker's request
encoding, samples the python backend stub with ``py-spy record`` for ``--seconds``, and prints the
functions holding the most samples (inclusive and self), with the load's throughput. ``--rev``
serves the model repository as it was at a git revision (the torch baseline: ``--rev 5525396``).

  python benchmarks/profile_triton.py --seconds 30 --concurrency 4 --batch 4
  python benchmarks/profile_triton.py --rev 5525396 --seconds 30 --concurrency 4 --batch 4

Needs py-spy (``pip install py-spy``) and permission to ptrace the stub (root, or ptrace_scope 0).
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import triton_load  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent


def children(pid: int) -> list[int]:
    out = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            out.append(int(stat.parent.name))
    return out


def stub_pid(server_pid: int) -> int:
    for pid in children(server_pid):
        if "triton_python_backend_stub" in Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace"):
            return pid
    raise RuntimeError("no python backend stub under tritonserver")


def summarize(raw: Path, top: int) -> dict:
    """py-spy's raw (collapsed) stacks -> the functions with the largest share of samples."""
    inclusive, self_time, total = Counter(), Counter(), 0
    for line in raw.read_text().splitlines():
        stack, _, n = line.rpartition(" ")
        if not stack:
            continue
        count = int(n)
        frames = [f.split(" (")[0] + " (" + f.split(" (")[1].split(":")[0].rsplit("/", 1)[-1] + ")"
                  if " (" in f else f for f in stack.split(";")]
        total += count
        for f in set(frames):
            inclusive[f] += count
        self_time[frames[-1]] += count

    def share(counter: Counter) -> list[dict]:
        return [{"function": f, "share": round(n / total, 3)} for f, n in counter.most_common(top)]
    return {"samples": total, "inclusive": share(inclusive), "self": share(self_time)}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rev", help="serve the model repository of this git revision")
    p.add_argument("--seconds", type=float, default=30)
    p.add_argument("--concurrency", type=int, default=4)
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--top", type=int, default=15)
    p.add_argument("--out", type=Path, help="keep py-spy's raw stacks here")
    a = p.parse_args()
    load = " ".join(f"{x:.2f}" for x in os.getloadavg())
    with tempfile.TemporaryDirectory(prefix="hwm-profile-") as tmp:
        tmp = Path(tmp)
        repo = None
        if a.rev:
            archive = subprocess.run(["git", "-C", str(ROOT), "archive", a.rev, "triton_models"], check=True,
                                     capture_output=True).stdout
            subprocess.run(["tar", "-x", "-C", str(tmp)], input=archive, check=True)
            repo = tmp / "triton_models"
        with triton_load.served("cpu", tmp, repository=repo) as (url, metrics_url, server_pid):
            pool = triton_load.requests_pool(64, a.batch, 13)
            result: dict = {}
            runner = threading.Thread(target=lambda: result.update(asyncio.run(
                triton_load.drive(url, pool, a.concurrency, a.seconds + 6, 3.0))))
            runner.start()
            time.sleep(4)
            raw = a.out or tmp / "stacks.txt"
            subprocess.run([str(Path(sys.executable).with_name("py-spy")), "record", "--pid", str(stub_pid(server_pid)), "--duration", str(int(a.seconds)),
                            "--rate", "100", "--format", "raw", "--output", str(raw), "--nonblocking"],
                           check=True, capture_output=True)
            runner.join()
            report = summarize(raw, a.top)
    print(json.dumps({"command": " ".join(["python"] + sys.argv), "load_averages_at_start": load,
                      "load": result, **report}, indent=2))


if __name__ == "__main__":
    main()
