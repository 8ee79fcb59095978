"""GPU throughput of the served model: through Triton at several concurrencies, then offline in process.

Run through ``benchmarks/gpu_throughput.sh`` (it sets the knobs from the environment and makes this
checkout importable); the steps:

1. **Preflight**: every package and binary the run needs, all checked before anything starts; on
   ``--device cuda`` ONNX Runtime must offer the CUDA execution provider (``onnxruntime-gpu``).
2. **Triton**: a copy of the model repository whose ``configs/gpu.pbtxt`` gets the instance count and,
   for ``--device cpu`` (the dry run), ``KIND_CPU`` instead of ``KIND_GPU`` and a smaller warmup batch;
   every other parameter is the GPU config's own. tritonserver starts with ``--model-config-name=gpu``
   and ``triton_load`` drives it over gRPC (tritonclient, asyncio) at each concurrency with requests of
   ``--batch`` synthetic microdialogues: microdialogues/s, latency p50/p95/p99, Triton's executed batch.
3. **Offline**: the same artifact scored in this process (``OnnxClassifier`` on the device, fp16 on a
   GPU, the GPU config's length buckets) over ``--count`` synthetic microdialogues in chunks, several
   chunks in flight so tokenization overlaps the encoder: microdialogues/s and the projected time for
   the paper's 2.83 million.

Writes ``<out>/gpu_throughput.json`` (after each step, so a run cut short keeps what it measured) and
``<out>/tritonserver.log``. Texts come from ``benchmarks/synthetic.py`` (no corpus text).
"""
from __future__ import annotations

import argparse
import importlib
import json
import shutil
import signal
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import triton_load  # noqa: E402
from synthetic import examples  # noqa: E402

from homework_monitor.contract import MODEL_NAME  # noqa: E402

PAPER_MICRODIALOGUES = 2_830_000
TARGET_MD_PER_S = 15_000
TARGET_PAPER_S = 300
# What the run imports, by module: the package that provides it.
REQUIRED_MODULES = {"numpy": "numpy", "tokenizers": "tokenizers", "safetensors": "safetensors",
                    "onnxruntime": "onnxruntime-gpu (onnxruntime on --device cpu)", "onnx": "onnx",
                    "tritonclient.grpc.aio": "tritonclient[grpc]", "google.protobuf": "protobuf"}


def preflight(device: str, server_bin: str | None, dist_dir: Path):
    """The tritonserver to run; raises ``SystemExit`` listing everything missing at once."""
    missing = []
    for module, package in REQUIRED_MODULES.items():
        try:
            importlib.import_module(module)
        except ImportError as exc:
            missing.append(f"python package {package} ({exc})")
    if device != "cpu" and not any("onnxruntime" in m for m in missing):
        import onnxruntime as ort

        from homework_monitor.runtime import execution_provider
        if execution_provider(device) not in ort.get_available_providers():
            missing.append(f"{execution_provider(device)} in onnxruntime {ort.__version__} (it offers "
                           f"{ort.get_available_providers()}: install onnxruntime-gpu instead of onnxruntime)")
    dist = None
    try:
        from homework_monitor.deploy.triton_runtime import triton_dist
        dist = triton_dist(dist_dir, server_bin)
    except (FileNotFoundError, ImportError) as exc:
        missing.append(f"tritonserver ({exc}; set TRITONSERVER to its binary)")
    if missing:
        raise SystemExit("preflight failed, nothing started:\n  " + "\n  ".join(missing))
    return dist


def parse_config(text: str):
    """A Triton model config, parsed with Triton's own schema (tritonclient's ``model_config_pb2``)."""
    from google.protobuf import text_format
    from tritonclient.grpc import model_config_pb2
    return text_format.Parse(text, model_config_pb2.ModelConfig())


def gpu_config_for(text: str, device: str, instances: int, cpu_warmup_batch: int) -> str:
    """``configs/gpu.pbtxt`` with ``instances`` per instance group and the execution provider and GPU
    of ``device``; for ``cpu`` its instances become ``KIND_CPU`` and no warmup batch exceeds
    ``cpu_warmup_batch`` (the full 1,024-item warmup takes half a minute on two cores)."""
    from google.protobuf import text_format
    from tritonclient.grpc import model_config_pb2
    config = parse_config(text)
    kind, _, index = device.partition(":")
    for group in config.instance_group:
        group.count = instances
        del group.gpus[:]
        if kind == "cpu":
            group.kind = model_config_pb2.ModelInstanceGroup.KIND_CPU
        else:
            group.gpus.append(int(index or 0))
    if kind == "cpu":
        for sample in config.model_warmup:
            sample.batch_size = min(sample.batch_size, cpu_warmup_batch)
    else:
        config.parameters["execution_provider"].string_value = kind
    return text_format.MessageToString(config)


