"""Exposure on the real local stack: who can reach Triton, what the services see, what the logs say.

One stack (tansu, tritonserver, a Faust worker) starts with planted secrets in the environment; the
tests read the listening sockets from /proc/net, the services' environments from /proc/<pid>/environ,
call Triton's admin APIs, run ``homework-monitor topics`` with SASL configured, and send poison input
carrying a PHI marker, then grep every log and metrics page for the marker.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from homework_monitor.deploy.local_stack import Ports, start_broker, start_triton, start_worker
from homework_monitor.deploy.services import ServiceStack
from homework_monitor.stream.config import Settings

from .conftest import LiveStack, consume, scrape

pytestmark = pytest.mark.integration

PASSWORD = "pw-PLANTED-b41c"  # the broker password the services must not see
TOKEN = "tok-PLANTED-9e2d"
MARKER = "PHI-MARKER-7f3a"  # stands in for transcript text
NO_PROXY = urllib.request.build_opener(urllib.request.ProxyHandler({}))


@pytest.fixture(scope="module")
def stack(tmp_path_factory) -> LiveStack:
    planted = {"HWM_KAFKA_SASL_PASSWORD": PASSWORD, "HWM_OPS_TOKEN": TOKEN}
    saved = {k: os.environ.get(k) for k in planted}
    os.environ.update(planted)  # as an operator's shell would have them; the protocol stays PLAINTEXT
    run_dir = tmp_path_factory.mktemp("exposure")
    ports = Ports.free()
    settings = Settings(run_dir=run_dir, silence_flush_s=3.0, app_id=f"hwm-exp-{ports.kafka}")
    try:
        with ServiceStack() as services:
            settings = start_broker(services, settings, ports, run_dir / "logs")
            settings = start_triton(services, settings, ports, run_dir / "logs")
            metrics_port = start_worker(services, settings, run_dir / "logs", "worker-1", ports.worker_metrics)
            yield LiveStack(settings, ports, run_dir / "logs", services, metrics_port)
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def _listening(port: int) -> set[str]:
    """Local addresses with a socket in LISTEN state on ``port`` (IPv4 and IPv6 tables)."""
    found = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            local, state = line.split()[1], line.split()[3]
            addr, hexport = local.rsplit(":", 1)
            if state == "0A" and int(hexport, 16) == port:
                found.add(addr)
    return found


LOOPBACK = {"0100007F",  # 127.0.0.1
            "0000000000000000FFFF00000100007F",  # ::ffff:127.0.0.1
            "00000000000000000000000001000000"}  # ::1


def test_triton_http_grpc_and_metrics_listen_on_loopback_only(stack):
    p = stack.ports
    for port in (p.triton_http, p.triton_grpc, p.triton_metrics):
        addrs = _listening(port)
        assert addrs, f"nothing listens on {port}"
        assert addrs <= LOOPBACK, f"port {port} listens on {addrs}"


def _call(port: int, path: str, body: dict | None = None) -> int:
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(f"http://127.0.0.1:{port}{path}", data=data,
                                 method="POST" if data is not None else "GET")
    try:
        with NO_PROXY.open(req, timeout=5) as r:
            return r.status
    except urllib.error.HTTPError as exc:
        return exc.code


def test_triton_admin_apis_are_refused(stack):
    http = stack.ports.triton_http
    assert _call(http, "/v2/logging", {"log_verbose_level": 1, "log_info": True}) == 403
    assert _call(http, "/v2/logging") == 403
    assert _call(http, "/v2/trace/setting", {"trace_level": ["TIMESTAMPS"]}) == 403
    assert _call(http, "/v2/repository/models/homework_classifier/unload", {}) == 403
    assert _call(http, "/v2/repository/index", {}) == 403
    import tritonclient.grpc as grpcclient
    from tritonclient.utils import InferenceServerException
    client = grpcclient.InferenceServerClient(f"127.0.0.1:{stack.ports.triton_grpc}")
    with pytest.raises(InferenceServerException, match="restricted"):
        client.update_log_settings({"log_verbose_level": 1})
    with pytest.raises(InferenceServerException, match="restricted"):
        client.unload_model("homework_classifier")
    # What the worker uses still answers, and the model is still loaded.
    assert client.is_model_ready("homework_classifier")
    assert _call(http, "/v2/models/homework_classifier/config") == 200


def _group(pgid: int) -> dict[int, str]:
    """pid -> environ of every process in the process group (a service and its children)."""
    out = {}
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            stat = (proc / "stat").read_text()
            if int(stat.rsplit(")", 1)[1].split()[2]) == pgid:
                out[int(proc.name)] = (proc / "environ").read_bytes().decode(errors="replace")
        except (OSError, ValueError, IndexError):
            continue
    return out


def test_broker_triton_and_its_backend_never_see_the_secrets(stack):
    tansu = _group(stack.services["tansu"].pid)
    triton = _group(stack.services["tritonserver"].pid)
    worker = _group(stack.services["worker-1"].pid)
    assert tansu and len(triton) >= 2  # tritonserver and its Python backend stub
    for pid, env in {**tansu, **triton}.items():
        assert PASSWORD not in env and TOKEN not in env, f"pid {pid}"
    assert any(PASSWORD in env for env in worker.values())  # the worker does get what it needs


def test_topics_command_applies_the_security_settings(stack):
    """``homework-monitor topics`` with SASL configured must speak SASL (tansu has none: it fails)."""
    from kafka import KafkaAdminClient
    env = {**os.environ, "HWM_KAFKA_BOOTSTRAP": stack.settings.kafka_bootstrap, "HWM_APP_ID": "sec-check",
           "HWM_TOPIC_UTTERANCES": "sec-utterances", "HWM_KAFKA_SECURITY_PROTOCOL": "SASL_PLAINTEXT",
           "HWM_KAFKA_SASL_USERNAME": "svc"}
    cmd = [sys.executable, "-m", "homework_monitor.cli", "topics"]
    sasl = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120)
    admin = KafkaAdminClient(**stack.settings.kafka_client_kwargs())
    try:
        assert sasl.returncode != 0
        assert "sec-utterances" not in admin.list_topics()  # it did not fall back to plaintext
        assert PASSWORD not in sasl.stderr + sasl.stdout
        plain = subprocess.run(cmd, env={**env, "HWM_KAFKA_SECURITY_PROTOCOL": "PLAINTEXT"},
                               capture_output=True, text=True, timeout=120)
        assert plain.returncode == 0, plain.stderr[-2000:]
        assert {"sec-utterances", "sec-check-sessions-changelog"} <= set(admin.list_topics())
    finally:
        admin.close()


def _poison(sid: str) -> list[bytes]:
    """Bad input whose error paths used to carry the text into exceptions, each with the marker."""
    text = f"{MARKER} so this week write down each worry"
    head = json.dumps({"session_id": f"{sid}-n", "seq": 0, "speaker": "client", "text": text})[:-1]
    nested = head + ', "x": ' + "[" * 50_000 + "]" * 50_000 + "}"
    return [
        b'{"session_id": "' + sid.encode() + b'-m", "seq": 0, "speaker": "client", "text": "' + text.encode(),
        json.dumps({"session_id": f"{sid}-u", "seq": 0, "speaker": MARKER, "text": text}).encode(),
        json.dumps({"session_id": f"{sid}-s", "seq": text, "speaker": "client", "text": text}).encode(),
        json.dumps({"session_id": f"{sid}-o", "seq": 0, "speaker": "client", "text": (text + " ") * 200}).encode(),
        nested.encode(),
        # A lone surrogate: valid JSON, a str Python cannot encode. The client's reply completes the
        # microdialogue, so it goes to the classifier at once (whose client crashed on it).
        *_session(f"{sid}-x", therapist=text + "\ud800"),
    ]


def _session(sid: str, therapist: str = f"{MARKER} this week please practise the breathing exercise") -> list[bytes]:
    lines = [("therapist", therapist), ("client", f"{MARKER} okay, I can try that before work")]
    msgs = [{"type": "session_start", "session_id": sid}]
    msgs += [{"type": "utterance", "session_id": sid, "seq": i, "speaker": sp, "text": tx, "start_s": float(i)}
             for i, (sp, tx) in enumerate(lines)]
    msgs.append({"type": "session_end", "session_id": sid, "n_utterances": len(lines)})
    return [json.dumps(m).encode() for m in msgs]


def test_phi_markers_never_reach_logs_or_metrics(stack):
    """Last in this file: before the fixes the poison crashed the agent."""
    from homework_monitor.producers.replay import make_producer
    s = stack.settings
    producer = make_producer(s)
    # One poison message per batch (a pause between them), so one crash cannot hide the next one's log.
    for payload in _poison("phi-bad"):
        producer.send(s.topics.utterances, key=b"phi-bad", value=payload)
        producer.flush()
        time.sleep(0.5)
    for payload in _session("phi-ok"):
        producer.send(s.topics.utterances, key=b"phi-ok", value=payload)
    producer.flush()
    producer.close()
    t = s.topics
    consume(s, [t.session_summaries, t.dead_letter], timeout_s=45,
            until=lambda r: any(x.get("session_id") == "phi-ok" for x in r[t.session_summaries]))
    time.sleep(1.0)  # let the worker write its log lines for the last batch
    pages = {"worker /metrics": scrape(stack.worker_metrics_port),
             "triton /metrics": scrape(stack.ports.triton_metrics)}
    logs = {p.name: p.read_text(errors="replace") for p in stack.log_dir.iterdir() if p.is_file()}
    assert {"tansu.log", "tritonserver.log", "worker-1.log"} <= set(logs)
    assert logs["worker-1.log"].strip()  # the worker did log (a crash line, dead letters, or both)
    leaks = [name for name, text in {**logs, **pages}.items() if MARKER in text]
    assert not leaks, f"PHI marker in {leaks}"


def test_container_entrypoint_disables_the_admin_apis(tmp_path):
    """deploy/triton/serve.sh, as the images run it, on the bundled tritonserver (CPU config)."""
    from homework_monitor.deploy.services import ManagedProcess, free_port
    from homework_monitor.deploy.triton_runtime import prepare_triton_dist, wait_until_ready
    s = Settings()
    dist = prepare_triton_dist(s.triton_dist_dir)
    http, grpc, metrics = free_port(), free_port(), free_port()
    env = {**dist.env, "PATH": f"{dist.server_bin.parent}{os.pathsep}{dist.env['PATH']}",
           "TRITON_MODEL_REPOSITORY": str(s.model_repository)}
    script = Path(__file__).resolve().parents[2] / "deploy" / "triton" / "serve.sh"
    # No GPU here: a later --model-config-name wins, and a missing configs/cpu.pbtxt means config.pbtxt.
    proc = ManagedProcess("serve.sh", ["sh", str(script), f"--backend-directory={dist.backend_dir}",
                                       f"--cache-directory={dist.backend_dir.parent / 'caches'}",
                                       "--model-config-name=cpu", f"--http-port={http}", f"--grpc-port={grpc}",
                                       f"--metrics-port={metrics}", "--http-address=127.0.0.1",
                                       "--grpc-address=127.0.0.1", "--metrics-address=127.0.0.1"],
                          tmp_path / "serve.log", env=env, cwd=tmp_path)
    proc.start()
    try:
        wait_until_ready(http, 120, log_path=proc.log_path, is_alive=lambda: proc.is_running)
        assert _call(http, "/v2/logging", {"log_verbose_level": 1}) == 403
        assert _call(http, "/v2/repository/models/homework_classifier/unload", {}) == 403
        assert _call(http, "/v2/models/homework_classifier/ready") == 200
        args = Path(f"/proc/{proc.pid}/cmdline").read_bytes().split(b"\0")
        assert b"--model-config-name=gpu" in args and b"--load-model=homework_classifier" in args
        assert b"--model-control-mode=explicit" in args
    finally:
        proc.stop()
