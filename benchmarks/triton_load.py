"""Concurrent gRPC load on the served model (tritonclient; perf_analyzer does not install from PyPI).

Drives ``homework_classifier`` with N concurrent request loops, each sending requests of
``--batch`` synthetic microdialogues back to back (the worker's own request encoding,
``stream.classifiers.triton_inputs``), for ``--duration`` seconds per concurrency, and prints one JSON
line per concurrency: microdialogues/s, requests/s, client latency p50/p95/p99, and Triton's own view
(queue and compute time per request, mean executed batch size) from its metrics endpoint.

  # against a running server
  python benchmarks/triton_load.py --url 127.0.0.1:8001 --metrics-url http://127.0.0.1:8002/metrics
  # start tritonserver (deploy/triton_runtime.py) with the GPU config when a GPU is present, else the CPU one
  python benchmarks/triton_load.py --serve auto --concurrency 1,4,16,64 --batch 16 --duration 20

Texts come from ``benchmarks/synthetic.py`` (written here, no corpus text).
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
from contextlib import contextmanager
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
# The checkout's package, behind whatever PYTHONPATH puts first (benchmarks/source_layout.py's layout).
sys.path.append(str(Path(__file__).resolve().parent.parent))

import numpy as np  # noqa: E402
from synthetic import examples  # noqa: E402

from homework_monitor.contract import INPUT_DATATYPE, MODEL_NAME, OUTPUT_PROBS  # noqa: E402
from homework_monitor.stream.classifiers import triton_inputs  # noqa: E402


def gpu_present() -> bool:
    """A usable NVIDIA GPU: nvidia-smi lists at least one."""
    if not shutil.which("nvidia-smi"):
        return False
    try:
        out = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return out.returncode == 0 and "GPU" in out.stdout


def machine(config: str) -> str:
    gpu = ""
    if gpu_present():
        gpu = subprocess.run(["nvidia-smi", "--query-gpu=name", "--format=csv,noheader"],
                             capture_output=True, text=True).stdout.strip().replace("\n", ", ")
    load = " ".join(f"{x:.2f}" for x in os.getloadavg())
    return (f"{platform.node()}: {os.cpu_count()} cores {platform.machine()}, GPU: {gpu or 'none'}; "
            f"Triton config: {config}; load averages {load}")


@contextmanager
def served(config: str, run_dir: Path, instances: int | None = None, repository: Path | None = None,
           dist=None, ready_timeout_s: float = 300):
    """tritonserver on free loopback ports with the CPU config or ``configs/gpu.pbtxt``; yields the gRPC
    address, the metrics URL and the server's pid. ``dist`` (a ``TritonDist``) defaults to the
    local stack's (nvidia-pytriton); ``repository`` to the settings' model repository."""
    from homework_monitor.deploy.services import ServiceStack, free_port
    from homework_monitor.deploy.triton_runtime import prepare_triton_dist, tritonserver_command, wait_until_ready
    if repository is None or dist is None:
        from homework_monitor.stream.config import Settings
        settings = Settings()
        repository = repository or settings.model_repository
        dist = dist or prepare_triton_dist(settings.triton_dist_dir)
    repo = repository
    if instances is not None:  # a copy of the repository whose chosen config has that many instances
        repo = scaled_repository(repo, run_dir / "models", config, instances)
    http, grpc, metrics = free_port(), free_port(), free_port()
    extra = ["--model-config-name=gpu"] if config == "gpu" else []
    cmd = tritonserver_command(dist, repo, http, grpc, metrics, extra_args=extra)
    log = run_dir / "tritonserver.log"
    with ServiceStack() as stack:
        # Fails fast when the server exits while loading (a model that does not load) instead of waiting.
        stack.add("tritonserver", cmd, dist.env, log,
                  lambda: wait_until_ready(http, ready_timeout_s, log_path=log,
                                           is_alive=lambda: stack["tritonserver"].is_running), cwd=run_dir)
        yield f"127.0.0.1:{grpc}", f"http://127.0.0.1:{metrics}/metrics", stack["tritonserver"].pid


def scaled_repository(repo: Path, dest: Path, config: str, instances: int) -> Path:
    """Copy of the model repository with ``count`` of the chosen config's instance group set."""
    import re
    src = repo / MODEL_NAME
    shutil.copytree(src, dest / MODEL_NAME, symlinks=True,
                    ignore=shutil.ignore_patterns("__pycache__", "artifact"))
    # The artifact is large: link it instead of copying it.
    (dest / MODEL_NAME / "1" / "artifact").symlink_to((src / "1" / "artifact").resolve(), target_is_directory=True)
    path = dest / MODEL_NAME / ("configs/gpu.pbtxt" if config == "gpu" else "config.pbtxt")
    path.write_text(re.sub(r"count: \d+", f"count: {instances}", path.read_text()))
    return dest


def triton_counters(metrics_url: str) -> dict[str, float]:
    wanted = ("nv_inference_request_success", "nv_inference_count", "nv_inference_exec_count",
              "nv_inference_queue_duration_us", "nv_inference_compute_infer_duration_us",
              "nv_inference_compute_input_duration_us", "nv_inference_compute_output_duration_us")
    text = urllib.request.urlopen(metrics_url, timeout=10).read().decode()
    out = dict.fromkeys(wanted, 0.0)
    for line in text.splitlines():
        name = line.split("{")[0]
        if name in out and f'model="{MODEL_NAME}"' in line:
            out[name] += float(line.split()[-1])
    return out


