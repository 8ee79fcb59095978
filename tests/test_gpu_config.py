"""The GPU config (configs/gpu.pbtxt) is sized for throughput, model.py reads what it sets, and the
benchmark's CPU dry run changes nothing but the device.

Configs are parsed with Triton's own schema (tritonclient's ``model_config_pb2``); model.py is loaded
from its file with a stand-in for the python backend's ``triton_python_backend_utils`` (only in a stub).
"""
from __future__ import annotations

import importlib.util
import json
import sys
import types
from pathlib import Path

import pytest
from google.protobuf import json_format, text_format
from tritonclient.grpc import model_config_pb2

ROOT = Path(__file__).resolve().parents[1]
MODEL_DIR = ROOT / "triton_models" / "homework_classifier"
GPU_CONFIG = MODEL_DIR / "configs" / "gpu.pbtxt"
KIND_GPU, KIND_CPU = model_config_pb2.ModelInstanceGroup.KIND_GPU, model_config_pb2.ModelInstanceGroup.KIND_CPU


def _config(text: str):
    return text_format.Parse(text, model_config_pb2.ModelConfig())


def _params(config) -> dict[str, str]:
    return {k: v.string_value for k, v in config.parameters.items()}


def _module(name: str, path: Path):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_gpu_config_is_sized_for_throughput():
    config = _config(GPU_CONFIG.read_text())
    params = _params(config)
    assert 512 <= config.max_batch_size <= 1024
    assert 0 < config.dynamic_batching.max_queue_delay_microseconds <= 5000
    assert [g.kind for g in config.instance_group] == [KIND_GPU] and config.instance_group[0].count >= 1
    assert params["fp16"] == "true" and params["execution_provider"] in ("cuda", "tensorrt")
    # Buckets bigger than the CPU config's: the GPU wants hundreds of sequences per call.
    cpu = _params(_config((MODEL_DIR / "config.pbtxt").read_text()))
    assert int(params["max_bucket"]) >= 4 * int(cpu["max_bucket"])
    assert params["classes"] == cpu["classes"]


class _Recorder:
    """Stands in for OnnxClassifier: records how model.py builds it."""
    calls: list = []

    def __init__(self, artifact, **kwargs):
        self.calls.append({"artifact": Path(artifact), **kwargs})
        self.encoder = types.SimpleNamespace(providers=("CUDAExecutionProvider", "CPUExecutionProvider"),
                                             max_bucket=kwargs["max_bucket"])


@pytest.mark.parametrize("kind, device_id, expected_device, expected_fp16", [
    ("GPU", "1", "cuda:1", True),  # the instance's GPU, fp16 from the config
    ("CPU", "0", "cpu", False),  # the same config on a CPU instance (the dry run): no fp16
])
def test_model_py_builds_the_runtime_from_the_gpu_config(monkeypatch, kind, device_id, expected_device, expected_fp16):
    logged = []
    pb_utils = types.SimpleNamespace(Logger=types.SimpleNamespace(log_info=logged.append))
    monkeypatch.setitem(sys.modules, "triton_python_backend_utils", pb_utils)
    model = _module("hwm_model_py_under_test", MODEL_DIR / "1" / "model.py")
    _Recorder.calls = []
    monkeypatch.setattr(model, "OnnxClassifier", _Recorder)
    config = _config(GPU_CONFIG.read_text())
    args = {"model_config": json.dumps(json_format.MessageToDict(config, preserving_proto_field_name=True)),
            "model_repository": str(MODEL_DIR), "model_version": "1", "model_name": config.name,
            "model_instance_kind": kind, "model_instance_device_id": device_id,
            "model_instance_name": f"{config.name}_0_0"}
    instance = model.TritonPythonModel()
    instance.initialize(args)
    (call,) = _Recorder.calls
    params = _params(config)
    assert call == {"artifact": MODEL_DIR / "1" / "artifact", "device": expected_device, "fp16": expected_fp16,
                    "threads": int(params["threads"]), "max_bucket": int(params["max_bucket"]),
                    "max_waste": float(params["max_waste"])}
    assert instance.max_batch == config.max_batch_size
    assert expected_device in logged[0] and "CUDAExecutionProvider" in logged[0]


