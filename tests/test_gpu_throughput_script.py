"""benchmarks/gpu_throughput.sh end to end on the CPU: the GPU config's code path (KIND_CPU), the real
bundled tritonserver, the gRPC load generator and the offline scorer, with small counts -- so the script
works the first time it meets a GPU. About a minute on two cores.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "benchmarks" / "gpu_throughput.sh"
COUNT = 40


def _run(tmp_path: Path, **env: str) -> subprocess.CompletedProcess:
    full = {**os.environ, "PYTHON": sys.executable, "OUT": str(tmp_path / "out"), "TIME_LIMIT_S": "240", **env}
    return subprocess.run(["bash", str(SCRIPT)], env=full, capture_output=True, text=True, timeout=300)


@pytest.mark.integration
def test_the_script_serves_the_gpu_config_drives_it_and_scores_offline_on_cpu(tmp_path):
    res = _run(tmp_path, DEVICE="cpu", CONCURRENCY="1,3", BATCH="2", DURATION="3", WARMUP="1",
               COUNT=str(COUNT), CHUNK="16")
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    out = tmp_path / "out"
    result = json.loads((out / "gpu_throughput.json").read_text())
    rows = result["triton"]["results"]
    assert [r["concurrency"] for r in rows] == [1, 3]
    for r in rows:
        assert r["batch"] == 2 and r["requests"] > 0 and r["microdialogues_per_s"] > 0
        assert 0 < r["latency_ms"]["p50"] <= r["latency_ms"]["p95"] <= r["latency_ms"]["p99"]
    # The served model really was the GPU config's, on a CPU instance.
    assert result["config"]["max_batch_size"] == 1024 and result["config"]["parameters"]["fp16"] == "true"
    (loaded,) = result["triton"]["instances_loaded"]
    assert "device cpu" in loaded and "CPUExecutionProvider" in loaded and "max_bucket 512" in loaded
    offline = result["offline"]
    assert offline["scored"] == COUNT and offline["microdialogues_per_s"] > 0
    assert offline["projected_s_for_2_83M"] == pytest.approx(2_830_000 / offline["microdialogues_per_s"], rel=1e-3)
    assert "2.83 million in" in res.stdout and (out / "gpu_throughput.log").read_text() == res.stdout
    assert "successfully loaded 'homework_classifier'" in (out / "tritonserver.log").read_text()


def test_a_missing_gpu_runtime_stops_the_script_before_anything_starts(tmp_path):
    import onnxruntime as ort
    if "CUDAExecutionProvider" in ort.get_available_providers():
        pytest.skip("this onnxruntime has CUDA")
    res = _run(tmp_path, DEVICE="cuda")
    assert res.returncode != 0
    assert "preflight failed, nothing started" in res.stdout and "onnxruntime-gpu" in res.stdout
    assert not (tmp_path / "out" / "gpu_throughput.json").exists()