def repository_for(device: str, instances: int, cpu_warmup_batch: int, dest: Path) -> Path:
    """A copy of the model repository (artifact linked, not copied) with the adapted GPU config."""
    from homework_monitor.triton_models import MODEL_REPOSITORY
    repo = triton_load.scaled_repository(MODEL_REPOSITORY, dest, "gpu", instances)
    path = repo / MODEL_NAME / "configs" / "gpu.pbtxt"
    path.write_text(gpu_config_for(path.read_text(), device, instances, cpu_warmup_batch))
    return repo


def served_providers(log_path: Path) -> list[str]:
    """What model.py logged at load: one line per instance with its device and ONNX Runtime providers."""
    if not log_path.exists():
        return []
    return [line.split("] ", 1)[-1].strip().strip('"') for line in log_path.read_text(errors="replace").splitlines()
            if "providers [" in line]


def score_offline(device: str, fp16: bool, params: dict[str, str], count: int, chunk: int, workers: int,
                  threads: int | None, seed: int) -> dict:
    """``count`` synthetic microdialogues scored in process (a pool of distinct ones, cycled)."""
    import numpy as np

    from homework_monitor.runtime import OnnxClassifier
    from homework_monitor.triton_models import SERVED_ARTIFACT
    t0 = time.perf_counter()
    clf = OnnxClassifier(SERVED_ARTIFACT, device=device, fp16=fp16, threads=threads,
                         max_bucket=int(params["max_bucket"]), max_waste=float(params["max_waste"]))
    load_s = time.perf_counter() - t0
    pool = list(examples(min(count, 65_536), seed))
    sizes = [min(chunk, count - start) for start in range(0, count, chunk)]
    chunks = [[pool[(start + k) % len(pool)] for k in range(n)]
              for start, n in zip(range(0, count, chunk), sizes)]
    clf.predict_proba(chunks[0])  # not timed: first-shape kernels and allocations
    t0 = time.perf_counter()
    with ThreadPoolExecutor(workers) as ex:
        results = list(ex.map(clf.predict_proba, chunks))
    wall = time.perf_counter() - t0
    probs = np.concatenate(results)
    if not (np.isfinite(probs).all() and np.allclose(probs.sum(axis=1), 1, atol=1e-3)):
        raise RuntimeError("offline scores are not probabilities")
    rate = len(probs) / wall
    return {"device": device, "fp16": fp16, "providers": list(clf.encoder.providers), "scored": int(len(probs)),
            "distinct": len(pool), "chunk": chunk, "workers": workers, "load_s": round(load_s, 1),
            "wall_s": round(wall, 2), "microdialogues_per_s": round(rate, 1),
            "projected_s_for_2_83M": round(PAPER_MICRODIALOGUES / rate, 1)}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cuda", help="cpu (dry run), cuda[:N] or tensorrt[:N]")
    p.add_argument("--instances", type=int, default=4, help="Triton model instances")
    p.add_argument("--concurrency", default="64,128,256", help="requests in flight, one level after another")
    p.add_argument("--batch", type=int, default=64, help="microdialogues per request")
    p.add_argument("--duration", type=float, default=20.0, help="seconds measured per concurrency")
    p.add_argument("--warmup", type=float, default=5.0, help="seconds of load before each measurement")
    p.add_argument("--count", type=int, default=500_000, help="microdialogues scored offline")
    p.add_argument("--chunk", type=int, default=8192, help="microdialogues per offline call")
    p.add_argument("--workers", type=int, default=4, help="offline calls in flight")
    p.add_argument("--threads", type=int, default=None, help="offline ONNX Runtime intra-op threads")
    p.add_argument("--cpu-warmup-batch", type=int, default=8)
    p.add_argument("--ready-timeout", type=float, default=300.0)
    p.add_argument("--tritonserver", help="tritonserver binary (default: nvidia-pytriton's, else PATH)")
    p.add_argument("--dist-dir", type=Path, default=Path(tempfile.gettempdir()) / "hwm-triton-dist")
    p.add_argument("--seed", type=int, default=13)
    p.add_argument("--out", type=Path, required=True)
    a = p.parse_args()
    # A timeout's SIGTERM unwinds like Ctrl-C, so tritonserver (its own process group) is stopped too.
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    a.out.mkdir(parents=True, exist_ok=True)
    levels = [int(x) for x in a.concurrency.split(",")]
    dist = preflight(a.device, a.tritonserver, a.dist_dir)
    gpu = a.device != "cpu"
    root = str(Path(__file__).resolve().parent.parent) + "/"
    result = {"command": " ".join(["python", *(x.removeprefix(root) for x in sys.argv)]),
              "machine": triton_load.machine("gpu" if gpu else "gpu config on KIND_CPU (dry run)"),
              "device": a.device, "tritonserver": str(dist.server_bin),
              "targets": {"microdialogues_per_s": TARGET_MD_PER_S, "paper_microdialogues": PAPER_MICRODIALOGUES,
                          "paper_seconds": TARGET_PAPER_S}}
    out_json = a.out / "gpu_throughput.json"

    def save() -> None:
        out_json.write_text(json.dumps(result, indent=2) + "\n")

    with tempfile.TemporaryDirectory(prefix="hwm-gpu-throughput-") as tmp:
        run_dir = Path(tmp)
        repo = repository_for(a.device, a.instances, a.cpu_warmup_batch, run_dir / "models")
        config = parse_config((repo / MODEL_NAME / "configs" / "gpu.pbtxt").read_text())
        params = {k: v.string_value for k, v in config.parameters.items()}
        result["config"] = {"instances": a.instances, "max_batch_size": config.max_batch_size,
                            "max_queue_delay_us": config.dynamic_batching.max_queue_delay_microseconds,
                            "parameters": params}
        log = run_dir / "tritonserver.log"
        t0 = time.perf_counter()
        try:
            with triton_load.served("gpu", run_dir, repository=repo, dist=dist,
                                    ready_timeout_s=a.ready_timeout) as (url, metrics_url, _pid):
                result["triton"] = {"ready_s": round(time.perf_counter() - t0, 1), "batch": a.batch,
                                    "instances_loaded": served_providers(log)}
                print(f"tritonserver ready in {result['triton']['ready_s']} s: "
                      + "; ".join(result["triton"]["instances_loaded"]), flush=True)
                save()
                result["triton"]["results"] = triton_load.run_levels(url, metrics_url, levels, a.batch,
                                                                     a.duration, a.warmup, a.seed)
                save()
        finally:
            if log.exists():
                shutil.copy2(log, a.out / "tritonserver.log")
    best = max(r["microdialogues_per_s"] for r in result["triton"]["results"])
    result["triton"]["best_microdialogues_per_s"] = best
    print(f"offline: {a.count} microdialogues on {a.device}", flush=True)
    result["offline"] = score_offline(a.device, gpu, params, a.count, a.chunk, a.workers, a.threads, a.seed)
    result["targets"]["triton_met"] = best >= TARGET_MD_PER_S
    result["targets"]["offline_met"] = result["offline"]["projected_s_for_2_83M"] <= TARGET_PAPER_S
    save()
    print("\nconcurrency x batch   microdialogues/s   p50 / p95 / p99 ms   executed batch")
    for r in result["triton"]["results"]:
        lat = r["latency_ms"] or {}
        print(f"{r['concurrency']:>11} x {r['batch']:<5} {r['microdialogues_per_s']:>18,.1f}   "
              f"{lat.get('p50')} / {lat.get('p95')} / {lat.get('p99')}   {r.get('triton', {}).get('executed_batch_mean')}")
    off = result["offline"]
    print(f"offline: {off['scored']:,} microdialogues in {off['wall_s']} s = {off['microdialogues_per_s']:,.1f}/s "
          f"({off['providers'][0]}, fp16 {off['fp16']}); 2.83 million in {off['projected_s_for_2_83M']:,.1f} s")
    print(f"targets: >= {TARGET_MD_PER_S:,}/s through Triton: {result['targets']['triton_met']}; "
          f"2.83 million in <= {TARGET_PAPER_S} s: {result['targets']['offline_met']}  ({out_json})")


if __name__ == "__main__":
    main()