@pytest.fixture(scope="module")
def gpu_throughput():
    return _module("hwm_gpu_throughput_under_test", ROOT / "benchmarks" / "gpu_throughput.py")


def test_the_dry_run_config_differs_from_the_gpu_config_only_in_device_and_counts(gpu_throughput):
    original = _config(GPU_CONFIG.read_text())
    dry = _config(gpu_throughput.gpu_config_for(GPU_CONFIG.read_text(), "cpu", instances=1, cpu_warmup_batch=8))
    assert [(g.kind, g.count, list(g.gpus)) for g in dry.instance_group] == [(KIND_CPU, 1, [])]
    assert [s.batch_size for s in dry.model_warmup] == [min(s.batch_size, 8) for s in original.model_warmup]
    assert _params(dry) == _params(original)
    for config in (dry, original):  # the rest, compared as one message
        del config.instance_group[:]
        del config.model_warmup[:]
    assert dry == original


def test_the_gpu_run_config_takes_the_instances_device_and_provider(gpu_throughput):
    run = _config(gpu_throughput.gpu_config_for(GPU_CONFIG.read_text(), "tensorrt:1", instances=6, cpu_warmup_batch=8))
    assert [(g.kind, g.count, list(g.gpus)) for g in run.instance_group] == [(KIND_GPU, 6, [1])]
    assert _params(run)["execution_provider"] == "tensorrt"
    original = _config(GPU_CONFIG.read_text())
    assert [s.batch_size for s in run.model_warmup] == [s.batch_size for s in original.model_warmup]


def _installed_server(root: Path) -> Path:
    """The layout of NVIDIA's container: bin/tritonserver with backends/ beside bin/."""
    server = root / "bin" / "tritonserver"
    server.parent.mkdir(parents=True)
    server.write_text("#!/bin/sh\n")
    server.chmod(0o755)
    (root / "backends" / "python").mkdir(parents=True)
    return server


def test_an_installed_tritonserver_runs_with_the_package_on_pythonpath(tmp_path, monkeypatch):
    from homework_monitor.deploy.triton_runtime import PACKAGE_PARENT, installed_triton_dist, tritonserver_command
    monkeypatch.setenv("PYTHONPATH", "/elsewhere")
    dist = installed_triton_dist(_installed_server(tmp_path / "opt"))
    assert (dist.server_bin, dist.backend_dir) == (tmp_path / "opt" / "bin" / "tritonserver", tmp_path / "opt" / "backends")
    assert dist.env["PYTHONPATH"].split(":") == [str(PACKAGE_PARENT), "/elsewhere"]
    cmd = tritonserver_command(dist, tmp_path / "models", extra_args=["--model-config-name=gpu"])
    assert f"--backend-directory={tmp_path / 'opt' / 'backends'}" in cmd and cmd[-1] == "--model-config-name=gpu"
    with pytest.raises(FileNotFoundError, match="no python backend"):
        installed_triton_dist(tmp_path / "bare" / "bin" / "tritonserver")


def test_without_the_pytriton_bundle_the_tritonserver_on_path_is_used(tmp_path, monkeypatch):
    from homework_monitor.deploy import triton_runtime

    def no_bundle(dist_dir):
        raise FileNotFoundError("pytriton is not installed")
    monkeypatch.setattr(triton_runtime, "prepare_triton_dist", no_bundle)
    monkeypatch.setenv("PATH", str(tmp_path / "none"))
    with pytest.raises(FileNotFoundError, match="no tritonserver on PATH"):
        triton_runtime.triton_dist(tmp_path / "dist")
    server = _installed_server(tmp_path / "opt")
    monkeypatch.setenv("PATH", str(server.parent))
    assert triton_runtime.triton_dist(tmp_path / "dist").server_bin == server
