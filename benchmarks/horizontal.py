"""Throughput with 1, 2, 3... workers in one consumer group: the same max-rate replay for each count.

One tritonserver (``--triton-instances`` model instances, CPU config) serves every run; each run gets a
fresh tansu broker with ``--partitions`` partitions and ``HWM_LOCAL_WORKERS`` workers
(``deploy.local_stack.start_workers``). The demo sessions cloned ``--copies`` times are sent at once
(max rate: every message as fast as the producer goes) with their client ids dropped, so no follow-up
session waits for its predecessor's summary (replay.FOLLOW_UP_GAP_S) and the clock measures processing
only. Per worker count it prints utterances/s and microdialogues/s (from the first send to the last
summary's broker timestamp), and per worker its partitions, the utterances and microdialogues it
processed, and the CPU seconds it used; tritonserver's CPU seconds (with its python-backend stubs) too.

  python benchmarks/horizontal.py --workers 1,2,3 --partitions 8 --copies 3 \
      --out benchmarks/results/horizontal.json
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from homework_monitor.deploy.local_stack import (  # noqa: E402
    Ports,
    group_assignment,
    start_broker,
    start_triton,
    start_workers,
    worker_ids,
)
from homework_monitor.deploy.services import ServiceStack  # noqa: E402
from homework_monitor.producers.replay import (  # noqa: E402
    demo_sessions_dir,
    make_producer,
    read_sessions,
    replay,
    schedule,
)
from homework_monitor.stream.config import Settings  # noqa: E402

CLK_TCK = os.sysconf("SC_CLK_TCK")


def group_cpu_seconds(pgid: int) -> float:
    """User + system CPU seconds of every live process in a process group (a service and its children)."""
    total = 0.0
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[2]) == pgid:  # fields after the command: state ppid pgrp ... utime(11) stime(12)
            total += (int(fields[11]) + int(fields[12])) / CLK_TCK
    return total


def scrape(port: int) -> dict[str, float]:
    """The worker's counters this benchmark reports (sums over labels)."""
    import urllib.request

    from prometheus_client.parser import text_string_to_metric_families
    wanted = {"hwm_utterances_total": {"result": "ok"}, "hwm_microdialogues_total": {},
              "hwm_session_summaries_total": {}, "hwm_classifier_batch_size_count": {},
              "hwm_classifier_batch_size_sum": {}}
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    out = dict.fromkeys(wanted, 0.0)
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            if s.name in wanted and all(s.labels.get(k) == v for k, v in wanted[s.name].items()):
                out[s.name] += s.value
    return out


def wait_for_summaries(settings: Settings, sessions: int, timeout_s: float) -> list[tuple[dict, int]]:
    """(summary, broker timestamp in ms) once every session has one."""
    from kafka import KafkaConsumer, TopicPartition
    t = settings.topics.session_summaries
    consumer = KafkaConsumer(consumer_timeout_ms=200, fetch_max_wait_ms=settings.consumer_fetch_max_wait_ms,
                             **settings.kafka_client_kwargs())
    parts = [TopicPartition(t, p) for p in range(settings.topic_partitions)]
    consumer.assign(parts)
    consumer.seek_to_beginning(*parts)
    got: dict[str, tuple[dict, int]] = {}
    deadline = time.monotonic() + timeout_s
    try:
        while len(got) < sessions and time.monotonic() < deadline:
            for msg in consumer:
                summary = json.loads(msg.value)
                got.setdefault(summary["session_id"], (summary, msg.timestamp))
    finally:
        consumer.close()
    if len(got) < sessions:
        raise TimeoutError(f"{len(got)} of {sessions} summaries after {timeout_s:.0f}s")
    return list(got.values())


