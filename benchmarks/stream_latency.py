"""Utterance -> homework-event latency through the real stack, N concurrent sessions at real pace.

Starts tansu, tritonserver (CPU, python backend) and one Faust worker on free ports, replays the demo
sessions cloned N times with staggered starts at real pace (speed 1) for --duration seconds, and
prints: latency p50/p95/p99 (from sending the utterance that completed a microdialogue to reading its
event), events/s, microdialogues/s, Triton's mean batch, worker and tritonserver RSS (sampled over the
run), consumer lag (records behind, sampled), where the time goes (worker-side histograms), and the
accounting of every input (records on the utterances topic = the worker's outcomes, summed).

  python benchmarks/stream_latency.py --sessions 200 --duration 150
  python benchmarks/stream_latency.py --sessions 50,200,500,1000 --duration 180 --out benchmarks/results/sweep.json
  python benchmarks/stream_latency.py --sessions 200 --duration 600 --sustain --sample-every 10 --out benchmarks/results/soak.json
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

# Appended, not inserted: a PYTHONPATH layout of another revision (stream_path_ab.sh) must win.
sys.path.append(str(Path(__file__).resolve().parent.parent))

import numpy as np  # noqa: E402

from homework_monitor.deploy.local_stack import Ports, start_broker, start_triton, start_worker  # noqa: E402
from homework_monitor.deploy.services import ServiceStack  # noqa: E402
from homework_monitor.producers.replay import (  # noqa: E402
    demo_sessions_dir,
    make_producer,
    read_sessions,
    replay,
    schedule,
    sustained,
)
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


def tree_rss_mb(pid: int) -> float:
    """RSS of a process and its children (tritonserver + its python-backend stub)."""
    total = rss_mb(pid)
    kids = set()
    for task in Path(f"/proc/{pid}/task").glob("*"):  # a child belongs to the thread that started it
        try:
            kids |= set((task / "children").read_text().split())
        except OSError:
            continue
    return total + sum(tree_rss_mb(int(k)) for k in kids)


def counter_sum(metrics: str, prefix: str) -> float:
    return sum(float(line.split()[-1]) for line in metrics.splitlines() if line.startswith(prefix))


def outcomes(metrics: str) -> dict[str, float]:
    return {line.split('result="')[1].split('"')[0]: float(line.split()[-1])
            for line in metrics.splitlines() if line.startswith("hwm_utterances_total{")}


class Sampler(threading.Thread):
    """Every ``every`` seconds: worker RSS, tritonserver RSS (with its stub) and the consumer lag in
    records: inputs on the topic so far (the replay's sends plus the worker's own checks) minus inputs
    the worker has given an outcome."""

    def __init__(self, metrics_url: str, worker_pid: int, triton_pid: int, every: float, sent_so_far):
        super().__init__(daemon=True)
        self.metrics_url, self.worker_pid, self.triton_pid, self.every = metrics_url, worker_pid, triton_pid, every
        self.sent_so_far = sent_so_far
        self.samples: list[dict] = []
        self.stop = threading.Event()

    def lag(self) -> int | None:
        import urllib.request
        try:
            text = urllib.request.urlopen(self.metrics_url, timeout=5).read().decode()
        except OSError:  # a missed sample, not a failed run
            return None
        into_topic = self.sent_so_far() + counter_sum(text, "hwm_checks_sent_total ")
        return int(into_topic - sum(outcomes(text).values()))

    def run(self) -> None:
        t0 = time.time()
        while not self.stop.wait(self.every):
            self.samples.append({"t_s": round(time.time() - t0, 1), "worker_rss_mb": round(rss_mb(self.worker_pid), 1),
                                 "triton_rss_mb": round(tree_rss_mb(self.triton_pid), 1), "lag_records": self.lag()})


def topic_records(settings) -> int:
    """Records on the utterances topic (the replay's plus the worker's own silence checks), counted by
    reading them all: tansu's ListOffsets can understate the end of a multi-record batch."""
    from kafka import KafkaConsumer, TopicPartition
    c = KafkaConsumer(consumer_timeout_ms=1500, fetch_max_wait_ms=20, **settings.kafka_client_kwargs())
    parts = [TopicPartition(settings.topics.utterances, i) for i in range(settings.topic_partitions)]
    c.assign(parts)
    c.seek_to_beginning(*parts)
    n = sum(1 for _ in c)
    c.close()
    return n


