"""Utterance -> homework-event latency through the real stack, N concurrent sessions at real pace.

Starts tansu, tritonserver (CPU, python backend) and one Faust worker on free ports, replays the demo
sessions cloned N times with staggered starts at real pace (speed 1) for --duration seconds, and
prints: latency p50/p95/p99 (from sending the utterance that completed a microdialogue to reading its
event), events/s, microdialogues/s, worker RSS, and where the time goes (worker-side histograms).

  python benchmarks/stream_latency.py --sessions 200 --duration 150
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np  # noqa: E402

from homework_monitor.deploy.local_stack import Ports, start_broker, start_triton, start_worker  # noqa: E402
from homework_monitor.deploy.services import ServiceStack  # noqa: E402
from homework_monitor.producers.replay import demo_sessions_dir, make_producer, read_sessions, replay, schedule  # noqa: E402
from homework_monitor.stream.config import Settings  # noqa: E402


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def histogram_mean(text: str, name: str) -> tuple[float, float]:
    from prometheus_client.parser import text_string_to_metric_families
    total = count = 0.0
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            if s.name == f"{name}_sum":
                total += s.value
            elif s.name == f"{name}_count":
                count += s.value
    return (total / count if count else float("nan")), count


def histogram_quantiles(text: str, name: str, qs=(0.5, 0.99)) -> dict[str, float]:
    """Upper bucket bounds holding each quantile of a worker histogram (worker-side view)."""
    from prometheus_client.parser import text_string_to_metric_families
    buckets = []
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            if s.name == f"{name}_bucket":
                buckets.append((float(s.labels["le"]), s.value))
    buckets.sort()
    total = buckets[-1][1] if buckets else 0
    return {f"p{int(q * 100)}_le_ms": next((le * 1000 for le, c in buckets if c >= q * total), float("nan"))
            for q in qs} if total else {}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sessions", type=int, default=200)
    p.add_argument("--duration", type=float, default=150.0, help="seconds of replay (bounded load)")
    p.add_argument("--stagger", type=float, default=None, help="default: spread starts over 30 s")
    p.add_argument("--speed", type=float, default=1.0)
    a = p.parse_args()
    base = read_sessions([demo_sessions_dir()])
    copies = -(-a.sessions // len(base))
    stagger = a.stagger if a.stagger is not None else 30.0 / a.sessions
    keep = {f"{s['session_id']}#{c}" for c in range(copies) for s in base}
    keep = set(sorted(keep, key=lambda k: int(k.split("#")[1]))[: a.sessions])
    msgs = [m for m in schedule(base, a.speed, stagger, copies) if m.at <= a.duration and m.key in keep]
    run_dir = Path(tempfile.mkdtemp(prefix="hwm-bench-"))
    log_dir = run_dir / "logs"
    ports = Ports.free()
    settings = Settings(run_dir=run_dir, app_id="hwm-bench")
    sent: dict[tuple[str, int], float] = {}
    events: list[tuple[float, dict]] = []
    with ServiceStack() as stack:
        settings = start_broker(stack, settings, ports, log_dir)
        settings = start_triton(stack, settings, ports, log_dir)
        start_worker(stack, settings, log_dir, "worker-1", ports.worker_metrics)
        worker_pid = stack["worker-1"].pid
        stop = threading.Event()

        def consume():
            from kafka import KafkaConsumer, TopicPartition
            c = KafkaConsumer(consumer_timeout_ms=200, auto_offset_reset="earliest",
                              fetch_max_wait_ms=settings.consumer_fetch_max_wait_ms,
                              **settings.kafka_client_kwargs())
            parts = [TopicPartition(settings.topics.homework_events, i) for i in range(settings.topic_partitions)]
            c.assign(parts)
            c.seek_to_beginning(*parts)
            while not stop.is_set():
                for msg in c:
                    events.append((time.time(), json.loads(msg.value)))
            c.close()

        th = threading.Thread(target=consume, daemon=True)
        th.start()
        rss_samples = []

        def on_sent(m, t):
            if m.seq is not None:
                sent[(m.key, m.seq)] = t
            if len(sent) % 200 == 0:
                rss_samples.append(rss_mb(worker_pid))

        t0 = time.time()
        counts = replay(msgs, make_producer(settings), settings.topics.utterances, progress=False, on_sent=on_sent)
        time.sleep(5)  # let the tail drain
        stop.set()
        th.join(5)
        wall = time.time() - t0
        import urllib.request
        metrics = urllib.request.urlopen(f"http://127.0.0.1:{ports.worker_metrics}/metrics").read().decode()
        triton = urllib.request.urlopen(f"http://127.0.0.1:{ports.triton_metrics}/metrics").read().decode()
        rss_samples.append(rss_mb(worker_pid))
    lat = np.array([(t - sent[(e["session_id"], e["trigger_seq"])]) * 1000 for t, e in events
                    if e.get("trigger_seq") is not None and (e["session_id"], e["trigger_seq"]) in sent])
    cls_mean, cls_n = histogram_mean(metrics, "hwm_classifier_request_seconds")
    bs_mean, _ = histogram_mean(metrics, "hwm_classifier_batch_size")
    q = [v for v in triton.splitlines() if v.startswith(("nv_inference_queue_duration_us{", "nv_inference_compute_infer_duration_us{", "nv_inference_request_success{", "nv_inference_exec_count{"))]
    tri = {line.split("{")[0]: float(line.split()[-1]) for line in q}
    req = tri.get("nv_inference_request_success", 0) or 1
    print(json.dumps({
        "command": " ".join(["python"] + sys.argv),
        "machine": f"{platform.node()}: {os.cpu_count()} cores, {platform.processor() or platform.machine()}, CPU tritonserver",
        "sessions": a.sessions, "duration_s": a.duration, "speed": a.speed, "messages": counts,
        "utterances_per_s": round(counts["utterance"] / wall, 1),
        "events": len(lat), "events_per_s": round(len(lat) / wall, 2),
        "events_worker_metric": sum(float(line.split()[-1]) for line in metrics.splitlines()
                                    if line.startswith("hwm_homework_events_total{")),
        "microdialogues": sum(float(line.split()[-1]) for line in metrics.splitlines()
                              if line.startswith("hwm_microdialogues_total ")),
        "latency_ms": {"p50": round(float(np.percentile(lat, 50)), 1), "p95": round(float(np.percentile(lat, 95)), 1),
                       "p99": round(float(np.percentile(lat, 99)), 1), "max": round(float(lat.max()), 1)} if len(lat) else None,
        "worker_side_latency": histogram_quantiles(metrics, "hwm_utterance_to_event_seconds"),
        "inbound_lag_kafka_to_worker": histogram_quantiles(metrics, "hwm_inbound_lag_seconds"),
        "worker_rss_mb": {"max": round(max(rss_samples), 1), "end": round(rss_samples[-1], 1)},
        "where_time_goes": {
            "classifier_call_ms_mean": round(cls_mean * 1000, 1), "classifier_calls": int(cls_n),
            "classifier_batch_mean": round(bs_mean, 2),
            "triton_queue_us_per_request": round(tri.get("nv_inference_queue_duration_us", 0) / req, 1),
            "triton_compute_us_per_request": round(tri.get("nv_inference_compute_infer_duration_us", 0) / req, 1),
            "triton_requests": int(req), "triton_executions": int(tri.get("nv_inference_exec_count", 0))},
    }, indent=2))


if __name__ == "__main__":
    main()