def run(base: Settings, run_dir: Path, workers: int, msgs, sessions: int, triton_pid: int) -> dict:
    ports = Ports.free()
    settings = base.model_copy(update={"run_dir": run_dir, "app_id": f"hwm-horizontal-{ports.kafka}",
                                       "local_workers": workers})
    log_dir = run_dir / "logs"
    with ServiceStack() as stack:
        settings = start_broker(stack, settings, ports, log_dir)
        t_start = time.monotonic()
        metrics_ports = start_workers(stack, settings, log_dir)
        settled_s = time.monotonic() - t_start
        assignment = group_assignment(stack, worker_ids(workers))
        names = list(metrics_ports)
        cpu0 = {n: group_cpu_seconds(stack[n].pid) for n in names}
        triton_cpu0 = group_cpu_seconds(triton_pid)
        producer = make_producer(settings)
        t0 = time.time()
        replay(msgs, producer, settings.topics.utterances, progress=False)
        sent_s = time.time() - t0
        summaries = wait_for_summaries(settings, sessions, timeout_s=600)
        elapsed = max(ts for _, ts in summaries) / 1000 - t0
        cpu = {n: group_cpu_seconds(stack[n].pid) - cpu0[n] for n in names}
        triton_cpu = group_cpu_seconds(triton_pid) - triton_cpu0
        counters = {n: scrape(port) for n, port in metrics_ports.items()}
    utterances = sum(s["n_utterances"] for s, _ in summaries)
    microdialogues = sum(s["n_microdialogues"] for s, _ in summaries)
    per_worker = {n: {"partitions": assignment[n],
                      "utterances": counters[n]["hwm_utterances_total"],
                      "microdialogues": counters[n]["hwm_microdialogues_total"],
                      "summaries": counters[n]["hwm_session_summaries_total"],
                      "classifier_calls": counters[n]["hwm_classifier_batch_size_count"],
                      "mean_classifier_batch": round(counters[n]["hwm_classifier_batch_size_sum"]
                                                     / max(counters[n]["hwm_classifier_batch_size_count"], 1), 2),
                      "cpu_s": round(cpu[n], 1)} for n in names}
    return {"workers": workers, "sessions": sessions, "utterances": utterances, "microdialogues": microdialogues,
            "replay_send_s": round(sent_s, 2), "elapsed_s": round(elapsed, 2),
            "utterances_per_s": round(utterances / elapsed, 1),
            "microdialogues_per_s": round(microdialogues / elapsed, 1),
            "group_settled_s": round(settled_s, 1), "tritonserver_cpu_s": round(triton_cpu, 1),
            "per_worker": per_worker}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--workers", default="1,2,3", help="worker counts, one run each")
    p.add_argument("--partitions", type=int, default=8)
    p.add_argument("--copies", type=int, default=3, help="demo sessions (14) cloned this many times")
    p.add_argument("--triton-instances", type=int, default=1)
    p.add_argument("--out", type=Path, help="write the results JSON here too")
    a = p.parse_args()
    base_sessions = [{**s, "meta": {k: v for k, v in (s.get("meta") or {}).items() if k != "client_id"}}
                     for s in read_sessions([demo_sessions_dir()])]
    msgs = schedule(base_sessions, speed=1e9, stagger_s=0.0, copies=a.copies)
    sessions = len({m.key for m in msgs})
    run_dir = Path(tempfile.mkdtemp(prefix="hwm-horizontal-"))
    # No silence flushes (the replay is over in a second; the backlog must not look like silence).
    base = Settings(run_dir=run_dir, silence_flush_s=600.0, topic_partitions=a.partitions,
                    triton_instances=a.triton_instances)
    results = []
    with ServiceStack() as stack:
        base = start_triton(stack, base, Ports.free(), run_dir / "logs")
        for n in (int(x) for x in a.workers.split(",")):
            row = run(base, run_dir / f"workers-{n}", n, msgs, sessions, stack["tritonserver"].pid)
            results.append(row)
            print(json.dumps(row), flush=True)
    report = {"command": "python " + " ".join(sys.argv),
              "machine": f"{platform.node()}: {os.cpu_count()} cores {platform.machine()}, no GPU; "
                         f"load averages at the end {' '.join(f'{x:.2f}' for x in os.getloadavg())}",
              "partitions": a.partitions, "triton_instances": a.triton_instances,
              "sessions": sessions, "results": results}
    print(json.dumps(report, indent=2))
    if a.out:
        a.out.write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
