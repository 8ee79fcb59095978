"""First-request latency of the served model with and without Triton's ``model_warmup``.

    python benchmarks/triton_warmup.py [--config cpu|gpu] [--runs 3]

For each variant it builds a throwaway model repository (the served model's version folder and
``warmup/`` samples, plus the chosen config.pbtxt as it is or without its ``model_warmup`` block), starts the bundled tritonserver on free loopback ports, and times: start ->
ready, the first inference (one microdialogue), and the median of the next ten.
``--config gpu`` needs a GPU and a tritonserver built with CUDA.
"""
from __future__ import annotations

import argparse
import json
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from homework_monitor.contract import Example
from homework_monitor.deploy.services import free_port
from homework_monitor.deploy.triton_runtime import prepare_triton_dist, tritonserver_command, wait_until_ready
from homework_monitor.stream.classifiers import triton_inputs
from homework_monitor.stream.config import Settings

MODEL = "homework_classifier"


def without_warmup(config: str) -> str:
    """The config with its ``model_warmup [...]`` block (and the comment lines just above it) removed."""
    start = config.index("model_warmup [")
    depth, i = 0, config.index("[", start)
    while True:
        depth += {"[": 1, "]": -1}.get(config[i], 0)
        if depth == 0:
            break
        i += 1
    head = config[:start].rstrip("\n").split("\n")
    while head and head[-1].startswith("#"):
        head.pop()
    return "\n".join(head) + "\n" + config[i + 1:].lstrip("\n")


def config_text(source: Path, which: str, warm: bool) -> str:
    config = (source / "configs" / "gpu.pbtxt" if which == "gpu" else source / "config.pbtxt").read_text()
    return config if warm else without_warmup(config)


def measure(settings: Settings, which: str, warm: bool) -> dict:
    source = settings.model_repository / MODEL
    with tempfile.TemporaryDirectory() as tmp:
        model = Path(tmp) / MODEL
        model.mkdir()
        (model / "1").symlink_to(source / "1", target_is_directory=True)
        (model / "warmup").symlink_to(source / "warmup", target_is_directory=True)
        (model / "config.pbtxt").write_text(config_text(source, which, warm))
        dist = prepare_triton_dist(settings.triton_dist_dir)
        http, grpc, metrics = free_port(), free_port(), free_port()
        log = Path(tmp) / "triton.log"
        with open(log, "wb") as out:
            t0 = time.monotonic()
            proc = subprocess.Popen(tritonserver_command(dist, Path(tmp), http, grpc, metrics), env=dist.env,
                                    stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            wait_until_ready(http, 300, log_path=log, is_alive=lambda: proc.poll() is None)
            ready_s = time.monotonic() - t0
            import tritonclient.grpc as grpcclient
            client = grpcclient.InferenceServerClient(f"127.0.0.1:{grpc}")
            example = Example(therapist="Could you try writing down one worry each evening this week?",
                              client="I think I can manage that.", context=(("client", "Evenings are busy."),))
            inputs = []
            for name, arr in triton_inputs([example]).items():
                t = grpcclient.InferInput(name, list(arr.shape), "BYTES")
                t.set_data_from_numpy(arr)
                inputs.append(t)
            times = []
            for _ in range(11):
                t1 = time.perf_counter()
                client.infer(MODEL, inputs)
                times.append(time.perf_counter() - t1)
            return {"config": which, "warmup": warm, "start_to_ready_s": round(ready_s, 2),
                    "first_request_ms": round(times[0] * 1000, 1),
                    "next_10_median_ms": round(statistics.median(times[1:]) * 1000, 1)}
        finally:
            proc.terminate()
            proc.wait(30)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", choices=["cpu", "gpu"], default="cpu")
    p.add_argument("--runs", type=int, default=3)
    a = p.parse_args(argv)
    settings = Settings()
    print(json.dumps({"command": " ".join([Path(sys.argv[0]).name, *sys.argv[1:]]), "machine": platform.node(),
                      "cpus": __import__("os").cpu_count()}))
    for _ in range(a.runs):
        for warm in (False, True):
            print(json.dumps(measure(settings, a.config, warm)), flush=True)


if __name__ == "__main__":
    main()