def run_once(n_sessions: int, a: argparse.Namespace) -> dict:
    base = read_sessions([demo_sessions_dir()])
    stagger = a.stagger if a.stagger is not None else 30.0 / n_sessions
    if a.sustain:  # n_sessions live all the time: each ended session is followed by a new one
        msgs = sustained(base, n_sessions, a.duration, a.speed, stagger)
    else:
        copies = -(-n_sessions // len(base))
        keep = {f"{s['session_id']}#{c}" for c in range(copies) for s in base}
        keep = set(sorted(keep, key=lambda k: int(k.split("#")[1]))[:n_sessions])
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
        n_sent = [0]
        sampler = Sampler(f"http://127.0.0.1:{ports.worker_metrics}/metrics", worker_pid,
                          stack["tritonserver"].pid, a.sample_every, lambda: n_sent[0])
        sampler.start()

        def on_sent(m, t):
            n_sent[0] += 1
            if m.seq is not None:
                sent[(m.key, m.seq)] = t

        t0 = time.time()
        counts = replay(msgs, make_producer(settings), settings.topics.utterances, progress=False, on_sent=on_sent)
        replay_s = time.time() - t0
        import urllib.request

        def worker_metrics() -> str:
            return urllib.request.urlopen(f"http://127.0.0.1:{ports.worker_metrics}/metrics").read().decode()

        # Drain: every record on the topic has an outcome (or the drain times out, which the output shows).
        deadline = time.time() + a.drain_timeout
        time.sleep(2)
        while time.time() < deadline and sum(outcomes(worker_metrics()).values()) < topic_records(settings):
            time.sleep(1)
        time.sleep(2)  # the last events reach the reader
        stop.set()
        th.join(5)
        sampler.stop.set()
        sampler.join(15)
        metrics = worker_metrics()
        records = topic_records(settings)
        triton = urllib.request.urlopen(f"http://127.0.0.1:{ports.triton_metrics}/metrics").read().decode()
    lat = np.array([(t - sent[(e["session_id"], e["trigger_seq"])]) * 1000 for t, e in events
                    if e.get("trigger_seq") is not None and (e["session_id"], e["trigger_seq"]) in sent])
    cls_mean, cls_n = histogram_mean(metrics, "hwm_classifier_request_seconds")
    bs_mean, _ = histogram_mean(metrics, "hwm_classifier_batch_size")
    q = [v for v in triton.splitlines() if v.startswith((
        "nv_inference_queue_duration_us{", "nv_inference_compute_infer_duration_us{", "nv_inference_request_success{",
        "nv_inference_exec_count{", "nv_inference_count{"))]
    tri = {line.split("{")[0]: float(line.split()[-1]) for line in q}
    req = tri.get("nv_inference_request_success", 0) or 1
    got = outcomes(metrics)
    samples = sampler.samples
    load = os.getloadavg()
    return {
        "command": " ".join(["python", "benchmarks/stream_latency.py", *sys.argv[1:]]),
        "machine": f"{platform.node()}: {os.cpu_count()} cores, {platform.processor() or platform.machine()}, "
                   f"CPU tritonserver, load at end {load[0]:.2f}/{load[1]:.2f}/{load[2]:.2f}",
        "sessions": n_sessions, "sustained": a.sustain, "session_ids": len({m.key for m in msgs}),
        "duration_s": a.duration, "speed": a.speed, "messages": counts,
        "utterances_per_s": round(counts["utterance"] / replay_s, 1),
        "events": len(lat), "events_per_s": round(len(lat) / replay_s, 2),
        "microdialogues": counter_sum(metrics, "hwm_microdialogues_total "),
        "microdialogues_per_s": round(counter_sum(metrics, "hwm_microdialogues_total ") / replay_s, 1),
        "latency_ms": {"p50": round(float(np.percentile(lat, 50)), 1), "p95": round(float(np.percentile(lat, 95)), 1),
                       "p99": round(float(np.percentile(lat, 99)), 1), "max": round(float(lat.max()), 1)} if len(lat) else None,
        "worker_side_latency": histogram_quantiles(metrics, "hwm_utterance_to_event_seconds"),
        "inbound_lag_kafka_to_worker": histogram_quantiles(metrics, "hwm_inbound_lag_seconds"),
        # inputs on the topic not yet given an outcome by the worker, sampled
        "consumer_lag_records": {"max": max((s["lag_records"] or 0) for s in samples) if samples else None,
                                 "last": next((s["lag_records"] for s in reversed(samples)
                                               if s["lag_records"] is not None), None)},
        "worker_rss_mb": {"first": samples[0]["worker_rss_mb"], "max": max(s["worker_rss_mb"] for s in samples),
                          "end": samples[-1]["worker_rss_mb"]} if samples else None,
        "triton_rss_mb": {"first": samples[0]["triton_rss_mb"], "max": max(s["triton_rss_mb"] for s in samples),
                          "end": samples[-1]["triton_rss_mb"]} if samples else None,
        # in = records on the utterances topic (replayed messages + the worker's own silence checks);
        # out = the worker's outcomes: applied ("ok"), control, skipped (duplicate/late/replayed/no_consent),
        # dead_letter. Equal when nothing was lost.
        "accounting": {"in": records, "sent": n_sent[0], "checks_sent": counter_sum(metrics, "hwm_checks_sent_total "),
                       "outcomes": got, "accounted": sum(got.values()),
                       "balanced": sum(got.values()) == records},
        "where_time_goes": {
            "classifier_call_ms_mean": round(cls_mean * 1000, 1), "classifier_calls": int(cls_n),
            "classifier_batch_mean": round(bs_mean, 2),
            "triton_batch_mean": round(tri.get("nv_inference_count", 0) / max(tri.get("nv_inference_exec_count", 0), 1), 2),
            "triton_queue_us_per_request": round(tri.get("nv_inference_queue_duration_us", 0) / req, 1),
            "triton_compute_us_per_request": round(tri.get("nv_inference_compute_infer_duration_us", 0) / req, 1),
            "triton_requests": int(req), "triton_executions": int(tri.get("nv_inference_exec_count", 0))},
        "samples": samples,
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sessions", default="200", help="concurrent sessions; a comma list runs a sweep")
    p.add_argument("--duration", type=float, default=150.0, help="seconds of replay (bounded load)")
    p.add_argument("--stagger", type=float, default=None, help="default: spread starts over 30 s")
    p.add_argument("--speed", type=float, default=1.0)
    p.add_argument("--sustain", action="store_true",
                   help="keep N sessions live for the whole duration (a new session when one ends): soak runs")
    p.add_argument("--sample-every", type=float, default=5.0, help="seconds between RSS / lag samples")
    p.add_argument("--drain-timeout", type=float, default=120.0)
    p.add_argument("--out", type=Path, default=None, help="also write the results (a JSON list) here")
    a = p.parse_args()
    results = []
    for n in [int(x) for x in a.sessions.split(",")]:
        results.append(run_once(n, a))
        print(json.dumps({k: v for k, v in results[-1].items() if k != "samples"}, indent=2), flush=True)
        if a.out:
            a.out.parent.mkdir(parents=True, exist_ok=True)
            a.out.write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