def requests_pool(n_requests: int, batch: int, seed: int):
    """Encoded requests (what the worker sends), built before the clock starts."""
    import tritonclient.grpc.aio as grpcclient
    corpus = list(examples(n_requests * batch, seed))
    pool = []
    for i in range(n_requests):
        inputs = []
        for name, arr in triton_inputs(corpus[i * batch:(i + 1) * batch]).items():
            inp = grpcclient.InferInput(name, list(arr.shape), INPUT_DATATYPE)
            inp.set_data_from_numpy(arr)
            inputs.append(inp)
        pool.append(inputs)
    return pool


async def drive(url: str, pool, concurrency: int, duration_s: float, warmup_s: float) -> dict:
    import tritonclient.grpc.aio as grpcclient
    client = grpcclient.InferenceServerClient(url)
    outputs = [grpcclient.InferRequestedOutput(OUTPUT_PROBS)]
    latencies: list[float] = []
    done_items = 0
    counting = False
    stop_at = [float("inf")]

    async def loop(k: int) -> None:
        nonlocal done_items
        i = k
        while time.perf_counter() < stop_at[0]:
            inputs = pool[i % len(pool)]
            i += concurrency
            t0 = time.perf_counter()
            res = await client.infer(MODEL_NAME, inputs, outputs=outputs)
            dt = time.perf_counter() - t0
            probs = res.as_numpy(OUTPUT_PROBS)
            if counting:
                latencies.append(dt)
                done_items += probs.shape[0]

    tasks = [asyncio.create_task(loop(k)) for k in range(concurrency)]
    await asyncio.sleep(warmup_s)
    counting = True
    t0 = time.perf_counter()
    stop_at[0] = t0 + duration_s
    await asyncio.gather(*tasks)
    wall = time.perf_counter() - t0
    await client.close()
    lat = np.array(latencies) * 1000
    return {"concurrency": concurrency, "requests": len(lat), "wall_s": round(wall, 2),
            "microdialogues_per_s": round(done_items / wall, 1), "requests_per_s": round(len(lat) / wall, 2),
            "latency_ms": {p: round(float(np.percentile(lat, q)), 1) for p, q in
                           (("p50", 50), ("p95", 95), ("p99", 99))} | {"max": round(float(lat.max()), 1)}
            if len(lat) else None}


def run_levels(url: str, metrics_url: str | None, levels: list[int], batch: int, duration_s: float,
               warmup_s: float, seed: int, echo: bool = True) -> list[dict]:
    pool = requests_pool(max(64, 2 * max(levels)), batch, seed)
    rows = []
    for c in levels:
        before = triton_counters(metrics_url) if metrics_url else None
        row = {"batch": batch, **asyncio.run(drive(url, pool, c, duration_s, warmup_s))}
        if before is not None:
            after = triton_counters(metrics_url)
            d = {k: after[k] - before[k] for k in after}
            req = d["nv_inference_request_success"] or 1
            row["triton"] = {
                "queue_ms_per_request": round(d["nv_inference_queue_duration_us"] / req / 1000, 2),
                "compute_ms_per_request": round(d["nv_inference_compute_infer_duration_us"] / req / 1000, 2),
                "executed_batch_mean": round(d["nv_inference_count"] / (d["nv_inference_exec_count"] or 1), 1)}
        if echo:
            print(json.dumps(row), flush=True)
        rows.append(row)
    return rows


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--url", help="gRPC address of a running server (else --serve)")
    p.add_argument("--metrics-url", help="its Prometheus metrics, e.g. http://127.0.0.1:8002/metrics")
    p.add_argument("--serve", choices=("auto", "cpu", "gpu"), help="start tritonserver with this config")
    p.add_argument("--instances", type=int, help="with --serve: model instances (default: the config's)")
    p.add_argument("--concurrency", default="1,4,16")
    p.add_argument("--batch", type=int, default=16, help="microdialogues per request")
    p.add_argument("--duration", type=float, default=20.0, help="seconds measured per concurrency")
    p.add_argument("--warmup", type=float, default=3.0, help="seconds run before measuring")
    p.add_argument("--seed", type=int, default=13)
    p.add_argument("--out", type=Path, help="also write the result JSON here")
    a = p.parse_args()
    levels = [int(x) for x in a.concurrency.split(",")]
    if not a.url and not a.serve:
        p.error("give --url or --serve")
    config = "gpu" if a.serve == "gpu" or (a.serve == "auto" and gpu_present()) else "cpu"
    t0 = time.time()
    if a.serve:
        with tempfile.TemporaryDirectory(prefix="hwm-triton-load-") as tmp, \
                served(config, Path(tmp), a.instances) as (url, metrics_url, _pid):
            print(f"tritonserver ({config} config) ready in {time.time() - t0:.1f} s", file=sys.stderr, flush=True)
            rows = run_levels(url, metrics_url, levels, a.batch, a.duration, a.warmup, a.seed)
    else:
        config = "external"
        rows = run_levels(a.url, a.metrics_url, levels, a.batch, a.duration, a.warmup, a.seed)
    result = {"command": " ".join(["python"] + sys.argv), "machine": machine(config),
              "instances": a.instances, "results": rows,
              "best_microdialogues_per_s": max(r["microdialogues_per_s"] for r in rows)}
    print(json.dumps(result, indent=2))
    if a.out:
        a.out.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
